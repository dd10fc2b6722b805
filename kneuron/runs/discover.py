"""Dataset-scale discovery of knowledge neurons, resumable at fact granularity.

A run directory holds:
- `config.json`: everything that determines the result (model, data, relations, attribution and
  selection settings, seed, kneuron version).  Restarting with a different configuration is refused.
- `attributions.jsonl`: one record per finished fact (per-prompt gold probability, coarse
  knowledge-neuron and baseline sets with their scores), fsynced as it goes (see `FactLog`).
- `neurons.parquet`: the tidy result, one row per (fact, neuron, method), method "kn" or "baseline".
- `relations.json`: per relation and method, the adapted sharing threshold p and neurons per fact.
Refinement runs per relation once every fact is attributed; it is cheap and fully determined by
the records, so a resumed run ends with the same table as an uninterrupted one.

Where the records are computed is the backend's business (`kneuron.runs.backends`): in this
process (`"local"`, the default) or on Ray workers (`"ray"`).  Either way this process is the only
writer of the run directory, so the directory, resumption and final table do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import kneuron
from kneuron.data.facts import FactSet
from kneuron.errors import KneuronError
from kneuron.runs.store import FactLog, write_json_atomic
from kneuron.selection import adapt_p, baseline_neurons, coarse_neurons

if TYPE_CHECKING:  # pandas is imported when a table is built, not with kneuron.runs
    import pandas as pd

TABLE_COLUMNS = ["relation", "fact", "subject", "object", "layer", "index", "method"]


@dataclass
class DiscoveryConfig:
    model: str = "world"
    data: str = "world"
    relations: list[str] | None = None
    limit_facts: int | None = None  # first N facts per relation (quick looks); None = all
    steps: int = 20
    method: str = "riemann_left"
    precision: str = "fp32"
    threshold: float = 0.2
    baseline_threshold: float = 0.5
    p_start: float = 0.7
    p_step: float = 0.05
    max_tries: int = 6
    target: tuple[float, float] = (2.0, 5.0)
    min_prompts: int = 3
    seed: int = 0
    tf32: bool = False  # TF32 matmuls on CUDA (Ampere+); no effect on CPU
    facts_fingerprint: str = ""
    kneuron_version: str = field(default=kneuron.__version__)

    def to_json(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d

    @classmethod
    def from_json(cls, d: dict) -> DiscoveryConfig:
        d = dict(d)
        d["target"] = tuple(d.get("target", (2.0, 5.0)))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# Keys that may differ on resume without changing the result.
_RESUME_FREE = {"kneuron_version"}


def fingerprint(facts: FactSet) -> str:
    h = hashlib.sha256()
    for f in facts.facts:
        h.update(json.dumps([f.relation, f.subject, f.object, f.prompts]).encode())
    return h.hexdigest()[:16]


def select_facts(facts: FactSet, relations, limit: int | None) -> FactSet:
    facts = facts.subset(relations)
    if limit is None:
        return facts
    kept = [f for group in facts.by_relation().values() for f in group[:limit]]
    return FactSet(kept, facts.relations, facts.source)


def _check_config(run_dir: Path, config: DiscoveryConfig) -> None:
    path = run_dir / "config.json"
    if not path.exists():
        return
    # Missing keys (runs written by an older kneuron) take their defaults.
    old = DiscoveryConfig.from_json(json.loads(path.read_text())).to_json()
    new = config.to_json()
    for key in sorted(set(old) | set(new)):
        if key in _RESUME_FREE:
            continue
        if old.get(key) != new.get(key):
            raise KneuronError(
                f"{run_dir} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}; "
                "use another --out or the same settings to resume")


def _internal_batch_size(kn, prompts: list[str], config) -> int | None:
    """On a GPU: as many path-point rows as fit in free memory for this batch's longest prompt."""
    if kn.device.type not in ("cuda", "mps") or not prompts:
        return None  # CPU: the engine's default (one prompt's staircase)
    from kneuron.runs.memory import choose_internal_batch_size

    longest = max(len(kn.encode(p).ids) for p in prompts)
    return choose_internal_batch_size(kn, longest, config.steps, precision=config.precision)


def _attribute_facts(kn, facts, indices, config):
    """Records for the given fact indices (one attribution call, prompts batched by length).

    `facts.facts[i]` must give fact i (a FactSet, or any object whose `facts` maps indices to facts).
    """
    prompts, answers, owner = [], [], []
    records = {}
    used: dict[int, list[int]] = {}
    for i in indices:
        f = facts.facts[i]
        # A causal LM can only continue prompts that end at the blank; the others are skipped.
        used[i] = [k for k, p in enumerate(f.prompts) if kn.is_masked or kn.ends_at_blank(p)]
        try:
            if not used[i]:
                raise KneuronError("no prompt ends at the blank, as a causal LM needs")
            for k in used[i]:
                kn.encode(f.prompts[k], f.object)
        except KneuronError as exc:
            records[i] = {"fact": i, "relation": f.relation, "subject": f.subject, "object": f.object,
                          "skipped": str(exc), "skipped_prompts": len(f.prompts) - len(used[i])}
            continue
        for k in used[i]:
            prompts.append(f.prompts[k])
            answers.append(f.object)
            owner.append(i)
    results = kn.attribute(prompts, answers, steps=config.steps, method=config.method, precision=config.precision,
                           internal_batch_size=_internal_batch_size(kn, prompts, config)) if prompts else []
    for i in indices:
        if i in records:
            continue
        f = facts.facts[i]
        mine = [r for r, o in zip(results, owner) if o == i]
        rec = {"fact": i, "relation": f.relation, "subject": f.subject, "object": f.object,
               "prob": [round(r.probability, 8) for r in mine], "kn": [], "base": []}
        if len(used[i]) < len(f.prompts):
            rec["used_prompts"] = used[i]
            rec["skipped_prompts"] = len(f.prompts) - len(used[i])
        for r in mine:
            kn_set = coarse_neurons(r.scores, config.threshold)
            base_set = baseline_neurons(r.activations, config.baseline_threshold)
            rec["kn"].append([[n.layer, n.index, float(r.scores[n.layer, n.index])] for n in kn_set])
            rec["base"].append([[n.layer, n.index, float(r.activations[n.layer, n.index])] for n in base_set])
        records[i] = rec
    return [records[i] for i in indices]


def refine_run(records: dict[int, dict], facts: FactSet, config: DiscoveryConfig):
    """(neurons table, per-relation summary) from the fact records."""
    import pandas as pd

    rows = []
    summary = {}
    by_rel: dict[str, list[int]] = {}
    for i, f in enumerate(facts.facts):
        by_rel.setdefault(f.relation, []).append(i)
    for rel, idx in by_rel.items():
        done = [i for i in idx if "skipped" not in records[i]]
        summary[rel] = {"facts": len(idx), "skipped": len(idx) - len(done),
                        "skipped_prompts": sum(records[i].get("skipped_prompts", 0) for i in idx)}
        for method, key in (("kn", "kn"), ("baseline", "base")):
            if not done:  # every fact skipped: there is no p to choose
                summary[rel][method] = {"p": None, "tries": 0, "neurons_per_fact": None, "converged": False,
                                        "history": []}
                continue
            coarse = [[[tuple(t[:2]) for t in prompt] for prompt in records[i][key]] for i in done]
            adapt = adapt_p(coarse, config.p_start, config.p_step, config.max_tries, config.target,
                            config.min_prompts)
            summary[rel][method] = {"p": adapt.p, "tries": adapt.tries, "neurons_per_fact": adapt.average,
                                    "converged": adapt.converged, "history": adapt.history}
            for i, neurons in zip(done, adapt.neurons):
                f = facts.facts[i]
                rows += [(rel, i, f.subject, f.object, n.layer, n.index, method) for n in neurons]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.astype({"fact": "int64", "layer": "int64", "index": "int64"})
    return table, summary


@dataclass
class DiscoveryResult:
    run_dir: Path
    config: DiscoveryConfig
    neurons: pd.DataFrame
    relations: dict
    resumed_facts: int = 0
    seconds: float = 0.0


def discover(kn, facts: FactSet, run_dir, config: DiscoveryConfig, progress: bool = True,
             facts_per_batch: int = 8, backend=None) -> DiscoveryResult:
    """Attribute every prompt, refine per relation, write the run directory (resuming if present).

    `backend`: None or "local" (attribution in this process with `kn`; `kn=None` loads
    `config.model`), "ray" (a `RayBackend` with default settings), or a backend object from
    `kneuron.runs.backends` (e.g. `RayBackend(workers=4)`); the Ray backend needs no `kn` here.
    """
    from kneuron.runs.backends import make_backend

    if backend is None or isinstance(backend, str):
        backend = make_backend(backend or "local", kn=kn)
    run_dir = Path(run_dir)
    facts = select_facts(facts, config.relations, config.limit_facts)
    config.facts_fingerprint = fingerprint(facts)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    write_json_atomic(run_dir / "config.json", config.to_json())
    log = FactLog(run_dir / "attributions.jsonl")
    resumed = sum(1 for i in range(len(facts)) if i in log)
    todo = [i for i in range(len(facts)) if i not in log]
    start = time.perf_counter()
    bar = _progress(progress, total=facts.num_prompts, done=sum(len(facts.facts[i].prompts) for i in log.records
                                                                  if i < len(facts)))
    try:
        with bar as (advance, _):
            backend.run(facts, todo, config, emit=log.append, advance=advance, facts_per_batch=facts_per_batch)
    finally:
        log.close()
    missing = [i for i in range(len(facts)) if i not in log]
    if missing:  # a backend bug, never expected: refuse to write a partial table
        raise KneuronError(f"{len(missing)} facts have no record (first: {missing[0]}); rerun to resume")
    records = {i: log.records[i] for i in range(len(facts))}
    table, summary = refine_run(records, facts, config)
    tmp = run_dir / "neurons.parquet.tmp"
    table.to_parquet(tmp, index=False)
    tmp.replace(run_dir / "neurons.parquet")
    write_json_atomic(run_dir / "relations.json", summary)
    return DiscoveryResult(run_dir, config, table, summary, resumed, time.perf_counter() - start)


class _progress:
    """A rich progress bar over prompts with ETA (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done

    def __enter__(self):
        if not self.enabled:
            return (lambda n: None), None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(TextColumn("attributing prompts"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self._p.__enter__()
        task = self._p.add_task("attr", total=self.total, completed=self.done)
        return (lambda n: self._p.advance(task, n)), self._p

    def __exit__(self, *exc):
        if self.enabled:
            self._p.__exit__(*exc)
        return False


def load_run(run_dir) -> tuple[DiscoveryConfig, pd.DataFrame, dict]:
    """(config, neurons table, per-relation summary) of a finished run."""
    run_dir = Path(run_dir)
    path = run_dir / "neurons.parquet"
    if not path.exists():
        raise KneuronError(f"{run_dir} is not a finished discovery run (no neurons.parquet)")
    import pandas as pd

    config = DiscoveryConfig.from_json(json.loads((run_dir / "config.json").read_text()))
    return config, pd.read_parquet(path), json.loads((run_dir / "relations.json").read_text())


def load_records(run_dir) -> dict[int, dict]:
    return FactLog(Path(run_dir) / "attributions.jsonl").records


def neuron_sets(table: pd.DataFrame, method: str) -> dict[int, list[tuple[int, int]]]:
    """{fact index: [(layer, index), ...]} for one method, in table order."""
    sets: dict[int, list[tuple[int, int]]] = {}
    sub = table[table["method"] == method]
    for fact, layer, index in zip(sub["fact"], sub["layer"], sub["index"]):
        sets.setdefault(int(fact), []).append((int(layer), int(index)))
    return sets
