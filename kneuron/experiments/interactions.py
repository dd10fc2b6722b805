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
  joint suppression removes most of the gold probability.

Every (set, prompt) combination is one row of `scaled_probabilities`, so the 20 singles and 190
pairs of a prompt run as one batched forward pass, not 210 calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd
import torch

from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

DEFAULT_TOP = 20
KEEP_ALONE = 0.8  # AMIG: each neuron alone keeps at least this share of the gold probability
DROP_JOINT = 0.75  # AMIG: both together keep less than this share
REMOVE_MOST = 0.5  # greedy set: joint suppression keeps less than this share ("removes most")


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

    def degenerate_pairs(self, keep_alone: float = KEEP_ALONE, drop_joint: float = DROP_JOINT) -> list[tuple[Neuron, Neuron]]:
        """AMIG's degenerate pairs: each alone keeps >= keep_alone of the gold probability, both
        together keep < drop_joint of it (shares of the mean gold probability)."""
        if not self.p:
            return []
        return [(a, b) for (a, b), v in self.pair.items()
                if self.single[a] / self.p >= keep_alone and self.single[b] / self.p >= keep_alone
                and v / self.p < drop_joint]

    def table(self) -> pd.DataFrame:
        """One row per pair: both single effects, the joint effect, the interaction, degenerate or not."""
        degenerate = set(self.degenerate_pairs(self.settings.get("keep_alone", KEEP_ALONE),
                                               self.settings.get("drop_joint", DROP_JOINT)))
        rows = []
        for (a, b), v in self.pair.items():
            rows.append({"a": str(a), "b": str(b), "effect_a": self.effect(self.single[a]),
                         "effect_b": self.effect(self.single[b]), "effect_ab": self.effect(v),
                         "interaction": self.interaction(a, b), "degenerate": (a, b) in degenerate})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        keep, drop = self.settings.get("keep_alone", KEEP_ALONE), self.settings.get("drop_joint", DROP_JOINT)
        return {"answer": self.answer, "prompts": self.prompts, "settings": self.settings, "p": self.p,
                "neurons": [[n.layer, n.index] for n in self.neurons],
                "single_effects": {str(n): e for n, e in self.single_effects().items()},
                "pairs": self.table().to_dict(orient="records"),
                "degenerate_pairs": [[str(a), str(b)] for a, b in self.degenerate_pairs(keep, drop)],
                "greedy": self.greedy}


def mean_probabilities(kn, prompts: Sequence[str], answer: str, sets: Sequence[Sequence[Neuron]],
                       batch: int = 256) -> list[float]:
    """Mean gold probability over `prompts` with each set suppressed; one batched call for all sets."""
    from kneuron.interventions.activations import scaled_probabilities

    if not sets:
        return []
    rows_prompts = [q for _ in sets for q in prompts]
    rows_sets = [s for s in sets for _ in prompts]
    probs = scaled_probabilities(kn, rows_prompts, [answer] * len(rows_prompts), rows_sets, 0.0, batch=batch)
    return probs.reshape(len(sets), len(prompts)).double().mean(1).tolist()


def top_neurons(kn, prompts: Sequence[str], answer: str, k: int = DEFAULT_TOP, steps: int = 20) -> list[Neuron]:
    """The fact's k neurons of highest integrated-gradients score summed over its prompts."""
    return top_of_results(kn.attribute(list(prompts), answer, steps=steps), k)


def top_of_results(results, k: int = DEFAULT_TOP) -> list[Neuron]:
    """The k neurons of highest score summed over attribution results (one fact's prompts)."""
    total = sum(r.scores.double() for r in results)
    flat = torch.topk(total.flatten(), min(k, total.numel())).indices.tolist()
    width = total.shape[1]
    return [Neuron(i // width, i % width) for i in flat]


def greedy_set(kn, prompts: Sequence[str], answer: str, p: float, single: dict[Neuron, float], *,
               keep_alone: float = KEEP_ALONE, remove: float = REMOVE_MOST, max_size: int | None = None,
               batch: int = 256) -> dict:
    """Grow a set from neurons that are each dispensable (alone keep >= keep_alone of the gold
    probability), adding each time the one that lowers the joint probability most, until the set
    keeps < `remove` of it.  Returns the set, its size (None if never reached) and the path."""
    pool = [n for n, v in single.items() if p and v / p >= keep_alone]
    chosen: list[Neuron] = []
    path = []
    max_size = len(pool) if max_size is None else min(max_size, len(pool))
    while len(chosen) < max_size:
        candidates = [n for n in pool if n not in chosen]
        kept = mean_probabilities(kn, prompts, answer, [chosen + [n] for n in candidates], batch=batch)
        best = min(range(len(candidates)), key=lambda i: kept[i])
        chosen.append(candidates[best])
        path.append({"added": str(candidates[best]), "kept": kept[best] / p})
        if kept[best] / p < remove:
            return {"neurons": [str(n) for n in chosen], "size": len(chosen), "kept": kept[best] / p,
                    "reached": True, "path": path, "pool": len(pool), "remove": remove}
    return {"neurons": [str(n) for n in chosen], "size": None, "kept": path[-1]["kept"] if path else 1.0,
            "reached": False, "path": path, "pool": len(pool), "remove": remove}


def neuron_interactions(kn, prompts: Sequence[str], answer: str, neurons=None, *, top: int = DEFAULT_TOP,
                        steps: int = 20, keep_alone: float = KEEP_ALONE, drop_joint: float = DROP_JOINT,
                        remove: float = REMOVE_MOST, greedy: bool = True, batch: int = 256) -> Interactions:
    """Single and pair suppression effects of a fact's neurons, their interactions, degenerate pairs,
    and (with `greedy`) the smallest jointly decisive set a greedy search finds.

    `neurons`: the neurons to study (default: the fact's `top` neurons by integrated gradients).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("neuron_interactions needs at least one prompt")
    given = neurons is not None
    neurons = kn.neurons(neurons) if given else top_neurons(kn, prompts, answer, top, steps)
    neurons = list(dict.fromkeys(neurons))
    if len(neurons) < 2:
        raise KneuronError(f"interactions need at least 2 distinct neurons, got {len(neurons)}")
    p = float(kn.probabilities(prompts, answer).double().mean())
    pairs = list(combinations(neurons, 2))
    kept = mean_probabilities(kn, prompts, answer, [[n] for n in neurons] + [list(ab) for ab in pairs], batch=batch)
    single = dict(zip(neurons, kept[:len(neurons)]))
    pair = dict(zip(pairs, kept[len(neurons):]))
    settings = {"model": kn.name, "neurons_from": "given" if given else f"top {top} by IG", "steps": steps, "keep_alone": keep_alone, "drop_joint": drop_joint, "remove": remove,
                "batch": batch}
    found = greedy_set(kn, prompts, answer, p, single, keep_alone=keep_alone, remove=remove, batch=batch) \
        if greedy else {}
    return Interactions(answer, prompts, neurons, p, single, pair, found, settings)


__all__ = [
    "DROP_JOINT",
    "Interactions",
    "KEEP_ALONE",
    "REMOVE_MOST",
    "greedy_set",
    "mean_probabilities",
    "neuron_interactions",
    "top_neurons",
    "top_of_results",
]
