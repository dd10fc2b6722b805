"""From per-prompt sets to a fact's knowledge neurons, and the per-relation choice of p (spec 3).

A neuron is kept for a fact when at least max(p * n, 3) of the fact's n prompts have it in their
coarse set (the authors' `>=` and floor of 3, which the paper does not mention).  Refined lists
keep the authors' Counter insertion order: the order of first appearance over the prompts.

Per relation, p starts at 0.7 and moves by 0.05 (plain float arithmetic, as in the code, so
0.7 - 0.05 is 0.6499999...) until the relation's facts average 2 to 5 neurons, for at most 6
evaluations; the last evaluation's sets are kept even if still outside that range (`count_range`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from kneuron.neurons import Neuron
from kneuron.ranges import FRACTION, POSITIVE
from kneuron.selection.config import DEFAULT

# The defaults, from `SelectionConfig` (kneuron.selection.config), where they are defined.
P_START = DEFAULT.p_start
P_STEP = DEFAULT.p_step
MAX_TRIES = DEFAULT.max_tries
COUNT_RANGE = DEFAULT.count_range
MIN_PROMPTS = DEFAULT.min_prompts


def refine(coarse_sets: Sequence[Sequence[Neuron]], p: float = P_START, min_prompts: int = MIN_PROMPTS) -> list[Neuron]:
    """Neurons shared by at least max(p * n, min_prompts) of the n prompts' coarse sets."""
    FRACTION.check("p", p)
    POSITIVE.check("min_prompts", min_prompts)
    counts: Counter = Counter()
    for neurons in coarse_sets:
        for n in neurons:
            counts[Neuron(*n)] += 1
    need = max(p * len(coarse_sets), min_prompts)
    return [n for n, c in counts.items() if c >= need]


@dataclass
class Adaptation:
    """The outcome of choosing p for one relation."""

    p: float  # the p whose sets were kept
    tries: int
    average: float  # neurons per fact with that p (facts with none included)
    history: list[tuple[float, float]]  # (p, average) for every evaluation
    neurons: list[list[Neuron]]  # per fact, in input order
    count_range: tuple[float, float] = COUNT_RANGE  # the range of `average` the adaptation aimed at

    @property
    def converged(self) -> bool:
        return self.count_range[0] <= self.average <= self.count_range[1]


def adapt_p(facts_coarse: Sequence[Sequence[Sequence[Neuron]]], p_start: float = P_START, step: float = P_STEP,
            max_tries: int = MAX_TRIES, count_range: tuple[float, float] = COUNT_RANGE,
            min_prompts: int = MIN_PROMPTS) -> Adaptation:
    """Choose p for a relation: `facts_coarse[f][k]` is the coarse set of prompt k of fact f; p moves by
    `step` until the facts average `count_range[0]` to `count_range[1]` neurons, for at most `max_tries`
    evaluations."""
    p = p_start
    history: list[tuple[float, float]] = []
    for _ in range(max_tries):
        sets = [refine(c, p, min_prompts) for c in facts_coarse]
        average = sum(len(s) for s in sets) / max(len(sets), 1)
        history.append((p, average))
        used = p
        if average < count_range[0]:
            p = p - step
        elif average > count_range[1]:
            p = p + step
        else:
            break
    return Adaptation(used, len(history), average, history, sets, tuple(count_range))
