"""The CLI's shared options have one declaration and one help text.

--model, --device, --steps and --seed are declared in kneuron/cli/options.py only; every command that
takes one shows the same help (--model adds RUN_MODEL_NOTE where it defaults to a discovery run's model).
More generally, a flag that two or more commands take means one thing: one help text (up to the notes a
declaration appends, " Default: ..." and " Range: ..."), declared once in kneuron/cli -- unless it is
listed in INTENTIONAL, the flags that mean different things in different commands.  `--threads` belongs
to the root command alone.  Comma-separated list options are all read by `split_list`.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
import typer

import kneuron.cli as cli
from kneuron.cli import main
from kneuron.cli.options import DEVICE_HELP, MODEL_HELP, RUN_MODEL_NOTE, SEED_HELP, STEPS_HELP, split_list

CLI_DIR = Path(cli.__file__).parent
SHARED = {"model": ["--model", "-m"], "device": ["--device"], "seed": ["--seed"], "steps": ["--steps"]}

# Flags that mean different things in different commands, so each command declares its own (with a help
# saying what it means there).  Every other flag taken by two or more commands has one help text.
INTENTIONAL = {
    "--out": "a results folder (compare, demo, discover, ...), a file (data sample/counterfact .jsonl, edit "
             "update/erase .kedit, explore's page) or the edited model's folder (edit apply)",
    "--data": "multilingual takes facts in several languages only, not every fact set",
    "--relations": "data download: the BINGREL relations whose files to fetch, not the facts to keep",
    "--run": "compare reuses a run's IG scores with its own --model; edit update/erase take the model from the run",
    "--min-prompts": "data sample: drop facts with fewer usable prompts; neurons/multilingual: refinement's minimum",
    "--max-tries": "data counterfact: facts checked with the model; experiment/reproduce: draws of the updating experiment",
    "--top": "attribute: neurons listed; interactions/multilingual: neurons whose interactions are studied (>= 2)",
    "--tune-share": "data counterfact: share of the cases labelled tune; compare: share of facts tuning rule effect",
    "--methods": "compare: localization methods; edit bench: editors",
    "--relation": "edit erase: the relation erased; edit update: which relation --subject's fact is of",
    "--neurons": "edit update: the neurons to edit; interactions: the neurons to study",
    "--prompt": "edit update: the fact's prompts (neurons found, edit fitted); edit apply: prompts only checked",
    "--answer": "predict: one answer (-a); edit apply: repeatable, default the edit's old and new answers",
    "--force": "edit apply: apply despite differing slots; world build: rebuild",
    "--figure": "a different figure: attribute's layer scores, interactions' pair heatmap",
}
CLI_FILES = sorted(CLI_DIR.glob("*.py"))


def _walk(command, path=()):
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _walk(sub, (*path, name))


@pytest.fixture(scope="module")
def commands():
    cli._register()
    return list(_walk(typer.main.get_command(cli.app)))


def _shared_params(commands):
    """{option name: {help text: [commands]}} over every command (and group) of the app."""
    found = defaultdict(lambda: defaultdict(list))
    for path, command in commands:
        for param in command.params:
            if param.name in SHARED:
                found[param.name][param.help].append(" ".join(path) or "kneuron")
    return found


def _flags(commands):
    """{flag: {command: help}} over every option of every command (and group); a flag is an option's
    longest name (--out for --out/-o, -p for -p, --progress for --progress/--no-progress)."""
    found = defaultdict(dict)
    for path, command in commands:
        for param in command.params:
            if param.param_type_name == "option":
                found[max(param.opts, key=len)][" ".join(path) or "kneuron"] = param.help
    return found


def _description(help_text: str | None) -> str | None:
    """A help without the notes its declaration appends: " Default: ..." (what a None default stands
    for, e.g. RUN_MODEL_NOTE) and " Range: ..." (`ranged`: compare --other-prompts takes 0, demo's not)."""
    return None if help_text is None else re.sub(r" (Default|Range): .*$", "", help_text)


def _declarations(flag: str) -> dict[str, int]:
    """{file: how many times} kneuron/cli declares `flag` (typer.Option(..., "FLAG"...) or ranged(..., "FLAG"...))."""
    # The flag among the leading arguments (before any keyword, such as help=); "--x/--no-x" for --x.
    pattern = re.compile(r'(?:Option|ranged)\((?:[^()=]|\([^()]*\))*?"' + re.escape(flag) + r'(?:/--[a-z0-9-]+)?"')
    counts = {}
    for path in CLI_FILES:
        text = path.read_text(encoding="utf-8")
        text = text.replace(ast.get_docstring(ast.parse(text), clean=False) or "", "")  # examples are no declarations
        counts[path.name] = len(pattern.findall(text))
    return {name: n for name, n in counts.items() if n}


def test_a_shared_flag_has_one_help_text(commands):
    for flag, helps in _flags(commands).items():
        if len(helps) < 2 or flag in INTENTIONAL:
            continue
        texts = {_description(h) for h in helps.values()}
        assert None not in texts, f"{flag} has no help in {sorted(c for c, h in helps.items() if h is None)}"
        assert len(texts) == 1, f"{flag} has several help texts: {helps}"


def test_a_shared_flag_is_declared_once(commands):
    shared = [flag for flag, helps in _flags(commands).items() if len(helps) >= 2 and flag not in INTENTIONAL]
    assert {"--limit-facts", "--threshold", "--progress", "--holdout", "-p", "--share", "--seed"} <= set(shared)
    for flag in shared:
        assert sum(_declarations(flag).values()) == 1, f"{flag} is declared {_declarations(flag)}"
    # The pattern finds declarations (one with a call before the flag too), not a flag in a message.
    assert _declarations("--limit-facts") == {"options.py": 1}
    assert _declarations("--out")["demo.py"] == 1 and sum(_declarations("--relations").values()) == 2


def test_intentional_differences_are_real(commands):
    flags = _flags(commands)
    for flag, reason in INTENTIONAL.items():
        helps = flags.get(flag, {})
        assert len(helps) >= 2, f"{flag} is no longer taken by several commands; drop it from INTENTIONAL"
        assert len({_description(h) for h in helps.values()}) >= 2, \
            f"{flag} means one thing everywhere now ({reason!r} is stale); drop it from INTENTIONAL"


def test_walk_reaches_nested_commands(commands):
    names = {" ".join(path) for path, _ in commands}
    assert {"discover", "neurons", "edit update", "edit bench", "data counterfact", "world build"} <= names


def test_one_help_text_per_shared_option(commands):
    found = _shared_params(commands)
    assert set(found) == set(SHARED)
    expected = {"device": {DEVICE_HELP}, "steps": {f"{STEPS_HELP} Range: >= 1."},
                "seed": {f"{SEED_HELP} Range: [0, {2**32 - 1}]."}}
    for name, helps in expected.items():
        assert set(found[name]) == helps, f"--{name} has several help texts: {dict(found[name])}"
    # --model: one text, plus the documented note where the default is the run's model.
    assert set(found["model"]) <= {MODEL_HELP, MODEL_HELP + RUN_MODEL_NOTE}, dict(found["model"])
    assert sorted(found["model"][MODEL_HELP + RUN_MODEL_NOTE]) == ["edit erase", "edit update", "explore"]
    assert sum(len(v) for v in found["model"].values()) >= 15  # every command that loads a model


def test_shared_options_keep_their_flags(commands):
    for path, command in commands:
        for param in command.params:
            if param.name in SHARED:
                assert sorted(param.opts) == sorted(SHARED[param.name]), (" ".join(path), param.name, param.opts)


def test_threads_only_on_the_root(commands):
    with_threads = [" ".join(path) or "kneuron" for path, command in commands
                    if any(p.name == "threads" for p in command.params)]
    assert with_threads == ["kneuron"]


def test_model_help_names_every_builtin_world():
    from kneuron.world import BUILTIN_MODELS

    for name in BUILTIN_MODELS:
        assert f"{name}," in MODEL_HELP or f"{name})" in MODEL_HELP, name


@pytest.mark.parametrize("flag, owner", [('"--model"', "options.py"), ('"--device"', "options.py"),
                                         ('"--steps"', "options.py"), ('"--seed"', "options.py"),
                                         ('"--threads"', "__init__.py")])
def test_shared_option_declared_in_one_file(flag, owner):
    files = sorted(p.name for p in CLI_DIR.glob("*.py") if flag in p.read_text(encoding="utf-8"))
    assert files == [owner], f"{flag} is declared in {files}; use kneuron.cli.options"


def test_no_hand_written_comma_split():
    files = sorted(p.name for p in CLI_DIR.glob("*.py")
                   if 'split(",")' in p.read_text(encoding="utf-8") and p.name != "options.py")
    assert files == [], f"use kneuron.cli.options.split_list in {files}"


@pytest.mark.parametrize("text, expected", [
    (" a, ,b ,", ["a", "b"]),
    ("P19", ["P19"]),
    ("P19,P36", ["P19", "P36"]),
    (" x y , z", ["x y", "z"]),
    ("", None),  # nothing listed: None, the same as the option not given
    (" , ,", None),
    (None, None),
])
def test_split_list(text, expected):
    assert split_list(text) == expected


def test_seed_range_checked_everywhere(tmp_path, capsys):
    # compare --seed used to take any integer; the shared option refuses a negative one before any work.
    assert main(["compare", "--out", str(tmp_path / "c"), "--seed", "-1"]) != 0
    err = capsys.readouterr().err
    assert "--seed" in err and "-1" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv", [["--help"], ["discover", "--help"], ["edit", "update", "--help"]])
def test_help_renders(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Usage" in out
    if argv != ["--help"]:
        assert "--model" in out and "--device" in out and "Hub name" in out
