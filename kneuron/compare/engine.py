"""Which localization method holds up under causal tests: `compare` scores, selects and intervenes.

For every fact, each method scores every neuron at the blank of each of the fact's prompts
(`kneuron.compare.scores`); a fact's score of a neuron is its mean over the fact's prompts, and at
budget k a method keeps its top k neurons.  Two rows of variable size come from IG as well:
`ig_refined` (the paper's refined sets, p adapted per relation as in discovery) and
`ig_specific` (the refined sets without their generic neurons, by `specific_rule`, see
`kneuron.selection.specific`: `effect` keeps a neuron when suppressing it alone lowers the fact
and moves a seeded sample of other relations' prompts by at most `specific_fraction` of that;
the sample is drawn apart from the one that measures the collateral damage below, so the rule is
not judged on the prompts it chose by).  Per (method, budget):

- `suppress` / `amplify`: the paper's metric, in percent.  Per relation,
  (mean p_new - mean p_orig) / mean p_orig over all prompts of its facts, with each fact's
  neurons x0 (x2) at the blank; then the unweighted mean over relations.  A fact whose set is
  empty counts with no change.
- `other_relations_suppress`: the same, each fact's neurons suppressed on a seeded sample of
  prompts of facts of *other* relations (grouped by the relation of the fact whose neurons they
  are): the collateral damage.
- `consistency`: each fact's prompts are split into two seeded halves, each half selects on its
  own, and the Jaccard index of the two sets is averaged over facts (facts with fewer than two
  prompts, or two empty sets, do not count).  For the refined rows each half is refined with the
  relation's p and a floor of min(3, half size) prompts.
- `seconds_per_prompt`: the scoring time per prompt (the refined rows: IG's).

Work is journaled in the output directory (`kneuron.compare.outputs`): a killed run resumes
where it stopped and ends with the same tables (timings aside, which are journaled too).
`run=RUN_DIR` takes IG from a discovery run instead of recomputing it; a run stores each
prompt's *coarse* neurons with their scores (those >= 0.2 x the prompt's maximum), not every
score, so the `ig` row then ranks by the mean of the stored scores (a score below a prompt's
coarse threshold counts as 0), the refined rows are the run's own sets, and `seconds_per_prompt`
of IG is unknown (NaN).  The `ig_specific` row is journaled under a key that names its rule, so
resuming a finished comparison with another `specific_rule` or `specific_fraction` computes that
row alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

import kneuron
from kneuron.compare.outputs import CompareDir
from kneuron.compare.scores import METHODS, prompt_scores, random_neurons, subject_positions, top_neurons
from kneuron.data.facts import FactSet
from kneuron.errors import KneuronError
from kneuron.interventions import SpecificityTask, effect_specific_sets, prefix_caches, scaled_probabilities
from kneuron.neurons import Neuron
from kneuron.runs.config import fingerprint, select_facts
from kneuron.seeds import derived_seed
from kneuron.selection import (
    SPECIFIC_FRACTION,
    adapt_p,
    check_specific_rule,
    coarse_neurons,
    refine,
    specific_sets,
)

REFINED_ROWS = ("ig_refined", "ig_specific")
COLUMNS = ["method", "budget", "suppress", "amplify", "other_relations_suppress", "consistency",
           "seconds_per_prompt", "neurons_per_fact", "facts", "prompts"]


@dataclass
class CompareConfig:
    model: str = "world"
    data: str = "world"
    relations: list[str] | None = None
    limit_facts: int | None = None
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    budgets: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    seed: int = 0
    other_prompts: int = 10  # prompts of other relations' facts per fact, for the collateral damage
    prompts_per_fact: int | None = None  # a seeded sample of each fact's usable prompts; None = all
    run: str | None = None
    steps: int = 20
    threshold: float = 0.2
    p_start: float = 0.7
    p_step: float = 0.05
    max_tries: int = 6
    target: tuple[float, float] = (2.0, 5.0)
    min_prompts: int = 3
    specific_rule: str = "effect"  # how ig_specific drops generic neurons (kneuron.selection.specific)
    specific_fraction: float = SPECIFIC_FRACTION  # rule "effect": collateral / own effect allowed per neuron
    noise_scale: float = 3.0
    units: str = "percent change of the gold probability"
    facts_fingerprint: str = ""
    kneuron_version: str = kneuron.__version__

    def to_json(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d


def check_methods(methods) -> list[str]:
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise KneuronError("no methods given")
    for m in methods:
        if m not in METHODS:
            raise KneuronError(f"unknown method {m!r}; use some of: {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def check_budgets(budgets) -> list[int]:
    out = []
    for b in budgets:
        text = str(b).strip()
        try:
            value = int(text)
        except ValueError:
            raise KneuronError(f"budgets must be integers, got {text!r}") from None
        if value <= 0:
            raise KneuronError(f"budgets must be >= 1, got {value}")
        out.append(value)
    if not out:
        raise KneuronError("no budgets given")
    return sorted(set(out))


def _halves(n: int, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(order[: n // 2]), sorted(order[n // 2:])


def _pairs(neurons) -> list[list[int]]:
    return [[int(n[0]), int(n[1])] for n in neurons]


def _usable_prompts(kn, fact, index: int, config: CompareConfig) -> list[int]:
    """The prompts the model can answer (a causal LM: those ending at the blank), seeded-sampled down to
    `config.prompts_per_fact`."""
    usable = [k for k, p in enumerate(fact.prompts) if kn.is_masked or kn.ends_at_blank(p)]
    if config.prompts_per_fact is None or len(usable) <= config.prompts_per_fact:
        return usable
    rng = np.random.default_rng(derived_seed(config.seed, "prompts", index))
    return sorted(usable[int(t)] for t in rng.choice(len(usable), size=config.prompts_per_fact, replace=False))


def _stored_ig(record: dict, shape) -> list[torch.Tensor]:
    """A run's per-prompt IG scores: the coarse neurons' stored scores, zero elsewhere."""
    out = []
    for prompt in record["kn"]:
        s = torch.zeros(shape)
        for layer, index, score in prompt:
            s[int(layer), int(index)] = float(score)
        out.append(s)
    return out


def score_fact(kn, fact, index: int, config: CompareConfig, run_record: dict | None = None) -> dict:
    """One fact's journal record: each method's top neurons (all prompts, and each half), IG's coarse sets."""
    kmax = max(config.budgets)
    rec = {"fact": index, "relation": fact.relation, "subject": fact.subject, "object": fact.object}
    # With a run, `fact` is the run's (`RunData.facts`): it holds only the prompts discovery used,
    # so its record's "used_prompts" (indices into the unfiltered list) no longer apply.
    used = list(range(len(fact.prompts))) if run_record is not None else _usable_prompts(kn, fact, index, config)
    try:
        if run_record is not None and "skipped" in run_record:
            raise KneuronError(run_record["skipped"])
        if not used:
            raise KneuronError("no prompt ends at the blank, as a causal LM needs")
        if run_record is not None and len(run_record.get("kn", ())) != len(used):
            raise KneuronError(f"the run stores IG of {len(run_record.get('kn', ()))} prompts, the fact has "
                               f"{len(used)}")
        for k in used:
            kn.encode(fact.prompts[k], fact.object)
        if "atp" in config.methods:  # atp corrupts the subject: a prompt without it skips the fact, here
            for k in used:
                subject_positions(kn, fact.prompts[k], fact.subject)
    except KneuronError as exc:
        return rec | {"skipped": str(exc)}
    halves = _halves(len(used), derived_seed(config.seed, "halves", index))
    rec |= {"prompts": used, "halves": [list(h) for h in halves], "top": {}, "half_top": {}, "seconds": {}}
    shape = (kn.num_layers, kn.num_neurons)
    for method in config.methods:
        if method == "random":
            t0 = time.perf_counter()
            rec["top"][method] = _pairs(random_neurons(*shape, kmax, derived_seed(config.seed, "random", index)))
            rec["half_top"][method] = [_pairs(random_neurons(*shape, kmax, derived_seed(config.seed, "random", index, h)))
                                       for h in (0, 1)]
            rec["seconds"][method] = time.perf_counter() - t0
            continue
        t0 = time.perf_counter()
        if method == "ig" and run_record is not None:
            per_prompt = _stored_ig(run_record, shape)
            rec["seconds"][method] = None
        else:
            try:
                per_prompt = [prompt_scores(kn, method, fact.prompts[k], fact.object, fact.subject,
                                            derived_seed(config.seed, "atp", index, k)) for k in used]
            except KneuronError as exc:  # one fact's bad input is its skip, not the comparison's end
                return {key: rec[key] for key in ("fact", "relation", "subject", "object")} | {
                    "skipped": f"{method}: {exc}"}
            rec["seconds"][method] = time.perf_counter() - t0
        stack = torch.stack(per_prompt)
        rec["top"][method] = _pairs(top_neurons(stack.mean(0), kmax))
        rec["half_top"][method] = [_pairs(top_neurons(stack[h].mean(0), kmax)) if h else [] for h in halves]
        if method == "ig":
            rec["coarse"] = ([[[int(t[0]), int(t[1])] for t in prompt] for prompt in run_record["kn"]]
                             if run_record is not None else
                             [_pairs(coarse_neurons(s, config.threshold)) for s in per_prompt])
    return rec


@dataclass
class Selection:
    """Every (method, budget) row's neuron set per fact, on all prompts and on each half."""

    sets: dict[tuple[str, int], dict[int, list[Neuron]]]
    half_sets: dict[tuple[str, int], dict[int, tuple[list[Neuron], list[Neuron]]]]
    p: dict[str, float]


def select(records: dict[int, dict], config: CompareConfig, run_sets: dict[int, list] | None = None,
           run_p: dict[str, float] | None = None) -> Selection:
    facts = [i for i in sorted(records) if "skipped" not in records[i]]
    sets, half_sets = {}, {}
    for method in config.methods:
        for k in config.budgets:
            sets[(method, k)] = {i: [Neuron(*n) for n in records[i]["top"][method][:k]] for i in facts}
            half_sets[(method, k)] = {i: tuple([Neuron(*n) for n in h[:k]] for h in records[i]["half_top"][method])
                                      for i in facts}
    p: dict[str, float] = {}
    if "ig" in config.methods:
        by_rel: dict[str, list[int]] = {}
        for i in facts:
            by_rel.setdefault(records[i]["relation"], []).append(i)
        refined, halves = {}, {}
        for rel, idx in by_rel.items():
            coarse = [[[Neuron(*n) for n in prompt] for prompt in records[i]["coarse"]] for i in idx]
            if run_p is not None and run_p.get(rel) is not None:
                p[rel] = float(run_p[rel])
                chosen = [[Neuron(*n) for n in run_sets.get(i, [])] for i in idx]
            else:
                adapt = adapt_p(coarse, config.p_start, config.p_step, config.max_tries, config.target,
                                config.min_prompts)
                p[rel], chosen = adapt.p, adapt.neurons
            for i, c, neurons in zip(idx, coarse, chosen):
                refined[i] = list(neurons)
                halves[i] = tuple(refine([c[k] for k in h], p[rel], min(config.min_prompts, len(h))) if h else []
                                  for h in records[i]["halves"])
        sets[("ig_refined", 0)] = refined
        half_sets[("ig_refined", 0)] = halves
    return Selection(sets, half_sets, p)


def add_specific(kn, facts: FactSet, records: dict[int, dict], selection: Selection, config: CompareConfig,
                 others: dict[int, list[tuple[int, int]]]) -> None:
    """Row `ig_specific`: the refined sets, and each half's, narrowed by `config.specific_rule`."""
    if ("ig_refined", 0) not in selection.sets:
        return
    refined, halves = selection.sets[("ig_refined", 0)], selection.half_sets[("ig_refined", 0)]
    ids = list(refined)
    if config.specific_rule == "other_relations":
        rels = [records[i]["relation"] for i in ids]
        full = specific_sets(rels, [refined[i] for i in ids])
        parts = [specific_sets(rels, [halves[i][h] for i in ids]) for h in (0, 1)]
    else:
        judges = other_prompts(facts, records, config, salt="specific", exclude=others)

        def task(i: int, neurons, positions) -> SpecificityTask:
            own = [(facts.facts[i].prompts[records[i]["prompts"][k]], facts.facts[i].object) for k in positions]
            return SpecificityTask(neurons, own, [(facts.facts[j].prompts[k], facts.facts[j].object)
                                                  for j, k in judges[i]])

        tasks = [task(i, refined[i], range(len(records[i]["prompts"]))) for i in ids]
        tasks += [task(i, halves[i][h], records[i]["halves"][h]) for h in (0, 1) for i in ids]
        kept = effect_specific_sets(kn, tasks, config.specific_fraction)
        n = len(ids)
        full, parts = kept[:n], [kept[n: 2 * n], kept[2 * n:]]
    selection.sets[("ig_specific", 0)] = dict(zip(ids, full))
    selection.half_sets[("ig_specific", 0)] = {i: (parts[0][n], parts[1][n]) for n, i in enumerate(ids)}


def other_prompts(facts: FactSet, records: dict[int, dict], config: CompareConfig, salt: str = "other",
                  exclude: dict[int, list[tuple[int, int]]] | None = None) -> dict[int, list[tuple[int, int]]]:
    """Per fact, a seeded sample of `config.other_prompts` (fact, prompt) pairs of facts of other
    relations, none of them in `exclude[fact]`."""
    pool = [(j, k) for j in sorted(records) if "skipped" not in records[j] for k in records[j]["prompts"]]
    out = {}
    for i in sorted(records):
        if "skipped" in records[i]:
            continue
        taken = set(exclude.get(i, ())) if exclude else set()
        mine = [pk for pk in pool if records[pk[0]]["relation"] != records[i]["relation"] and pk not in taken]
        rng = np.random.default_rng(derived_seed(config.seed, salt, i))
        take = rng.choice(len(mine), size=min(config.other_prompts, len(mine)), replace=False) if mine else []
        out[i] = [mine[t] for t in sorted(int(t) for t in take)]
    return out


def row_key(method: str, budget: int, config: CompareConfig) -> str:
    """The effects journal's key of a row; ig_specific's names its rule."""
    if method != "ig_specific":
        return f"{method}@{budget}"
    rule = config.specific_rule + (f":{config.specific_fraction:g}" if config.specific_rule == "effect" else "")
    return f"ig_specific[{rule}]@{budget}"


def _relative_change(owner_rel: list[str], p_orig: torch.Tensor, p_new: torch.Tensor) -> float:
    """Per relation (mean p_new - mean p_orig) / mean p_orig, in percent; unweighted mean over relations."""
    if not owner_rel:
        return float("nan")
    frame = pd.DataFrame({"rel": owner_rel, "orig": p_orig.double().cpu().numpy(), "new": p_new.double().cpu().numpy()})
    per = frame.groupby("rel", sort=True).mean()
    return float(((per["new"] - per["orig"]) / per["orig"]).mean() * 100.0)


def _jaccard(a, b) -> float | None:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else None


def measure_row(kn, facts: FactSet, records, sets: dict[int, list[Neuron]], halves, others, clean) -> dict:
    """suppress, amplify, other_relations_suppress and consistency of one (method, budget) row."""
    own = [(i, k) for i in sets for k in records[i]["prompts"]]
    prompts = [facts.facts[i].prompts[k] for i, k in own]
    answers = [facts.facts[i].object for i, _ in own]
    neuron_sets = [sets[i] for i, _ in own]
    rels = [records[i]["relation"] for i, _ in own]
    p_orig = torch.tensor([clean[(i, k)] for i, k in own], dtype=torch.float64)
    row = {}
    for name, factor in (("suppress", 0.0), ("amplify", 2.0)):
        p_new = scaled_probabilities(kn, prompts, answers, neuron_sets, factor).double().cpu()
        row[name] = _relative_change(rels, p_orig, p_new)
    cross = [(i, j, k) for i in sets for j, k in others[i]]
    if cross:
        p_new = scaled_probabilities(kn, [facts.facts[j].prompts[k] for _, j, k in cross],
                                     [facts.facts[j].object for _, j, _ in cross], [sets[i] for i, _, _ in cross],
                                     0.0).double().cpu()
        p_old = torch.tensor([clean[(j, k)] for _, j, k in cross], dtype=torch.float64)
        row["other_relations_suppress"] = _relative_change([records[i]["relation"] for i, _, _ in cross], p_old, p_new)
    else:
        row["other_relations_suppress"] = float("nan")
    scores = [s for i in halves if len(records[i]["prompts"]) >= 2 and (s := _jaccard(*halves[i])) is not None]
    row["consistency"] = float(np.mean(scores)) if scores else float("nan")
    row["neurons_per_fact"] = float(np.mean([len(s) for s in sets.values()])) if sets else float("nan")
    row["facts"], row["prompts"] = len(sets), len(own)
    return row


@dataclass
class CompareResult:
    out: CompareDir
    methods: pd.DataFrame
    neurons: pd.DataFrame
    config: CompareConfig
    resumed_facts: int = 0


def compare(kn, facts: FactSet, out_dir, config: CompareConfig, progress: Callable[[str], None] | None = None,
            run=None) -> CompareResult:
    """Score, select and intervene for every (method, budget); write and return the tables.

    `run`: a `kneuron.experiments.rundata.RunData` whose IG to reuse (see the module docstring).
    """
    config.methods = check_methods(config.methods)
    config.budgets = check_budgets(config.budgets)
    check_specific_rule(config.specific_rule, config.specific_fraction)
    if config.limit_facts is not None and config.limit_facts < 1:
        raise KneuronError(f"--limit-facts must be >= 1, got {config.limit_facts}")
    if config.prompts_per_fact is not None and config.prompts_per_fact < 1:
        raise KneuronError(f"--prompts-per-fact must be >= 1, got {config.prompts_per_fact}")
    if config.other_prompts < 0:
        raise KneuronError(f"other prompts per fact must be >= 0, got {config.other_prompts}")
    say = progress or (lambda text: None)
    if run is not None:
        facts = run.facts  # the run's facts, with the prompts it used
    else:
        facts = select_facts(facts, config.relations, config.limit_facts)
    if not len(facts):
        raise KneuronError("no facts to compare (check --relations)")
    config.facts_fingerprint = fingerprint(facts)
    out = CompareDir(out_dir)
    out.start(config.to_json())
    run_records = out_records = None
    if run is not None:
        from kneuron.runs import RunDir

        run_records = RunDir(run.run_dir).records()
    log = out.score_log()
    resumed = len(log.records)
    try:
        todo = [i for i in range(len(facts)) if i not in log]
        for n, i in enumerate(todo):
            say(f"scoring fact {resumed + n + 1}/{len(facts)}: {facts.facts[i].subject} ({facts.facts[i].relation})")
            log.append(score_fact(kn, facts.facts[i], i, config,
                                  run_records.get(i, {"skipped": "not in the run"}) if run is not None else None))
    finally:
        log.close()
    out_records = {i: log.records[i] for i in range(len(facts))}
    run_sets = run_p = None
    if run is not None and "ig" in config.methods:
        run_sets = {i: [(n.layer, n.index) for n in s] for i, s in run.sets("kn").items()}
        run_p = {rel: (s.get("kn") or {}).get("p") for rel, s in run.summary.items()}
    selection = select(out_records, config, run_sets, run_p)
    others = other_prompts(facts, out_records, config)
    with prefix_caches(kn):  # a causal LM computes each prompt's prefix once for all rows
        if "ig" in config.methods:
            say(f"selecting ig_specific (rule {config.specific_rule})")
            add_specific(kn, facts, out_records, selection, config, others)
        effects = _measure(kn, facts, out_records, selection, others, config, out, say)
    rows = [row_key(method, budget, config) for method, budget in selection.sets]
    methods = _methods_table([effects[key] for key in rows], out_records, config)
    neurons = _neurons_table(selection, out_records)
    out.finish(methods, neurons, {"p": selection.p, "skipped": {i: r["skipped"] for i, r in out_records.items()
                                                                  if "skipped" in r}})
    return CompareResult(out, methods, neurons, config, resumed)


def _measure(kn, facts, records, selection: Selection, others, config: CompareConfig, out: CompareDir, say) -> dict:
    """Every row's measurements, journaled; returns the journal's records."""
    needed = sorted({(i, k) for i in others for k in records[i]["prompts"]} | {pk for v in others.values() for pk in v})
    # Clean values by the same route as the scaled ones (no neuron scaled), so both carry the same rounding.
    clean = dict(zip(needed, scaled_probabilities(kn, [facts.facts[i].prompts[k] for i, k in needed],
                                                  [facts.facts[i].object for i, _ in needed], [[]] * len(needed),
                                                  1.0).double().cpu().tolist()))
    effects = out.effect_log()
    try:
        # The variable-size rows first: they are the ones a short session most needs.
        for (method, budget), sets in sorted(selection.sets.items(), key=lambda kv: kv[0][1] != 0):
            key = row_key(method, budget, config)
            if key in effects:
                continue
            say(f"intervening: {method} at budget {budget}")
            row = measure_row(kn, facts, records, sets, selection.half_sets[(method, budget)], others, clean)
            effects.append({"row": key, "method": method, "budget": budget} | row)
    finally:
        effects.close()
    return effects.records


def _methods_table(effects: list[dict], records: dict, config: CompareConfig) -> pd.DataFrame:
    done = [r for r in records.values() if "skipped" not in r]
    prompts = sum(len(r["prompts"]) for r in done)

    def per_prompt(method):
        secs = [r["seconds"].get(method) for r in done]
        return float("nan") if not prompts or any(s is None for s in secs) else sum(secs) / prompts

    rows = []
    for rec in effects:
        source = "ig" if rec["method"] in REFINED_ROWS else rec["method"]
        rows.append({**{c: rec.get(c) for c in COLUMNS}, "seconds_per_prompt": per_prompt(source)})
    order = {m: n for n, m in enumerate(list(config.methods) + list(REFINED_ROWS))}
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["budget"] = frame["budget"].astype("int64")
    frame = frame.sort_values(["method", "budget"], key=lambda s: s.map(order) if s.name == "method" else s)
    return frame.reset_index(drop=True)


def _neurons_table(selection: Selection, records: dict) -> pd.DataFrame:
    rows = [(method, budget, records[i]["relation"], records[i]["subject"], n.layer, n.index)
            for (method, budget), sets in selection.sets.items() for i, neurons in sets.items() for n in neurons]
    frame = pd.DataFrame(rows, columns=["method", "budget", "relation", "subject", "layer", "index"])
    return frame.astype({"budget": "int64", "layer": "int64", "index": "int64"})
