"""One `SelectionConfig`: its defaults are the ones every config, API and command uses; old configs
still load and resume; every field of the run, compare and edit-bench configs is read somewhere."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import typer

import kneuron
import kneuron.cli as cli
from kneuron.compare.engine import CompareConfig
from kneuron.compare.outputs import CompareDir
from kneuron.errors import KneuronError
from kneuron.experiments.edit_bench import BenchConfig
from kneuron.experiments.fact_probe import probe_fact
from kneuron.experiments.multilingual import find_multilingual_neurons
from kneuron.runs import DiscoveryConfig, RunDir
from kneuron.selection import SelectionConfig, adapt_p
from kneuron.selection.config import legacy_count_range

PACKAGE = Path(kneuron.__file__).parent
RESULTS = PACKAGE.parent / "results"
DEFAULT = SelectionConfig()
# A command option's name -> the SelectionConfig field whose default it must have (one fact: p is p_start).
OPTION_FIELDS = {"threshold": "threshold", "p": "p_start", "p_start": "p_start", "p_step": "p_step",
                 "max_tries": "max_tries", "count_range": "count_range", "min_prompts": "min_prompts"}


def test_selection_config_defaults_are_the_papers():
    assert dataclasses.astuple(DEFAULT) == (0.2, 0.7, 0.05, 6, (2.0, 5.0), 3)
    assert kneuron.SelectionConfig is SelectionConfig
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.threshold = 0.3  # type: ignore[misc]
    with pytest.raises(KneuronError, match="threshold must be in"):
        SelectionConfig(threshold=7.0)
    with pytest.raises(KneuronError, match="count_range"):
        SelectionConfig(count_range=(5.0, 2.0))
    assert SelectionConfig(count_range=[1, 3]).count_range == (1.0, 3.0)


def test_configs_use_the_selection_defaults():
    assert DiscoveryConfig().selection == DEFAULT
    assert CompareConfig().selection == DEFAULT
    bench = BenchConfig(model="m", cases="c")
    assert (bench.threshold, bench.p, bench.min_prompts) == (DEFAULT.threshold, DEFAULT.p_start, DEFAULT.min_prompts)
    assert DiscoveryConfig(p_start=0.5, count_range=(1.0, 2.0)).selection == SelectionConfig(
        p_start=0.5, count_range=(1.0, 2.0))


@pytest.mark.parametrize("function", [kneuron.KnowledgeModel.find_neurons, probe_fact, find_multilingual_neurons,
                                      adapt_p])
def test_api_defaults_are_the_selection_defaults(function):
    params = inspect.signature(function).parameters
    checked = 0
    for name, param in params.items():
        field = {"step": "p_step"}.get(name, OPTION_FIELDS.get(name))
        if field is not None:
            assert param.default == getattr(DEFAULT, field), (function.__qualname__, name)
            checked += 1
    assert checked >= 2


@pytest.fixture(scope="module")
def commands():
    cli._register()

    def walk(command, path=()):
        yield " ".join(path), command
        for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
            yield from walk(sub, (*path, name))

    return dict(walk(typer.main.get_command(cli.app)))


def test_cli_defaults_are_the_selection_defaults(commands):
    """Every command that selects neurons (it takes --threshold) has the SelectionConfig defaults.
    (Elsewhere --max-tries and --min-prompts count other things: `data counterfact`'s facts tried per
    relation, `experiment`'s edits tried, `data sample`'s prompts a fact must keep.)"""
    checked = {}
    for path, command in commands.items():
        if "threshold" not in {param.name for param in command.params}:
            continue
        for param in command.params:
            if param.name in OPTION_FIELDS:
                assert param.default == getattr(DEFAULT, OPTION_FIELDS[param.name]), (path, param.name)
                checked.setdefault(path, set()).add(param.name)
    assert checked["neurons"] == {"threshold", "p", "min_prompts"}
    # discover and compare take the selection settings from their configs' defaults (checked above).
    assert {"discover", "compare"} <= set(commands)


def _old_run_config(**changes) -> dict:
    """A run's config.json as kneuron wrote it before the renames: "method" (the integration rule) and
    "target" (the range of neurons per fact)."""
    d = {"model": "world", "data": "world", "relations": None, "limit_facts": None, "steps": 20,
         "method": "gauss_legendre", "precision": "fp32", "threshold": 0.2, "baseline_threshold": 0.5,
         "p_start": 0.7, "p_step": 0.05, "max_tries": 6, "target": [2.0, 4.0], "min_prompts": 3, "seed": 0,
         "tf32": False, "facts_fingerprint": "abc", "kneuron_version": "0.1.0"}
    return d | changes


def test_old_run_config_with_target_and_method_loads_and_resumes(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_old_run_config()), encoding="utf-8")
    config = RunDir(tmp_path).config()
    assert config.count_range == (2.0, 4.0)
    assert (config.rule if hasattr(config, "rule") else config.method) == "gauss_legendre"
    assert "target" not in config.to_json() and config.to_json()["count_range"] == [2.0, 4.0]
    same = DiscoveryConfig.from_json(config.to_json())
    RunDir(tmp_path).check_resumable(same)  # an interrupted old run resumes with the same settings
    with pytest.raises(KneuronError, match="count_range"):
        RunDir(tmp_path).check_resumable(DiscoveryConfig.from_json(config.to_json() | {"count_range": [2.0, 5.0]}))


def test_legacy_target_is_only_a_count_range():
    assert legacy_count_range({"target": [2, 5]}) == {"count_range": [2, 5]}
    assert legacy_count_range({"target": "product"}) == {"target": "product"}  # the attribution objective
    assert legacy_count_range({"target": [1, 2], "count_range": [2, 3]})["count_range"] == [2, 3]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*/config.json")), ids=lambda p: p.parent.name)
def test_committed_run_configs_load(path):
    d = json.loads(path.read_text(encoding="utf-8"))
    if "p_start" not in d:
        pytest.skip("not a discovery run's config")
    config = DiscoveryConfig.from_json(d)
    assert config.count_range == tuple(d.get("target", d.get("count_range")))
    assert config.selection == DEFAULT
    if (path.parent / "neurons.parquet").exists():
        from kneuron.experiments.rundata import RunData

        assert RunData.load(path.parent).config.count_range == config.count_range


@pytest.mark.parametrize("path", sorted(RESULTS.glob("compare/*/config.json")), ids=lambda p: p.parent.name)
def test_committed_compare_journals_resume(path, tmp_path):
    """A comparison journaled before count_range (and with the dead steps / noise_scale / units keys)
    is resumed by the same settings, not refused."""
    old = json.loads(path.read_text(encoding="utf-8"))
    assert "target" in old or "count_range" in old
    fields = {f.name for f in dataclasses.fields(CompareConfig)}
    config = CompareConfig(**{k: v for k, v in legacy_count_range(old).items() if k in fields})
    config.count_range = tuple(config.count_range)
    # Settings added since (e.g. the held-out split) take the values the new config has: a journal
    # without them is refused for that, on purpose, and this test is about the renamed and removed keys.
    old = {k: v for k, v in config.to_json().items() if k not in old and k != "count_range"} | old
    (tmp_path / "config.json").write_text(json.dumps(old), encoding="utf-8")
    CompareDir(tmp_path).start(config.to_json())
    assert "count_range" in CompareDir(tmp_path).config()
    with pytest.raises(KneuronError, match="min_prompts"):
        CompareDir(tmp_path).start(config.to_json() | {"min_prompts": 1})


@pytest.mark.parametrize("path", sorted(RESULTS.glob("edit/*/config.json")), ids=lambda p: p.parent.name)
def test_committed_edit_bench_configs_resume(path, tmp_path):
    """run_bench resumes when asdict(config) equals the stored config.json, the settings added since
    at the value the run used (`LEGACY`, else the default); any other value is refused."""
    from kneuron.experiments.edit_bench import LEGACY, run_bench, stored_settings

    old = json.loads(path.read_text(encoding="utf-8"))
    if "combined_from" in old:  # scripts/combine_edit_bench.py's folder: every run it names is committed beside it
        assert old["combined_from"] and all((path.parent.parent / run / "cases.csv").exists()
                                            for run in old["combined_from"])
        return
    settings = stored_settings(old)
    assert dataclasses.asdict(BenchConfig(**settings)) == settings
    added = set(settings) - set(old)
    (tmp_path / "config.json").write_text(json.dumps(old), encoding="utf-8")
    assert run_bench(None, [], BenchConfig(**settings), tmp_path).empty  # resumes: nothing refused, nothing to do
    for name in added & set(LEGACY):  # the value it ran under, not today's default
        assert settings[name] == LEGACY[name]
        with pytest.raises(KneuronError, match=name):
            other = 1.0 if LEGACY[name] is None else LEGACY[name] + 1
            run_bench(None, [], BenchConfig(**{**settings, name: other}), tmp_path)
    if "exclude_tuned" in added:
        with pytest.raises(KneuronError, match="exclude_tuned"):
            run_bench(None, [], BenchConfig(**{**settings, "exclude_tuned": "tuned.jsonl"}), tmp_path)


def test_old_compare_journal_with_removed_keys_resumes(tmp_path):
    config = CompareConfig()
    old = config.to_json()
    old["target"] = old.pop("count_range")
    old |= {"steps": 20, "noise_scale": 3.0, "units": "percent change of the gold probability"}
    (tmp_path / "config.json").write_text(json.dumps(old), encoding="utf-8")
    CompareDir(tmp_path).start(config.to_json())
    for dead in ("steps", "noise_scale", "units"):
        assert dead not in CompareConfig.__dataclass_fields__


# -- every field is read ----------------------------------------------------------------------------

# Fields that record what the input was and act through the resume check alone (a journal made from
# other cases or another run is refused): the command applies them before the config exists.
PROVENANCE = {
    CompareConfig: {"run",  # --run's directory; its IG is passed to compare() as `run`
                    "facts_fingerprint",  # set by compare(): a journal of other facts is refused
                    "kneuron_version"},  # provenance; free on resume
    BenchConfig: {"cases", "split", "limit", "sample", "exclude_tuned"},  # which cases; the command selects them
}
# Expressions that hold one of these configs (an object, or its JSON as a dict) where they are read.
HOLDERS = {"config", "cfg", "self.config", "run.config", "run_config", "data.config"}


def _text(node) -> str:
    return ast.unparse(node)


def _reads(tree: ast.AST, class_name: str) -> set[str]:
    """Names read from config objects in one module: `x.field` (not as an assignment target),
    `getattr(x, "field")`, `x["field"]` and `x.get("field")`, where x is a holder, a variable annotated
    with the class, or a variable assigned from a holder or the class (`c = self.config`)."""
    holders = set(HOLDERS)
    changed = True
    while changed:  # aliases of aliases
        changed = False
        for node in ast.walk(tree):
            pairs = []
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs += list(zip(target.elts, node.value.elts))
                    else:
                        pairs.append((target, node.value))
            elif isinstance(node, ast.arg) and node.annotation is not None and class_name in _text(node.annotation):
                if node.arg not in holders:
                    holders.add(node.arg)
                    changed = True
                continue
            for target, value in pairs:
                value_text = _text(value.func if isinstance(value, ast.Call) else value)
                if isinstance(target, ast.Name) and target.id not in holders and (
                        value_text in holders or value_text.endswith(class_name)):
                    holders.add(target.id)
                    changed = True
    found = set()
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}  # config.get(...), methods
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _text(node.value) in holders \
                and id(node) not in called:
            found.add(node.attr)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            key = node.args[1] if _text(func) == "getattr" and len(node.args) > 1 else (
                node.args[0] if isinstance(func, ast.Attribute) and func.attr == "get"
                and _text(func.value).removesuffix("()") in holders else None)
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.add(key.value)
        elif isinstance(node, ast.Subscript) and _text(node.value).removesuffix("()") in holders \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            found.add(node.slice.value)
    return found


@pytest.fixture(scope="module")
def package_trees():
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in PACKAGE.rglob("*.py")}


# Where each config travels: a module that names one of these can hold it (a run's config comes with
# its RunDir / RunData, and goes to the backends with the facts to attribute).
MARKERS = {
    DiscoveryConfig: ("DiscoveryConfig", "RunDir", "RunData", "run.config", "attribute_facts"),
    CompareConfig: ("CompareConfig", "CompareDir"),
    BenchConfig: ("BenchConfig",),
}


@pytest.mark.parametrize("cls", [DiscoveryConfig, CompareConfig, BenchConfig], ids=lambda c: c.__name__)
def test_every_config_field_is_read(cls, package_trees):
    read = set()
    for path, tree in package_trees.items():
        if any(marker in path.read_text(encoding="utf-8") for marker in MARKERS[cls]):
            read |= _reads(tree, cls.__name__)
    fields = {f.name for f in dataclasses.fields(cls)}
    unread = fields - read - PROVENANCE.get(cls, set())
    assert not unread, f"{cls.__name__} fields never read (honour them or remove them): {sorted(unread)}"
    assert not PROVENANCE.get(cls, set()) - fields  # the allow-list names only real fields


def test_the_field_scan_finds_a_dead_field(package_trees):
    """The scan is not vacuous: a field nothing reads is reported."""
    tree = ast.parse("def f(config: BenchConfig):\n    return config.p, getattr(config, 'steps'), "
                     "config.get('seed')\n\nconfig.margin = 3\n")
    assert _reads(tree, "BenchConfig") == {"p", "steps", "seed"}
