"""A finished discovery run, ready for the experiments: neuron sets, the facts, BINGREL.

The experiments never recompute attributions: they read the run directory written by
`kneuron.runs.discover` through its one owner, `kneuron.runs.rundir.RunDir`, and reload the
facts named in its config, checking that they are the facts the run saw.

The *fact universe* of a run is its facts minus those discovery skipped (an answer that is not a
single token for the model).  In the paper's setting nothing is skipped; elsewhere, skipped facts
can be neither scored nor edited, so every experiment leaves them out (they also do not count in
"neurons per fact", as in the run's relations.json).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kneuron.data.facts import Fact, FactSet
from kneuron.errors import DataError, KneuronError
from kneuron.neurons import Neuron
from kneuron.runs.config import DiscoveryConfig, fingerprint, select_facts
from kneuron.runs.rundir import RunDir


def _world_dir_of(data: str) -> Path | None:
    """The fact-world directory `data` names ('world', 'world-causal', a world dir, or a file inside one)."""
    try:
        from kneuron.world import BUILTIN_MODELS, builtin_model_dir, is_world_dir
    except ImportError:  # pragma: no cover - the world package is optional
        return None
    if data in BUILTIN_MODELS:  # "world", "world-causal": the same facts and sentences
        return builtin_model_dir(data, log=None)
    path = Path(data).expanduser()
    for cand in (path, path.parent):
        if cand.is_dir() and is_world_dir(cand):
            return cand
    return None


def resolve_facts(data: str) -> FactSet:
    """Facts named by a data spec: anything `kneuron.data.load_facts` takes (a fact-world directory too)."""
    from kneuron.data import load_facts

    return load_facts(str(data))


def resolve_bingrel(data: str, explicit: str | Path | None = None) -> Path | None:
    """Where the BINGREL sentences for `data` are: explicit, the world's, or PARAREL's; None if none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise DataError(f"BINGREL path not found: {path}")
        return path
    world = _world_dir_of(str(data))
    if world is not None:
        return world / "bingrel"
    text = str(data)
    path = Path(text[len("pararel:"):] if text.startswith("pararel:") else text).expanduser()
    candidates = []
    if text != "pararel":
        candidates += [path.parent / "bingrel", path / "bingrel"]
    if text == "pararel" or text.startswith("pararel:") or path.is_dir():
        from kneuron.data.bingrel import _default_dir

        try:
            candidates.append(_default_dir())
        except DataError:
            pass
    for cand in candidates:
        if cand.is_dir() and any(BAG_FILE.match(p.name) for p in cand.iterdir()):
            return cand
    return None


BAG_FILE = re.compile(r"^final_distant_allbags_(.+)_new\.json$")


def _natural(rel: str):
    m = re.match(r"^(\D*)(\d+)$", rel)
    return (0, m.group(1), int(m.group(2)), rel) if m else (1, rel, 0, rel)


def load_bags(path) -> dict:
    """relation -> BINGREL bags from a folder (or one file) of `final_distant_allbags_<REL>_new.json`.

    Unlike `kneuron.data.load_bingrel` any relation id is accepted (the fact world uses W1, W2, ...);
    relations come in natural order (P19 before P101).
    """
    from kneuron.data.bingrel import read_bingrel_file

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.iterdir()) if path.is_dir() else []
    found = {m.group(1): p for p in files if (m := BAG_FILE.match(p.name))}
    if not found:
        raise DataError(f"{path}: no final_distant_allbags_<REL>_new.json files")
    return {rel: read_bingrel_file(found[rel]) for rel in sorted(found, key=_natural)}


def _used(fact: Fact, record: dict) -> Fact:
    """The fact with only the prompts discovery used (a causal LM skips those not ending at the blank)."""
    if "used_prompts" not in record:
        return fact
    return Fact(fact.relation, fact.subject, fact.object, [fact.prompts[k] for k in record["used_prompts"]])


@dataclass
class RunData:
    """A discovery run plus its facts; `table["fact"]` indexes `facts.facts`."""

    run_dir: Path
    config: DiscoveryConfig
    table: pd.DataFrame
    summary: dict
    facts: FactSet
    universe: dict[str, list[int]]  # relation -> indices of the facts that were not skipped
    # A run made with `--holdout K`: each fact with only its held-out prompts (discovery never saw
    # them; none for a fact too small to split), aligned with `facts`; None for a run without.
    heldout: FactSet | None = None
    _sets: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, run_dir, facts: FactSet | None = None) -> RunData:
        run_dir = Path(run_dir)
        config, table, summary = RunDir(run_dir).load()
        if facts is None:
            facts = resolve_facts(config.data)
        facts = select_facts(facts, config.relations, config.limit_facts)
        if config.facts_fingerprint and fingerprint(facts) != config.facts_fingerprint:
            raise KneuronError(f"the facts of {config.data!r} are not those the run in {run_dir} was made "
                               "with (fingerprint differs); rerun discovery")
        records = RunDir(run_dir).records()
        heldout = None
        if config.holdout:
            held = RunDir(run_dir).heldout(records)
            heldout = FactSet([Fact(f.relation, f.subject, f.object, [f.prompts[k] for k in held.get(i, ())])
                               for i, f in enumerate(facts.facts)], facts.relations, facts.source)
        facts = FactSet([_used(f, records.get(i, {})) for i, f in enumerate(facts.facts)], facts.relations, facts.source)
        universe: dict[str, list[int]] = {}
        for i, f in enumerate(facts.facts):
            if "skipped" in records.get(i, {}):
                continue
            universe.setdefault(f.relation, []).append(i)
        return cls(run_dir, config, table, summary, facts, universe, heldout)

    @property
    def relations(self) -> list[str]:
        return list(self.universe)

    def label(self, relation: str) -> str:
        rel = self.facts.relations.get(relation)
        return rel.label if rel is not None and rel.label else ""

    def labels(self) -> dict[str, str]:
        return {r: self.label(r) for r in self.relations}

    @property
    def fact_indices(self) -> list[int]:
        return [i for idx in self.universe.values() for i in idx]

    def sets(self, method: str) -> dict[int, list[Neuron]]:
        """{fact: neurons} for every fact of the universe (empty lists included), table order."""
        if method not in self._sets:
            sub = self.table[self.table["method"] == method]
            out: dict[int, list[Neuron]] = {i: [] for i in self.fact_indices}
            for fact, layer, index in zip(sub["fact"], sub["layer"], sub["index"]):
                if int(fact) in out:
                    out[int(fact)].append(Neuron(int(layer), int(index)))
            self._sets[method] = out
        return self._sets[method]

    def relation_sets(self, method: str) -> dict[str, list[list[Neuron]]]:
        """{relation: [neurons of each of its facts, in fact order]}."""
        sets = self.sets(method)
        return {rel: [sets[i] for i in idx] for rel, idx in self.universe.items()}

    def find_fact(self, subject: str, relation: str | None = None) -> int:
        """Index of the fact about `subject` (in `relation` when given); one line if none or several match."""
        if relation is not None and relation not in self.universe:
            raise KneuronError(f"relation {relation!r} is not in the run {self.run_dir} "
                               f"(it has {', '.join(self.relations) or 'none'})")
        hits = [i for rel, idx in self.universe.items() if relation in (None, rel) for i in idx
                if self.facts.facts[i].subject == subject]
        if not hits:
            where = f"relation {relation}" if relation else f"the run {self.run_dir}"
            raise KneuronError(f"no fact about {subject!r} in {where}")
        if len(hits) > 1:
            found = ", ".join(f"{self.facts.facts[i].relation} ({self.facts.facts[i].object})" for i in hits)
            raise KneuronError(f"{subject!r} has {len(hits)} facts: {found}; pass --relation")
        return hits[0]

    def describe(self) -> dict:
        return {"run_dir": str(self.run_dir), "model": self.config.model, "data": self.config.data,
                "relations": len(self.universe), "facts": len(self.fact_indices),
                "prompts": sum(len(self.facts.facts[i].prompts) for i in self.fact_indices),
                "skipped_facts": len(self.facts) - len(self.fact_indices)}


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
