"""Dataset-scale discovery of knowledge neurons, resumable at fact granularity.

A run directory holds:
- `config.json`: everything that determines the result (model, data, relations, attribution and
  selection settings, seed, kneuron version).  Restarting with a different configuration is refused.
- `attributions.jsonl`: one record per finished fact (per-prompt gold probability, coarse
  knowledge-neuron and baseline sets with their scores), fsynced as it goes (see `FactLog`).
- `neurons.parquet`: the tidy result, one row per (fact, neuron, method), method "kn" or "baseline".
- `relations.json`: per relation and method, the adapted sharing threshold p and neurons per fact.
- `specific.json` (rule "effect" only): per judged fact, its measuring and judging halves (below).
The files are read and written only through `kneuron.runs.rundir.RunDir`.
With `holdout=K` (`kneuron discover --holdout K`), K prompts of each fact with at least K + 3
usable ones are held out, seeded (`kneuron.selection.heldout`): discovery attributes, refines and
judges (rule effect) on the others only, and each record lists the held-out ones as
"heldout_prompts", for the experiments and `kneuron compare --run` to measure on
(`RunDir.heldout()`, `RunData.heldout`).
With `specific="other_relations"` or `"effect"` (named deviations, see `kneuron.selection.specific`)
the table also has method "kn_specific": each fact's refined set without its generic neurons.
Rule "effect" suppresses each refined neuron alone on the fact's prompts and on a seeded sample of
`specific_other_prompts` prompts of other relations' facts, so it needs the model (the local
backend's, or loaded here for the Ray backend).  Those facts are split first by gold answer into
two seeded halves by the function `kneuron compare` splits them with
(`kneuron.selection.answer_split`): only the judging half's prompts judge the fact, and the
measuring half is left for a collateral measurement that shares no fact and no gold answer with
what chose the neurons.  `specific.json` records, per judged fact, both halves and the prompts
that judged it (`RunDir.specific_splits()`; {} for older runs).
Refinement runs per relation once every fact is attributed; it is cheap and fully determined by
the records, so a resumed run ends with the same table as an uninterrupted one.

Where the records are computed is the backend's business (`kneuron.runs.backends`): in this
process (`"local"`, the default) or on Ray workers (`"ray"`).  Either way this process is the only
writer of the run directory, so the directory, resumption and final table do not depend on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kneuron.data.facts import FactSet
from kneuron.errors import KneuronError
from kneuron.runs.backends import make_backend
from kneuron.runs.config import SPECIFIC_RULES, DiscoveryConfig, fingerprint, select_facts
from kneuron.runs.rundir import RunDir, neuron_sets
from kneuron.seeds import derived_seed
from kneuron.selection import adapt_p, answer_split, check_heldout, check_specific_rule, specific_sets

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

if TYPE_CHECKING:  # pandas is imported when a table is built, not with kneuron.runs
    import pandas as pd

TABLE_COLUMNS = ["relation", "fact", "subject", "object", "layer", "index", "method"]
__all__ = ["TABLE_COLUMNS", "DiscoveryConfig", "DiscoveryResult", "discover", "fingerprint", "load_records",
           "load_run", "neuron_sets", "refine_run", "select_facts"]


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
                        "skipped_prompts": sum(records[i].get("skipped_prompts", 0) for i in idx),
                        "heldout_prompts": sum(len(records[i].get("heldout_prompts", ())) for i in done)}
        for method, key in (("kn", "kn"), ("baseline", "base")):
            if not done:  # every fact skipped: there is no p to choose
                summary[rel][method] = {"p": None, "tries": 0, "neurons_per_fact": None, "converged": False,
                                        "history": []}
                continue
            coarse = [[[tuple(t[:2]) for t in prompt] for prompt in records[i][key]] for i in done]
            adapt = adapt_p(coarse, config.p_start, config.p_step, config.max_tries, config.count_range,
                            config.min_prompts)
            summary[rel][method] = {"p": adapt.p, "tries": adapt.tries, "neurons_per_fact": adapt.average,
                                    "converged": adapt.converged, "history": adapt.history}
            for i, neurons in zip(done, adapt.neurons):
                f = facts.facts[i]
                rows += [(rel, i, f.subject, f.object, n.layer, n.index, method) for n in neurons]
    if getattr(config, "specific", "none") == "other_relations":
        rows += _specific_rows(rows, config.specific)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    table = table.astype({"fact": "int64", "layer": "int64", "index": "int64"})
    return table, summary


def _specific_rows(rows: list[tuple], rule: str) -> list[tuple]:
    """Rows of method "kn_specific": the "kn" rows that survive the named rule."""
    if rule not in SPECIFIC_RULES:
        raise KneuronError(f"unknown specific rule {rule!r}; use one of: {', '.join(SPECIFIC_RULES)}")
    facts: dict[int, list[tuple]] = {}
    for row in rows:
        if row[-1] == "kn":
            facts.setdefault(row[1], []).append(row)
    order = list(facts)
    kept = specific_sets([facts[i][0][0] for i in order], [[(r[4], r[5]) for r in facts[i]] for i in order])
    out = []
    for i, neurons in zip(order, kept):
        keep = set(neurons)
        out += [r[:-1] + ("kn_specific",) for r in facts[i] if (r[4], r[5]) in keep]
    return out


def _effect_rows(kn: KnowledgeModel, facts: FactSet, records: dict[int, dict], table: pd.DataFrame, config: DiscoveryConfig
                 ) -> tuple[pd.DataFrame, dict[int, dict]]:
    """Rows of method "kn_specific" by rule "effect": the "kn" rows whose neuron passes it; and per
    judged fact its halves, as `RunDir.write_specific` records them.  The other relations' facts
    are split by gold answer (`kneuron.selection.answer_split`, as `kneuron compare` splits them);
    a fact is judged on a seeded sample of `specific_other_prompts` used prompts of its judging half
    only, so its measuring half is left for the collateral measurement."""
    import numpy as np
    import pandas as pd

    from kneuron.interventions import SpecificityTask, effect_specific_sets
    from kneuron.neurons import Neuron

    def used(i):  # indices of the prompts discovery saw (held-out ones excluded)
        return list(records[i].get("used_prompts", range(len(facts.facts[i].prompts))))

    done = [j for j in sorted(records) if "skipped" not in records[j]]
    kn_rows = table[table.method == "kn"]
    groups = list(kn_rows.groupby("fact", sort=True))
    tasks, splits = [], {}
    for i, rows in groups:
        i = int(i)
        cand = [j for j in done if facts.facts[j].relation != facts.facts[i].relation]
        measuring, judging = answer_split(i, cand, [facts.facts[j].object for j in cand], config.seed)
        others = [(j, int(k)) for j in judging for k in used(j)]
        rng = np.random.default_rng(derived_seed(config.seed, "specific", i))
        take = (sorted(int(t) for t in rng.choice(len(others), size=min(config.specific_other_prompts, len(others)),
                                                  replace=False)) if others else [])
        judge = [others[t] for t in take]
        splits[i] = {"measuring": measuring, "judging": judging, "judge_prompts": judge}
        tasks.append(SpecificityTask([Neuron(int(a), int(b)) for a, b in zip(rows.layer, rows["index"])],
                                     [(facts.facts[i].prompts[k], facts.facts[i].object) for k in used(i)],
                                     [(facts.facts[j].prompts[k], facts.facts[j].object) for j, k in judge]))
    out = []
    for (_, rows), kept in zip(groups, effect_specific_sets(kn, tasks, config.specific_fraction)):
        kept = set(kept)
        out.append(rows[[Neuron(int(a), int(b)) in kept for a, b in zip(rows.layer, rows["index"])]])
    spec = pd.concat(out) if out else kn_rows.iloc[:0]
    return spec.assign(method="kn_specific"), splits


@dataclass
class DiscoveryResult:
    run_dir: Path
    config: DiscoveryConfig
    neurons: pd.DataFrame
    relations: dict
    resumed_facts: int = 0
    seconds: float = 0.0


def discover(kn: KnowledgeModel, facts: FactSet, run_dir, config: DiscoveryConfig, progress: bool = True,
             facts_per_batch: int = 8, backend=None) -> DiscoveryResult:
    """Attribute every prompt, refine per relation, write the run directory (resuming if present).

    `backend`: None or "local" (attribution in this process with `kn`; `kn=None` loads
    `config.model`), "ray" (a `RayBackend` with default settings), or a backend object from
    `kneuron.runs.backends` (e.g. `RayBackend(workers=4)`); the Ray backend needs no `kn` here.
    """
    if backend is None or isinstance(backend, str):
        backend = make_backend(backend or "local", kn=kn)
    if config.specific not in SPECIFIC_RULES:
        raise KneuronError(f"unknown specific rule {config.specific!r}; use one of: {', '.join(SPECIFIC_RULES)}")
    check_heldout(config.holdout, "--holdout")
    if config.specific == "effect":
        check_specific_rule(config.specific, config.specific_fraction)
        if config.specific_other_prompts < 1:
            raise KneuronError(f"specific_other_prompts must be >= 1, got {config.specific_other_prompts}")
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    facts = select_facts(facts, config.relations, config.limit_facts)
    config.facts_fingerprint = fingerprint(facts)
    run.check_resumable(config)
    run.write_config(config)
    log = run.fact_log()
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
    if config.specific == "effect":
        import pandas as pd

        model = kn if kn is not None else getattr(backend, "kn", None)
        if model is None:
            import kneuron

            model = kneuron.load(config.model, device=getattr(backend, "device", "auto"))
        rows, splits = _effect_rows(model, facts, records, table, config)
        table = pd.concat([table, rows], ignore_index=True)
        run.write_specific(splits)
    run.write_result(table, summary)
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
    return RunDir(run_dir).load()


def load_records(run_dir) -> dict[int, dict]:
    return RunDir(run_dir).records()
