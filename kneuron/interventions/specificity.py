"""What suppressing each neuron alone does to its own fact and to other relations' prompts.

The measurement behind the `effect` rule of `kneuron.selection.specific`: for every neuron of a
set, the relative change of the mean gold probability over the fact's own prompts and over a
sample of other relations' prompts, with that one neuron x0 at the blank.  Many sets are measured
together, so one call batches every (neuron, prompt) row of every fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kneuron.interventions.activations import scaled_probabilities
from kneuron.neurons import Neuron
from kneuron.selection.specific import SPECIFIC_FRACTION, effect_specific

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

Pair = tuple[str, str]  # (prompt, answer)


@dataclass
class SpecificityTask:
    """One set of neurons, the prompts of its own fact, and prompts of other relations' facts."""

    neurons: Sequence[Neuron]
    own: Sequence[Pair]
    other: Sequence[Pair]


def single_neuron_changes(kn: KnowledgeModel, tasks: Sequence[SpecificityTask]) -> list[tuple[list[float], list[float]]]:
    """Per task, (own changes, other changes): one relative change per neuron, each neuron suppressed
    alone.  An empty `other` gives changes of 0."""
    pairs = list(dict.fromkeys(pair for t in tasks for pair in (*t.own, *t.other)))
    # The clean values by the same route as the suppressed ones (no neuron scaled), so that both
    # carry the same rounding inside `prefix_caches`.
    clean = dict(zip(pairs, scaled_probabilities(kn, [p for p, _ in pairs], [a for _, a in pairs], [[]] * len(pairs),
                                                 1.0).double().cpu().tolist() if pairs else []))
    rows = [(pair, n) for t in tasks for n in t.neurons for pair in (*t.own, *t.other)]
    suppressed = (scaled_probabilities(kn, [p for (p, _), _ in rows], [a for (_, a), _ in rows],
                                       [[n] for _, n in rows], 0.0).double().cpu().tolist() if rows else [])
    out, at = [], 0

    def change(group: Sequence[Pair], new: list[float]) -> float:
        before = sum(clean[pair] for pair in group) / len(group) if group else 0.0
        return (sum(new) / len(new) - before) / before if group and before > 0 else 0.0

    for t in tasks:
        own, other = [], []
        for _ in t.neurons:
            new = suppressed[at: at + len(t.own) + len(t.other)]
            at += len(new)
            own.append(change(t.own, new[: len(t.own)]))
            other.append(change(t.other, new[len(t.own):]))
        out.append((own, other))
    return out


def effect_specific_sets(kn: KnowledgeModel, tasks: Sequence[SpecificityTask], fraction: float = SPECIFIC_FRACTION
                         ) -> list[list[Neuron]]:
    """Each task's neurons that pass the `effect` rule (`kneuron.selection.specific.effect_specific`)."""
    return [effect_specific(t.neurons, own, other, fraction)
            for t, (own, other) in zip(tasks, single_neuron_changes(kn, tasks))]


__all__ = ["SpecificityTask", "effect_specific_sets", "single_neuron_changes"]
