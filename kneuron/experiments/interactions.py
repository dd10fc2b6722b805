"""How a fact's neurons work together: single and pair suppression, interactions, degenerate sets.

The paper asks how knowledge neurons cooperate; AMIG (Chen et al., AAAI 2024) found "degenerate"
pairs, two neurons each dispensable alone whose joint suppression removes the fact.  For a set of
neurons (default: the fact's top 20 by integrated gradients, summed over its prompts) this measures

* the effect of suppressing each neuron alone and each pair, as the paper's relative change of the
  mean gold probability over the fact's prompts, (mean p_suppressed - mean p) / mean p;
* the interaction of a pair: its joint effect minus the sum of its two single effects
  (negative: together they remove more than their parts; positive: they overlap);
* AMIG's degenerate pairs, with their thresholds as options: each alone keeps >= 80% of the gold
  probability, both together keep < 75%;
* beyond pairs, a greedy search for a small set, none of whose members alone removes much, whose
  joint suppression removes most of the gold probability.  The search adds one neuron at a time
  (the one that lowers the joint probability most), so its set is greedy, not necessarily the smallest;
* a null for both counts: the same computation on random neurons at matched activation levels.

The null (`interaction_null`).  For each studied neuron, a random neuron of the same layer whose
activation at the blank falls in the same quantile bin of that layer: activations are the mean
over the fact's prompts of `kn.activations(prompt, answer)`; a layer's neurons are ranked by it
(ties broken by index) and cut into `bins` bins of equal count, bin = rank * bins // width.  The
random neurons are drawn uniformly from the bin, never one of the studied neurons, without
replacement within a draw; the draw goes through the studied neurons in order with one
`numpy.random.default_rng(seed)` over all repeats, each neuron taking candidates[rng.integers(n)]
of its bin's sorted free indices.  Where a bin holds fewer free neurons than studied ones, `bins`
is halved until every bin has enough (down to 1: the layer alone); the bins used are recorded.
Each of the `repeats` random sets gets the same single, pair and greedy computation, with the same
thresholds, as the studied set.  The observed count is reported against that null: its mean, a
95% interval (the null's 2.5th percentile rounded down and 97.5th rounded up to draws, so it holds
at least 95% of them) and a one-sided empirical p-value, (1 + #null draws at least as extreme) /
(1 + repeats): more degenerate pairs, or a greedy set as small or smaller (a set never reached
counts as infinitely large).

Every (set, prompt) combination is one row of `scaled_probabilities`, so the 20 singles and 190
pairs of a prompt run in batched forward passes, not 210 calls (the null's sets too, and the
greedy searches of all its draws step by step together).  On a causal LM each
prompt's prefix before the blank is computed once for all of them (`prefix_caches`): only the
blank position runs per row (`benchmarks/bench_interactions.py` measures the gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from kneuron.errors import KneuronError
from kneuron.interventions.cached import prefix_caches
from kneuron.neurons import Neuron

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

DEFAULT_TOP = 20
KEEP_ALONE = 0.8  # AMIG: each neuron alone keeps at least this share of the gold probability
DROP_JOINT = 0.75  # AMIG: both together keep less than this share
REMOVE_MOST = 0.5  # greedy set: joint suppression keeps less than this share ("removes most")
NULL_REPEATS = 20  # random sets per null
NULL_BINS = 10  # activation quantile bins per layer for the null's matching


@dataclass
class Interactions:
    """Single, pair and set suppression effects of one fact's neurons."""

    answer: str
    prompts: list[str]
    neurons: list[Neuron]
    p: float  # mean gold probability over the prompts, nothing suppressed
    single: dict[Neuron, float]  # mean gold probability with the neuron suppressed
    pair: dict[tuple[Neuron, Neuron], float]  # mean gold probability with both suppressed
    greedy: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    null: dict = field(default_factory=dict)  # `interaction_null`: observed counts against random neurons

    def effect(self, kept: float) -> float:
        """Relative change of the mean gold probability (the paper's suppression metric)."""
        return (kept - self.p) / self.p if self.p else float("nan")

    def single_effects(self) -> dict[Neuron, float]:
        return {n: self.effect(v) for n, v in self.single.items()}

    def pair_effects(self) -> dict[tuple[Neuron, Neuron], float]:
        return {ab: self.effect(v) for ab, v in self.pair.items()}

    def interaction(self, a: Neuron, b: Neuron) -> float:
        """Joint effect minus the sum of the single effects."""
        key = (a, b) if (a, b) in self.pair else (b, a)
        return self.effect(self.pair[key]) - self.effect(self.single[a]) - self.effect(self.single[b])

    def interaction_matrix(self) -> torch.Tensor:
        """(k, k) interactions in `neurons` order; the diagonal holds the single effects."""
        k = len(self.neurons)
        out = torch.zeros(k, k, dtype=torch.float64)
        for i, a in enumerate(self.neurons):
            out[i, i] = self.effect(self.single[a])
            for j in range(i + 1, k):
                out[i, j] = out[j, i] = self.interaction(a, self.neurons[j])
        return out

    def degenerate_pairs(self, keep_alone: float | None = None,
                         drop_joint: float | None = None) -> list[tuple[Neuron, Neuron]]:
        """AMIG's degenerate pairs: each alone keeps >= keep_alone of the gold probability, both
        together keep < drop_joint of it (shares of the mean gold probability).  The thresholds
        default to the ones this result was computed with (its settings), so the count matches the
        null drawn beside it."""
        keep = self.settings.get("keep_alone", KEEP_ALONE) if keep_alone is None else keep_alone
        drop = self.settings.get("drop_joint", DROP_JOINT) if drop_joint is None else drop_joint
        return degenerate_pairs(self.p, self.single, self.pair, keep, drop)

    def table(self) -> pd.DataFrame:
        """One row per pair: both single effects, the joint effect, the interaction, degenerate or not."""
        degenerate = set(self.degenerate_pairs())
        rows = []
        for (a, b), v in self.pair.items():
            rows.append({"a": str(a), "b": str(b), "effect_a": self.effect(self.single[a]),
                         "effect_b": self.effect(self.single[b]), "effect_ab": self.effect(v),
                         "interaction": self.interaction(a, b), "degenerate": (a, b) in degenerate})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"answer": self.answer, "prompts": self.prompts, "settings": self.settings, "p": self.p,
                "neurons": [[n.layer, n.index] for n in self.neurons],
                "single_effects": {str(n): e for n, e in self.single_effects().items()},
                "pairs": self.table().to_dict(orient="records"),
                "degenerate_pairs": [[str(a), str(b)] for a, b in self.degenerate_pairs()],
                "greedy": self.greedy, "null": self.null}

    def null_table(self) -> pd.DataFrame:
        """One row per counted statistic (degenerate pairs, greedy set size): observed, null mean, 95%
        interval of the null, one-sided p-value; empty without a null or where none could be drawn.
        `null_defined`: share of null draws with a value (a greedy set reached; None = never reached,
        the interval's None = +infinity; the greedy mean is over the reached draws)."""
        rows = []
        for stat in NULL_STATISTICS:
            c = self.null.get(stat)
            if c:
                rows.append({"statistic": stat, "observed": c["observed"], "null_mean": c["null_mean"],
                             "null_low": c["null_low"], "null_high": c["null_high"],
                             "null_defined": c["null_defined"], "p_value": c["p_value"],
                             "alternative": c["alternative"], "repeats": self.null["repeats"],
                             "seed": self.null["seed"], "bins": self.null["bins"]})
        return pd.DataFrame(rows)


NULL_STATISTICS = ("degenerate_pairs", "greedy_size")


def degenerate_pairs(p: float, single: dict, pair: dict, keep_alone: float = KEEP_ALONE,
                     drop_joint: float = DROP_JOINT) -> list[tuple[Neuron, Neuron]]:
    """AMIG's degenerate pairs from mean gold probabilities: nothing suppressed (`p`), one neuron
    (`single`), two (`pair`)."""
    if not p:
        return []
    return [(a, b) for (a, b), v in pair.items()
            if single[a] / p >= keep_alone and single[b] / p >= keep_alone and v / p < drop_joint]


def mean_probabilities(kn: KnowledgeModel, prompts: Sequence[str], answer: str, sets: Sequence[Sequence[Neuron]],
                       batch: int = 256, max_rows: int = 4096) -> list[float]:
    """Mean gold probability over `prompts` with each set suppressed; batched calls of at most
    `max_rows` (set, prompt) rows (bounds the per-row scale masks).  A causal LM computes each
    prompt's prefix once (`kneuron.interventions.prefix_caches`; an open one is reused)."""
    from kneuron.interventions.activations import scaled_probabilities

    if not sets:
        return []
    per_call = max(1, max_rows // len(prompts))
    out: list[float] = []
    with prefix_caches(kn):
        for start in range(0, len(sets), per_call):
            chunk = sets[start:start + per_call]
            rows_prompts = [q for _ in chunk for q in prompts]
            rows_sets = [s for s in chunk for _ in prompts]
            probs = scaled_probabilities(kn, rows_prompts, [answer] * len(rows_prompts), rows_sets, 0.0, batch=batch)
            out += probs.reshape(len(chunk), len(prompts)).double().mean(1).tolist()
    return out


def top_neurons(kn: KnowledgeModel, prompts: Sequence[str], answer: str, k: int = DEFAULT_TOP, steps: int = 20) -> list[Neuron]:
    """The fact's k neurons of highest integrated-gradients score summed over its prompts."""
    return top_of_results(kn.attribute(list(prompts), answer, steps=steps), k)


def top_of_results(results, k: int = DEFAULT_TOP) -> list[Neuron]:
    """The k neurons of highest score summed over attribution results (one fact's prompts)."""
    total = sum(r.scores.double() for r in results)
    flat = torch.topk(total.flatten(), min(k, total.numel())).indices.tolist()
    width = total.shape[1]
    return [Neuron(i // width, i % width) for i in flat]


def greedy_set(kn: KnowledgeModel, prompts: Sequence[str], answer: str, p: float, single: dict[Neuron, float], *,
               keep_alone: float = KEEP_ALONE, remove: float = REMOVE_MOST, max_size: int | None = None,
               batch: int = 256) -> dict:
    """Grow a set from neurons that are each dispensable (alone keep >= keep_alone of the gold
    probability), adding each time the one that lowers the joint probability most, until the set
    keeps < `remove` of it.  Returns the set, its size (None if never reached) and the path.  A greedy
    set: small, not necessarily the smallest such set."""
    return greedy_sets(kn, prompts, answer, p, [single], keep_alone=keep_alone, remove=remove,
                       max_size=max_size, batch=batch)[0]


def greedy_sets(kn: KnowledgeModel, prompts: Sequence[str], answer: str, p: float, singles: Sequence[dict[Neuron, float]], *,
                keep_alone: float = KEEP_ALONE, remove: float = REMOVE_MOST, max_size: int | None = None,
                batch: int = 256) -> list[dict]:
    """`greedy_set` for several neuron sets (one `single` dict each) in lockstep: each step's
    candidates of every unfinished search go through one batched call."""
    pools = [[n for n, v in single.items() if p and v / p >= keep_alone] for single in singles]
    chosen: list[list[Neuron]] = [[] for _ in pools]
    paths: list[list[dict]] = [[] for _ in pools]
    limits = [len(pool) if max_size is None else min(max_size, len(pool)) for pool in pools]
    results: list[dict | None] = [None] * len(pools)

    def finish(r: int, reached: bool) -> None:
        kept = paths[r][-1]["kept"] if paths[r] else 1.0
        results[r] = {"neurons": [str(n) for n in chosen[r]], "size": len(chosen[r]) if reached else None,
                      "kept": kept, "reached": reached, "path": paths[r], "pool": len(pools[r]), "remove": remove}

    for r in range(len(pools)):
        if limits[r] == 0:
            finish(r, False)
    while any(x is None for x in results):
        active = [r for r, x in enumerate(results) if x is None]
        candidates = {r: [n for n in pools[r] if n not in chosen[r]] for r in active}
        kept = mean_probabilities(kn, prompts, answer, [chosen[r] + [n] for r in active for n in candidates[r]],
                                  batch=batch)
        at = 0
        for r in active:
            mine = kept[at:at + len(candidates[r])]
            at += len(candidates[r])
            best = min(range(len(mine)), key=lambda i: mine[i])
            chosen[r].append(candidates[r][best])
            paths[r].append({"added": str(candidates[r][best]), "kept": mine[best] / p})
            if mine[best] / p < remove:
                finish(r, True)
            elif len(chosen[r]) >= limits[r]:
                finish(r, False)
    return results


def blank_activations(kn: KnowledgeModel, prompts: Sequence[str], answer: str) -> torch.Tensor:
    """(num_layers, num_neurons) activations at the blank, mean over the prompts."""
    return torch.stack([kn.activations(q, answer).double().cpu() for q in prompts]).mean(0)


def activation_bins(acts: torch.Tensor, bins: int) -> torch.Tensor:
    """(layers, width) quantile bin of each neuron within its layer: rank * bins // width, ranks by
    activation, ties broken by index (equal-count bins)."""
    width = acts.shape[1]
    order = torch.from_numpy(np.argsort(acts.numpy(), axis=1, kind="stable"))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(width).expand_as(order).contiguous())
    return rank * bins // width


def _free_by_cell(neurons: Sequence[Neuron], bin_of: torch.Tensor) -> dict[tuple[int, int], list[int]] | None:
    """Each studied neuron's (layer, bin) cell -> its sorted free indices (not studied); None where a
    cell has fewer free neurons than studied ones."""
    studied = set(neurons)
    cells: dict[tuple[int, int], list[int]] = {}
    need: dict[tuple[int, int], int] = {}
    for n in neurons:
        cell = (n.layer, int(bin_of[n.layer, n.index]))
        need[cell] = need.get(cell, 0) + 1
        if cell not in cells:
            row = bin_of[n.layer]
            cells[cell] = [j for j in torch.nonzero(row == cell[1]).flatten().tolist()
                           if Neuron(n.layer, j) not in studied]
    return None if any(len(cells[c]) < k for c, k in need.items()) else cells


def matched_random_sets(acts: torch.Tensor, neurons: Sequence[Neuron], repeats: int = NULL_REPEATS,
                        seed: int = 0, bins: int = NULL_BINS) -> tuple[list[list[Neuron]], int]:
    """`repeats` random sets matched to `neurons` (module docstring): each neuron's counterpart has
    the same layer and activation bin, and is not studied.  Returns the sets and the bins used
    (halved from `bins` until every bin has enough free neurons); raises KneuronError where even a
    whole layer has too few."""
    neurons = list(neurons)
    used = max(1, int(bins))
    while True:
        cells = _free_by_cell(neurons, activation_bins(acts, used))
        if cells is not None or used == 1:
            break
        used = max(1, used // 2)
    if cells is None:
        raise KneuronError("too few unstudied neurons in a layer to draw a matched random set")
    bin_of = activation_bins(acts, used)
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(repeats):
        taken: set[Neuron] = set()
        drawn = []
        for n in neurons:
            free = [j for j in cells[(n.layer, int(bin_of[n.layer, n.index]))] if Neuron(n.layer, j) not in taken]
            pick = Neuron(n.layer, free[int(rng.integers(len(free)))])
            taken.add(pick)
            drawn.append(pick)
        sets.append(drawn)
    return sets, used


def compare_to_null(observed, null: Sequence, alternative: str) -> dict:
    """Observed count against null draws: mean, 95% interval (2.5th percentile rounded down, 97.5th
    rounded up to draws), one-sided empirical p-value (1 + #draws at least as extreme) / (1 + draws).
    `alternative` "greater" (more is striking) or "less"; None (a greedy set never reached) counts
    as +infinity; the mean is over the draws that are not None."""
    inf = float("inf")
    values = np.array([inf if v is None else float(v) for v in null], dtype=float)
    obs = inf if observed is None else float(observed)
    extreme = values >= obs if alternative == "greater" else values <= obs
    finite = values[np.isfinite(values)]

    def plain(x):
        return None if not np.isfinite(x) else (int(x) if float(x).is_integer() else float(x))

    return {"observed": observed, "null": list(null),
            "null_mean": float(finite.mean()) if len(finite) else None,
            "null_low": plain(np.percentile(values, 2.5, method="lower")) if len(values) else None,
            "null_high": plain(np.percentile(values, 97.5, method="higher")) if len(values) else None,
            "null_defined": float(len(finite) / len(values)) if len(values) else None,
            "p_value": float((1 + extreme.sum()) / (1 + len(values))), "alternative": alternative}


def interaction_null(kn: KnowledgeModel, prompts: Sequence[str], answer: str, neurons: Sequence[Neuron], p: float, *,
                     observed_degenerate: int, observed_greedy: dict | None = None,
                     repeats: int = NULL_REPEATS, seed: int = 0, bins: int = NULL_BINS,
                     keep_alone: float = KEEP_ALONE, drop_joint: float = DROP_JOINT, remove: float = REMOVE_MOST,
                     batch: int = 256) -> dict:
    """Degenerate pairs (and, with `observed_greedy`, the greedy set's size) among `repeats` random
    sets matched to `neurons` by layer and activation bin (module docstring), against the observed
    counts.  Where no matched set can be drawn: {"available": False, "reason": ...}."""
    out = {"repeats": repeats, "seed": seed, "bins_asked": bins, "matching": "same layer, same activation "
           "quantile bin at the blank (mean over the prompts), not a studied neuron"}
    try:
        sets, used = matched_random_sets(blank_activations(kn, prompts, answer), neurons, repeats, seed, bins)
    except KneuronError as exc:
        return {**out, "available": False, "reason": str(exc), "bins": None}
    pairs = [list(combinations(drawn, 2)) for drawn in sets]
    kept = mean_probabilities(kn, prompts, answer, [[n] for drawn in sets for n in drawn]
                              + [list(x) for ab in pairs for x in ab], batch=batch)
    k, m, after = len(neurons), len(pairs[0]) if pairs else 0, len(sets) * len(neurons)
    singles = [dict(zip(drawn, kept[r * k:(r + 1) * k])) for r, drawn in enumerate(sets)]
    joint = [dict(zip(ab, kept[after + r * m:after + (r + 1) * m])) for r, ab in enumerate(pairs)]
    degenerate = [len(degenerate_pairs(p, s, j, keep_alone, drop_joint)) for s, j in zip(singles, joint)]
    sizes = [g["size"] for g in greedy_sets(kn, prompts, answer, p, singles, keep_alone=keep_alone, remove=remove,
                                            batch=batch)] if observed_greedy is not None else []
    out.update(available=True, bins=used, draws=[[str(n) for n in s] for s in sets],
               degenerate_pairs=compare_to_null(observed_degenerate, degenerate, "greater"))
    if observed_greedy is not None:
        out["greedy_size"] = compare_to_null(observed_greedy.get("size"), sizes, "less")
    return out


def neuron_interactions(kn: KnowledgeModel, prompts: Sequence[str], answer: str, neurons=None, *, top: int = DEFAULT_TOP,
                        steps: int = 20, keep_alone: float = KEEP_ALONE, drop_joint: float = DROP_JOINT,
                        remove: float = REMOVE_MOST, greedy: bool = True, batch: int = 256,
                        null_repeats: int = NULL_REPEATS, null_seed: int = 0,
                        null_bins: int = NULL_BINS) -> Interactions:
    """Single and pair suppression effects of a fact's neurons, their interactions, degenerate pairs,
    (with `greedy`) the jointly decisive set a greedy search finds (greedy: not necessarily the
    smallest), and (with `null_repeats` > 0) both counts against `null_repeats` random sets matched
    by layer and activation bin (`interaction_null`, seeded with `null_seed`; `Interactions.null`).

    `neurons`: the neurons to study (default: the fact's `top` neurons by integrated gradients).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("neuron_interactions needs at least one prompt")
    if null_repeats < 0 or null_bins < 1:
        raise KneuronError(f"null_repeats must be >= 0 and null_bins >= 1, got {null_repeats} and {null_bins}")
    given = neurons is not None
    neurons = kn.neurons(neurons) if given else top_neurons(kn, prompts, answer, top, steps)
    neurons = list(dict.fromkeys(neurons))
    if len(neurons) < 2:
        raise KneuronError(f"interactions need at least 2 distinct neurons, got {len(neurons)}")
    with prefix_caches(kn):  # one store of prefixes for the pairs, the greedy search and the null
        p = float(kn.probabilities(prompts, answer).double().mean())
        pairs = list(combinations(neurons, 2))
        kept = mean_probabilities(kn, prompts, answer, [[n] for n in neurons] + [list(ab) for ab in pairs], batch=batch)
        single = dict(zip(neurons, kept[:len(neurons)]))
        pair = dict(zip(pairs, kept[len(neurons):]))
        settings = {"model": kn.name, "neurons_from": "given" if given else f"top {top} by IG", "steps": steps,
                    "keep_alone": keep_alone, "drop_joint": drop_joint, "remove": remove, "batch": batch,
                    "null_repeats": null_repeats, "null_seed": null_seed, "null_bins": null_bins}
        found = greedy_set(kn, prompts, answer, p, single, keep_alone=keep_alone, remove=remove, batch=batch) \
            if greedy else {}
        null = interaction_null(kn, prompts, answer, neurons, p,
                                observed_degenerate=len(degenerate_pairs(p, single, pair, keep_alone, drop_joint)),
                                observed_greedy=found if greedy else None, repeats=null_repeats, seed=null_seed,
                                bins=null_bins, keep_alone=keep_alone, drop_joint=drop_joint, remove=remove,
                                batch=batch) if null_repeats else {}
        return Interactions(answer, prompts, neurons, p, single, pair, found, settings, null)


__all__ = [
    "DROP_JOINT",
    "Interactions",
    "KEEP_ALONE",
    "NULL_BINS",
    "NULL_REPEATS",
    "NULL_STATISTICS",
    "REMOVE_MOST",
    "activation_bins",
    "blank_activations",
    "compare_to_null",
    "degenerate_pairs",
    "greedy_set",
    "greedy_sets",
    "interaction_null",
    "matched_random_sets",
    "mean_probabilities",
    "neuron_interactions",
    "top_neurons",
    "top_of_results",
]
