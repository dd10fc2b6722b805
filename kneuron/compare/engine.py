"""Which localization method holds up under causal tests: `compare` scores, selects and intervenes.

Each fact's usable prompts are split first (`kneuron.selection.heldout`, seed
`derived_seed(seed, "heldout", fact)`): `heldout` of them (default 2) are held out when the fact
has at least `heldout` + 3, the rest are its *selection* prompts (a fact with fewer has no
held-out prompt; such facts are counted, summed up in one warning line and recorded in
selection.json).  Everything that chooses neurons sees the selection prompts only: every method's
scores, the refined sets, the halves, and the effect rule's own-fact judgement.

For every fact, each method scores every neuron at the blank of each of the fact's selection
prompts (a registered method of `kneuron.localization`); a fact's score of a neuron is its mean over those prompts, and at
budget k a method keeps its top k neurons.  Two rows of variable size come from IG as well:
`ig_refined` (the paper's refined sets, p adapted per relation as in discovery) and
`ig_specific` (the refined sets without their generic neurons, by `specific_rule`, see
`kneuron.selection.specific`: `effect` keeps a neuron when suppressing it alone lowers the fact
on its selection prompts and moves a seeded sample of other relations' prompts by at most
`specific_fraction` of that; `other_relations` drops a neuron that is in the refined set of a
fact of another relation).  The rules cannot see the test: per fact, the other relations' facts
are split by gold answer into two seeded halves (`collateral_samples`); one half measures the
collateral damage below, and only the other half may judge (effect: its prompts) or be looked at
(other_relations: its refined sets).  No fact, and no gold answer, is in both.  Per (method,
budget):

- `suppress` / `amplify`: the paper's metric, in percent, in-sample: per relation,
  (mean p_new - mean p_orig) / mean p_orig over the selection prompts of its facts, with each
  fact's neurons x0 (x2) at the blank; then the unweighted mean over relations.  A fact whose
  set is empty counts with no change.
- `suppress_heldout` / `amplify_heldout`: the same on the held-out prompts of the facts that have
  some (`heldout_facts`, `heldout_prompts`); NaN when no fact has held-out prompts.
- `other_relations_suppress`: the same, each fact's neurons suppressed on a seeded sample of
  prompts of facts of *other* relations (grouped by the relation of the fact whose neurons they
  are), from the measuring half above: the collateral damage.
- `consistency`: each fact's selection prompts are split into two seeded halves, each half selects on its
  own, and the Jaccard index of the two sets is averaged over facts (facts with fewer than two
  prompts, or two empty sets, do not count).  For the refined rows each half is refined with the
  relation's p and a floor of min(3, half size) prompts.
- `seconds_per_prompt`: the scoring time per prompt (the refined rows: IG's).
- `split`: `all`, or `test` with `tune_share` > 0: then each relation's facts are split (seeded)
  into tune facts (that share) and test facts; the effect rule's fraction is chosen among
  `specific_fractions` on the tune facts alone (`tuning.csv`: the largest suppression, held-out
  where there is some, among the fractions whose collateral is at most `tune_max_collateral` of
  it; else the smallest such ratio), and every row of methods.csv is measured on the test facts
  (collateral samples and judges come from facts of the same split).

Work is journaled in the output directory (`kneuron.compare.outputs`): a killed run resumes
where it stopped and ends with the same tables (timings aside, which are journaled too).
`run=RUN_DIR` takes IG from a discovery run instead of recomputing it; a run stores each
prompt's *coarse* neurons with their scores (those >= 0.2 x the prompt's maximum), not every
score, so the `ig` row then ranks by the mean of the stored scores (a score below a prompt's
coarse threshold counts as 0), and `seconds_per_prompt` of IG is unknown (NaN).  A run made with
`discover --holdout K` brings its own split: its held-out prompts are the held-out ones here, and
the refined rows are the run's own sets.  A run without one saw every prompt: compare splits its
prompts as above, ranks by the selection prompts' stored scores, and refines the selection
prompts' coarse sets again (selection.json says `refined_from`).  The `ig_specific` row is
journaled under a key that names its rule (and fraction), so resuming a finished comparison with
another `specific_rule`, `specific_fraction` or `specific_fractions` computes those rows alone.  The split (`heldout`, `seed`, `tune_share`) is part of config.json, so a journal made
with another split is refused, never mixed in.
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
from kneuron.compare.scores import top_neurons
from kneuron.data.facts import FactSet
from kneuron.errors import KneuronError
from kneuron.interventions import SpecificityTask, prefix_caches, scaled_probabilities, single_neuron_changes
from kneuron.localization import get_method, method_names
from kneuron.neurons import Neuron
from kneuron.runs.config import fingerprint, select_facts
from kneuron.seeds import derived_seed
from kneuron.selection import (
    HELDOUT_PROMPTS,
    SPECIFIC_FRACTION,
    SelectionConfig,
    adapt_p,
    answer_split,
    check_heldout,
    check_specific_rule,
    coarse_neurons,
    effect_specific,
    heldout_split,
    refine,
    specific_sets,
)
from kneuron.selection.config import DEFAULT as SELECTION

REFINED_ROWS = ("ig_refined", "ig_specific")
COLUMNS = ["method", "budget", "split", "suppress", "amplify", "suppress_heldout", "amplify_heldout",
           "other_relations_suppress", "consistency", "seconds_per_prompt", "neurons_per_fact", "facts", "prompts",
           "heldout_facts", "heldout_prompts"]
TUNING_COLUMNS = ["specific_fraction", "chosen", "suppress", "amplify", "suppress_heldout", "amplify_heldout",
                  "other_relations_suppress", "collateral_ratio", "neurons_per_fact", "facts", "prompts",
                  "heldout_prompts"]
SPECIFIC_FRACTIONS = (0.1, 0.2, 0.5)  # the effect rule's fractions swept on the tune facts, by default


@dataclass
class CompareConfig:
    model: str = "world"
    data: str = "world"
    relations: list[str] | None = None
    limit_facts: int | None = None
    methods: list[str] = field(default_factory=method_names)  # every registered localization method
    budgets: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    seed: int = 0
    other_prompts: int = 10  # prompts of other relations' facts per fact, for the collateral damage
    prompts_per_fact: int | None = None  # a seeded sample of each fact's usable prompts; None = all
    run: str | None = None
    # The selection block of the refined rows (`SelectionConfig`), flat so that config.json stays flat.
    threshold: float = SELECTION.threshold
    p_start: float = SELECTION.p_start
    p_step: float = SELECTION.p_step
    max_tries: int = SELECTION.max_tries
    count_range: tuple[float, float] = SELECTION.count_range
    min_prompts: int = SELECTION.min_prompts
    specific_rule: str = "effect"  # how ig_specific drops generic neurons (kneuron.selection.specific)
    specific_fraction: float = SPECIFIC_FRACTION  # rule "effect": collateral / own effect allowed per neuron
    heldout: int = HELDOUT_PROMPTS  # held-out prompts per fact with >= heldout + 3 usable prompts; 0 = none
    tune_share: float = 0.0  # > 0: choose the effect rule's fraction on this share of each relation's facts
    specific_fractions: list[float] = field(default_factory=lambda: list(SPECIFIC_FRACTIONS))  # swept when tuning
    tune_max_collateral: float = 0.2  # tuning: the collateral / own suppression a chosen fraction may have
    facts_fingerprint: str = ""
    kneuron_version: str = kneuron.__version__

    @property
    def selection(self) -> SelectionConfig:
        return SelectionConfig.of(self)

    def to_json(self) -> dict:
        d = asdict(self)
        d["count_range"] = list(self.count_range)
        return d


def check_methods(methods) -> list[str]:
    """The methods to score, each once: registered localization methods (`kneuron.localization`), or a
    row derived from ig (REFINED_ROWS), which stands for ig: scoring ig gives every one of its rows."""
    methods = [m.strip() for m in methods if m.strip()]
    if not methods:
        raise KneuronError("no methods given")
    known = method_names()
    for m in methods:
        if m not in known and m not in REFINED_ROWS:
            raise KneuronError(f"unknown method {m!r}; use some of: {', '.join(known)} "
                               f"({' and '.join(REFINED_ROWS)} are rows derived from ig)")
    return list(dict.fromkeys("ig" if m in REFINED_ROWS else m for m in methods))


def prompt_scores(kn, method: str, prompt: str, answer: str, subject: str = "", seed: int = 0):
    """One prompt's (num_layers, num_neurons) scores by the registered method `method`."""
    return get_method(method).attribute(kn, prompt, answer, subject=subject, seed=seed)


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


def _split_prompts(kn, fact, index: int, config: CompareConfig) -> tuple[list[int], list[int]]:
    """(selection, held out) of the prompts the model can answer (a causal LM: those ending at the blank):
    the held-out ones are drawn first, then the selection part is seeded-sampled down to
    `config.prompts_per_fact`."""
    usable = [k for k, p in enumerate(fact.prompts) if kn.is_masked or kn.ends_at_blank(p)]
    sel, held = heldout_split(usable, config.heldout, derived_seed(config.seed, "heldout", index))
    if config.prompts_per_fact is None or len(sel) <= config.prompts_per_fact:
        return sel, held
    rng = np.random.default_rng(derived_seed(config.seed, "prompts", index))
    return sorted(sel[int(t)] for t in rng.choice(len(sel), size=config.prompts_per_fact, replace=False)), held


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
    """One fact's journal record: its selection and held-out prompts, each method's top neurons (on the
    selection prompts, and on each half of them), IG's coarse sets (selection prompts)."""
    kmax = max(config.budgets)
    rec = {"fact": index, "relation": fact.relation, "subject": fact.subject, "object": fact.object}
    source = "compare"
    if run_record is not None:
        # With a run, `fact` is the run's (`RunData.facts`) with the run's held-out prompts appended
        # (see `compare`): it holds only the prompts discovery attributed, then those it held out, so
        # its record's "used_prompts" (indices into the unfiltered list) no longer apply.
        n_run = len(fact.prompts) - len(run_record.get("heldout_prompts", ()))
        if "heldout_prompts" in run_record:  # a run made with --holdout: its split is the split
            sel, held, source = list(range(n_run)), list(range(n_run, len(fact.prompts))), "run"
        else:
            sel, held = heldout_split(range(n_run), config.heldout, derived_seed(config.seed, "heldout", index))
    else:
        sel, held = _split_prompts(kn, fact, index, config)
    try:
        if run_record is not None and "skipped" in run_record:
            raise KneuronError(run_record["skipped"])
        if not sel:
            raise KneuronError("no prompt ends at the blank, as a causal LM needs")
        if run_record is not None and len(run_record.get("kn", ())) != n_run:
            raise KneuronError(f"the run stores IG of {len(run_record.get('kn', ()))} prompts, the fact has "
                               f"{n_run}")
        for k in sel + held:
            kn.encode(fact.prompts[k], fact.object)
        for method in config.methods:  # e.g. atp corrupts the subject: a prompt without it skips the fact, here
            for k in sel:
                get_method(method).check(kn, fact.prompts[k], fact.object, subject=fact.subject)
    except KneuronError as exc:
        return rec | {"skipped": str(exc)}
    halves = _halves(len(sel), derived_seed(config.seed, "halves", index))
    rec |= {"prompts": sel, "heldout": held, "heldout_from": source, "halves": [list(h) for h in halves],
            "top": {}, "half_top": {}, "seconds": {}}
    shape = (kn.num_layers, kn.num_neurons)
    for method in config.methods:
        draw = getattr(get_method(method), "draw", None)
        if draw is not None:  # a control that chooses without any prompt (random): one draw per fact and half
            t0 = time.perf_counter()
            rec["top"][method] = _pairs(draw(*shape, kmax, derived_seed(config.seed, method, index)))
            rec["half_top"][method] = [_pairs(draw(*shape, kmax, derived_seed(config.seed, method, index, h)))
                                       for h in (0, 1)]
            rec["seconds"][method] = time.perf_counter() - t0
            continue
        t0 = time.perf_counter()
        if method == "ig" and run_record is not None:
            stored = _stored_ig(run_record, shape)
            per_prompt = [stored[k] for k in sel]  # the run's prompts are 0..n_run-1 here
            rec["seconds"][method] = None
        else:
            try:
                per_prompt = [prompt_scores(kn, method, fact.prompts[k], fact.object, fact.subject,
                                            derived_seed(config.seed, "atp", index, k)) for k in sel]
            except KneuronError as exc:  # one fact's bad input is its skip, not the comparison's end
                return {key: rec[key] for key in ("fact", "relation", "subject", "object")} | {
                    "skipped": f"{method}: {exc}"}
            rec["seconds"][method] = time.perf_counter() - t0
        stack = torch.stack(per_prompt)
        rec["top"][method] = _pairs(top_neurons(stack.mean(0), kmax))
        rec["half_top"][method] = [_pairs(top_neurons(stack[h].mean(0), kmax)) if h else [] for h in halves]
        if method == "ig":
            rec["coarse"] = ([[[int(t[0]), int(t[1])] for t in run_record["kn"][k]] for k in sel]
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
                adapt = adapt_p(coarse, config.p_start, config.p_step, config.max_tries, config.count_range,
                                config.min_prompts)
                p[rel], chosen = adapt.p, adapt.neurons
            for i, c, neurons in zip(idx, coarse, chosen):
                refined[i] = list(neurons)
                halves[i] = tuple(refine([c[k] for k in h], p[rel], min(config.min_prompts, len(h))) if h else []
                                  for h in records[i]["halves"])
        sets[("ig_refined", 0)] = refined
        half_sets[("ig_refined", 0)] = halves
    return Selection(sets, half_sets, p)


def fact_groups(records: dict[int, dict], config: CompareConfig) -> dict[str, list[int]]:
    """The facts the rows are measured on: {"all": every scored fact}, or, with `config.tune_share` > 0,
    {"tune": ..., "test": ...}: of each relation's scored facts a seeded share (rounded, at least one,
    never all; a relation with one fact gives none) to choose the effect rule's fraction on, the rest
    to report on."""
    done = [i for i in sorted(records) if "skipped" not in records[i]]
    if not config.tune_share:
        return {"all": done}
    by_rel: dict[str, list[int]] = {}
    for i in done:
        by_rel.setdefault(records[i]["relation"], []).append(i)
    tune: set[int] = set()
    for rel, idx in sorted(by_rel.items()):
        if len(idx) < 2:
            continue
        size = min(len(idx) - 1, max(1, round(config.tune_share * len(idx))))
        rng = np.random.default_rng(derived_seed(config.seed, "tune", rel))
        tune |= {idx[int(t)] for t in rng.choice(len(idx), size=size, replace=False)}
    if not tune:
        raise KneuronError("--tune-share: no relation has two scored facts to split into tune and test facts")
    return {"tune": sorted(tune), "test": [i for i in done if i not in tune]}


@dataclass
class Collateral:
    """Per fact: the (fact, prompt) pairs that measure its collateral damage (`measure`), those that
    judge its neurons for rule effect (`judge`), and the facts whose refined sets rule other_relations
    compares its set against (`reference`).  `judge` and `reference` share no fact and no gold answer
    with `measure`."""

    measure: dict[int, list[tuple[int, int]]]
    judge: dict[int, list[tuple[int, int]]]
    reference: dict[int, list[int]]


def _sample_prompts(fact_ids: list[int], records: dict[int, dict], config: CompareConfig, salt: str,
                    i: int) -> list[tuple[int, int]]:
    pool = [(j, k) for j in fact_ids for k in records[j]["prompts"]]
    rng = np.random.default_rng(derived_seed(config.seed, salt, i))
    take = rng.choice(len(pool), size=min(config.other_prompts, len(pool)), replace=False) if pool else []
    return [pool[t] for t in sorted(int(t) for t in take)]


def collateral_samples(records: dict[int, dict], config: CompareConfig,
                       groups: dict[str, list[int]] | None = None) -> Collateral:
    """Per fact i: the scored facts of other relations in i's group (`fact_groups`) are split by gold
    answer (case-folded) into two seeded halves (`kneuron.selection.answer_split`, seed
    `derived_seed(seed, "collateral", i)`; the measuring half takes the larger; `discover --specific
    effect` splits by the same function).  A seeded sample of `config.other_prompts` selection
    prompts of the measuring facts measures i's collateral damage; as many of the other half's judge
    i's neurons (rule effect), and the other half's refined sets are those rule other_relations
    looks at.  So what measures the
    collateral shares no prompt, fact or gold answer with what chose the neurons."""
    if groups is None:
        groups = {"all": [i for i in sorted(records) if "skipped" not in records[i]]}
    measure, judge, reference = {}, {}, {}
    for group in groups.values():
        for i in group:
            cand = [j for j in group if records[j]["relation"] != records[i]["relation"]]
            mine, theirs = answer_split(i, cand, [records[j]["object"] for j in cand], config.seed)
            measure[i] = _sample_prompts(mine, records, config, "other", i)
            judge[i] = _sample_prompts(theirs, records, config, "specific", i)
            reference[i] = theirs
    return Collateral(measure, judge, reference)


def specific_candidates(kn, facts: FactSet, records: dict[int, dict], selection: Selection, config: CompareConfig,
                        collateral: Collateral, fractions) -> dict:
    """Row ig_specific: the refined sets, and each half's, narrowed by `config.specific_rule`, as
    {fraction: (sets, half sets)} for each fraction of rule effect ({None: ...} for rule other_relations).
    A fact is judged on its own selection prompts (a half: that half's) and, on the other relations'
    side, only on `collateral.judge` / `collateral.reference`: never on what measures its collateral."""
    refined, halves = selection.sets[("ig_refined", 0)], selection.half_sets[("ig_refined", 0)]
    ids = list(refined)
    if config.specific_rule == "other_relations":
        rels = [records[i]["relation"] for i in ids]
        pos = {i: n for n, i in enumerate(ids)}
        ref = [[pos[j] for j in collateral.reference.get(i, ()) if j in pos] for i in ids]
        full = specific_sets(rels, [refined[i] for i in ids], ref)
        parts = [specific_sets(rels, [halves[i][h] for i in ids], ref) for h in (0, 1)]
        return {None: (dict(zip(ids, full)), {i: (parts[0][n], parts[1][n]) for n, i in enumerate(ids)})}

    def task(i: int, neurons, positions) -> SpecificityTask:
        own = [(facts.facts[i].prompts[records[i]["prompts"][k]], facts.facts[i].object) for k in positions]
        return SpecificityTask(neurons, own, [(facts.facts[j].prompts[k], facts.facts[j].object)
                                              for j, k in collateral.judge.get(i, ())])

    tasks = [task(i, refined[i], range(len(records[i]["prompts"]))) for i in ids]
    tasks += [task(i, halves[i][h], records[i]["halves"][h]) for h in (0, 1) for i in ids]
    changes = single_neuron_changes(kn, tasks)  # measured once, whatever the fractions
    n, out = len(ids), {}
    for fraction in fractions:
        kept = [effect_specific(t.neurons, own, other, fraction) for t, (own, other) in zip(tasks, changes)]
        out[fraction] = (dict(zip(ids, kept[:n])), {i: (kept[n + m], kept[2 * n + m]) for m, i in enumerate(ids)})
    return out


def choose_fraction(rows: dict[float, dict], max_collateral: float) -> float:
    """The tuned fraction of rule effect, from its rows on the tune facts: among the fractions whose set
    lowers its facts (held-out suppression where there is one, else in-sample) and whose collateral
    damage is at most `max_collateral` of that, the one that lowers them most; if none, the one with
    the smallest collateral / own ratio.  Ties go to the smaller fraction."""
    def own(row):
        return row["suppress_heldout"] if row["suppress_heldout"] == row["suppress_heldout"] else row["suppress"]

    ratio = {f: collateral_ratio(r) for f, r in rows.items()}
    ok = [f for f, r in rows.items() if own(r) < 0 and ratio[f] <= max_collateral]
    if ok:
        return min(ok, key=lambda f: (own(rows[f]), f))
    return min(rows, key=lambda f: (ratio[f] if ratio[f] == ratio[f] else float("inf"), f))


def collateral_ratio(row: dict) -> float:
    """|other_relations_suppress| / |own suppression| (held-out where measured); NaN unless the set lowers its facts."""
    own = row["suppress_heldout"] if row["suppress_heldout"] == row["suppress_heldout"] else row["suppress"]
    return abs(row["other_relations_suppress"]) / abs(own) if own < 0 else float("nan")


def row_key(method: str, budget: int, config: CompareConfig, fraction: float | None = None, split: str = "all") -> str:
    """The effects journal's key of a row; ig_specific's names its rule (and fraction), a split row its split."""
    tail = "" if split == "all" else f"|{split}"
    if method != "ig_specific":
        return f"{method}@{budget}{tail}"
    fraction = config.specific_fraction if fraction is None else fraction
    rule = config.specific_rule + (f":{fraction:g}" if config.specific_rule == "effect" else "")
    return f"ig_specific[{rule}]@{budget}{tail}"


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
    """suppress, amplify (on the selection prompts, and on the held-out ones), other_relations_suppress and
    consistency of one (method, budget) row, over the facts of `sets`."""
    own = [(i, k) for i in sets for k in records[i]["prompts"]]
    held = [(i, k) for i in sets for k in records[i].get("heldout", ())]
    both = own + held
    prompts = [facts.facts[i].prompts[k] for i, k in both]
    answers = [facts.facts[i].object for i, _ in both]
    neuron_sets = [sets[i] for i, _ in both]
    rels = [records[i]["relation"] for i, _ in both]
    p_orig = torch.tensor([clean[(i, k)] for i, k in both], dtype=torch.float64)
    n = len(own)
    row = {}
    for name, factor in (("suppress", 0.0), ("amplify", 2.0)):
        p_new = scaled_probabilities(kn, prompts, answers, neuron_sets, factor).double().cpu()
        row[name] = _relative_change(rels[:n], p_orig[:n], p_new[:n])
        row[f"{name}_heldout"] = _relative_change(rels[n:], p_orig[n:], p_new[n:])  # NaN without held-out prompts
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
    row["heldout_facts"], row["heldout_prompts"] = len({i for i, _ in held}), len(held)
    return row


@dataclass
class CompareResult:
    out: CompareDir
    methods: pd.DataFrame
    neurons: pd.DataFrame
    config: CompareConfig
    resumed_facts: int = 0
    heldout_note: str = ""  # one line when facts have no held-out prompt (or held-out prompts are off)
    tuning: pd.DataFrame | None = None  # tune_share > 0 with rule effect: the fraction sweep on the tune facts
    specific_fraction: float | None = None  # the effect rule's fraction used for row ig_specific


def _check_config(config: CompareConfig) -> None:
    config.methods = check_methods(config.methods)
    config.budgets = check_budgets(config.budgets)
    check_specific_rule(config.specific_rule, config.specific_fraction)
    check_heldout(config.heldout)
    if config.limit_facts is not None and config.limit_facts < 1:
        raise KneuronError(f"--limit-facts must be >= 1, got {config.limit_facts}")
    if config.prompts_per_fact is not None and config.prompts_per_fact < 1:
        raise KneuronError(f"--prompts-per-fact must be >= 1, got {config.prompts_per_fact}")
    if config.other_prompts < 0:
        raise KneuronError(f"other prompts per fact must be >= 0, got {config.other_prompts}")
    if not 0.0 <= config.tune_share < 1.0:
        raise KneuronError(f"--tune-share must be in [0, 1), got {config.tune_share}")
    if config.tune_share:
        if not config.specific_fractions:
            raise KneuronError("--specific-fractions: no fraction given")
        for fraction in config.specific_fractions:
            check_specific_rule(config.specific_rule, fraction)
        config.specific_fractions = sorted({float(f) for f in config.specific_fractions})


def _run_facts(run) -> FactSet:
    """The run's facts, each with the prompts discovery attributed, then those it held out (if any)."""
    held = getattr(run, "heldout", None)
    if held is None:
        return run.facts
    from kneuron.data.facts import Fact

    return FactSet([Fact(f.relation, f.subject, f.object, list(f.prompts) + list(h.prompts))
                    for f, h in zip(run.facts.facts, held.facts)], run.facts.relations, run.facts.source)


def heldout_summary(records: dict[int, dict], config: CompareConfig, k: int | None = None) -> dict:
    """How many scored facts have held-out prompts, and the one warning line when some have none.
    `k`: the held-out prompts per fact when they are not `config.heldout` (a run made with --holdout K)."""
    k = config.heldout if k is None else k
    done = [r for r in records.values() if "skipped" not in r]
    without = sum(1 for r in done if not r.get("heldout"))
    sources = sorted({r.get("heldout_from", "compare") for r in done if r.get("heldout")})
    note = ""
    if k == 0 and not sources:
        note = "held-out prompts are off (--heldout 0): every effect is measured on the prompts that chose the neurons"
    elif without:
        note = (f"{without} of {len(done)} facts have fewer than {k} + 3 usable prompts: they have no "
                "held-out prompt (their effects are in-sample only; the held-out columns leave them out)")
    return {"per_fact": k, "facts_with": len(done) - without, "facts_without": without,
            "prompts": sum(len(r.get("heldout", ())) for r in done), "from": ",".join(sources) or "none",
            "note": note}


def compare(kn, facts: FactSet, out_dir, config: CompareConfig, progress: Callable[[str], None] | None = None,
            run=None) -> CompareResult:
    """Score, select and intervene for every (method, budget); write and return the tables.

    `run`: a `kneuron.experiments.rundata.RunData` whose IG to reuse (see the module docstring).
    """
    _check_config(config)
    say = progress or (lambda text: None)
    if run is not None:
        facts = _run_facts(run)  # the run's facts, with the prompts it used (and those it held out)
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
    heldout = heldout_summary(out_records, config, run.config.holdout if run is not None and run.config.holdout
                              else None)
    if heldout["note"]:
        say(f"warning: {heldout['note']}")
    run_sets = run_p = None
    # The run's refined sets are reused only when they were chosen on the selection prompts alone.
    reuse = run is not None and not any(r.get("heldout") and r.get("heldout_from") == "compare"
                                        for r in out_records.values())
    if reuse and "ig" in config.methods:
        run_sets = {i: [(n.layer, n.index) for n in s] for i, s in run.sets("kn").items()}
        run_p = {rel: (s.get("kn") or {}).get("p") for rel, s in run.summary.items()}
    selection = select(out_records, config, run_sets, run_p)
    groups = fact_groups(out_records, config)
    reported = "test" if "test" in groups else "all"
    collateral = collateral_samples(out_records, config, groups)
    others = collateral.measure
    clean = _clean(kn, facts, out_records, others)
    chosen, tuning = None, {}
    effects = out.effect_log()
    try:
        with prefix_caches(kn):  # a causal LM computes each prompt's prefix once for all rows
            if "ig" in config.methods:
                say(f"selecting ig_specific (rule {config.specific_rule})")
                tuned = "tune" in groups and config.specific_rule == "effect"
                fractions = config.specific_fractions if tuned else [config.specific_fraction]
                candidates = specific_candidates(kn, facts, out_records, selection, config, collateral, fractions)
                if tuned:
                    tune = set(groups["tune"])
                    jobs = [(row_key("ig_specific", 0, config, f, "tune"), "ig_specific", 0, "tune",
                             {i: s for i, s in sets.items() if i in tune},
                             {i: h for i, h in halves.items() if i in tune}) for f, (sets, halves) in candidates.items()]
                    done = _measure_rows(kn, facts, out_records, jobs, others, clean, effects, say)
                    tuning = {f: done[job[0]] for f, job in zip(candidates, jobs)}
                    chosen = choose_fraction(tuning, config.tune_max_collateral)
                else:
                    chosen = next(iter(candidates))
                selection.sets[("ig_specific", 0)], selection.half_sets[("ig_specific", 0)] = candidates[chosen]
            ids = set(groups[reported])
            keys = {(method, budget): row_key(method, budget, config, chosen, reported)
                    for method, budget in selection.sets}
            # The variable-size rows first: they are the ones a short session most needs.
            jobs = [(keys[(method, budget)], method, budget, reported, {i: s for i, s in sets.items() if i in ids},
                     {i: h for i, h in selection.half_sets[(method, budget)].items() if i in ids})
                    for (method, budget), sets in sorted(selection.sets.items(), key=lambda kv: kv[0][1] != 0)]
            done = _measure_rows(kn, facts, out_records, jobs, others, clean, effects, say)
    finally:
        effects.close()
    methods = _methods_table([done[keys[row]] for row in selection.sets], out_records, config)
    tuning_table = _tuning_table(tuning, chosen) if tuning else None
    neurons = _neurons_table(selection, out_records)
    out.finish(methods, neurons, {
        "p": selection.p, "skipped": {i: r["skipped"] for i, r in out_records.items() if "skipped" in r},
        "heldout": heldout, "split": {name: ids for name, ids in groups.items()},
        "specific": {"rule": config.specific_rule, "fraction": chosen, "tuned": bool(tuning),
                     "refined_from": "run" if run_sets is not None else "selection prompts"}}, tuning_table)
    return CompareResult(out, methods, neurons, config, resumed, heldout["note"], tuning_table, chosen)


def _clean(kn, facts: FactSet, records: dict, others) -> dict:
    """P(gold) of every prompt a row is measured on, by the same route as the scaled ones (no neuron
    scaled), so both carry the same rounding."""
    needed = sorted({(i, k) for i in others for k in list(records[i]["prompts"]) + list(records[i].get("heldout", ()))}
                    | {pk for v in others.values() for pk in v})
    return dict(zip(needed, scaled_probabilities(kn, [facts.facts[i].prompts[k] for i, k in needed],
                                                 [facts.facts[i].object for i, _ in needed], [[]] * len(needed),
                                                 1.0).double().cpu().tolist()))


def _measure_rows(kn, facts, records, jobs, others, clean, effects, say) -> dict:
    """Each job's row (key, method, budget, split, sets, half sets), journaled in `effects`; returns the journal's records."""
    for key, method, budget, split, sets, halves in jobs:
        if key in effects:
            continue
        say(f"intervening: {method} at budget {budget}" + ("" if split == "all" else f" ({split} facts)"))
        row = measure_row(kn, facts, records, sets, halves, others, clean)
        effects.append({"row": key, "method": method, "budget": budget, "split": split} | row)
    return effects.records


def _tuning_table(rows: dict[float, dict], chosen: float) -> pd.DataFrame:
    out = [{**{c: rec.get(c) for c in TUNING_COLUMNS}, "specific_fraction": f, "chosen": f == chosen,
            "collateral_ratio": collateral_ratio(rec)} for f, rec in sorted(rows.items())]
    return pd.DataFrame(out, columns=TUNING_COLUMNS)


def _methods_table(effects: list[dict], records: dict, config: CompareConfig) -> pd.DataFrame:
    done = [r for r in records.values() if "skipped" not in r]
    prompts = sum(len(r["prompts"]) for r in done)

    def per_prompt(method):
        secs = [r["seconds"].get(method) for r in done]
        return float("nan") if not prompts or any(s is None for s in secs) else sum(secs) / prompts

    rows = []
    for rec in effects:
        source = "ig" if rec["method"] in REFINED_ROWS else rec["method"]
        rows.append({**{c: rec.get(c) for c in COLUMNS}, "split": rec.get("split", "all"),
                     "seconds_per_prompt": per_prompt(source)})
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
