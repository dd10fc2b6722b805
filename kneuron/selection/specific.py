"""Specific refined sets: the paper's refined sets minus the generic neurons (a named deviation).

The paper's refined set of a fact can hold output neurons that carry no fact in particular: on
SmolLM2-135M, 7 of Tokyo's 12 refined neurons sit in the last layer, and suppressing them also
lowers P(Jupiter | "The largest planet ... is") by 54%.  Rule `other_relations`: a neuron is
*generic* when it is in the refined set of a fact of another relation; the specific set of a fact
is its refined set without the generic neurons.  It costs nothing beyond the refined sets of the
facts compared against, so it is what `discover(..., specific="other_relations")` (method
`kn_specific` in neurons.parquet), `find_neurons(..., specific_against=...)` and `kneuron compare`
(row `ig_specific`) use.  Never a default: the paper-faithful settings keep the refined sets.
"""

from __future__ import annotations

from collections.abc import Sequence

from kneuron.neurons import Neuron

SPECIFIC_RULE = "other_relations"


def specific_sets(relations: Sequence[str], sets: Sequence[Sequence[Neuron]]) -> list[list[Neuron]]:
    """Each fact's set without the neurons that also occur in a set of a fact of another relation.

    `relations[i]` is the relation of fact i and `sets[i]` its refined set; order is kept.
    """
    if len(relations) != len(sets):
        raise ValueError("one relation per set is needed")
    seen_in: dict[Neuron, set[str]] = {}
    for rel, neurons in zip(relations, sets):
        for n in neurons:
            seen_in.setdefault(Neuron(*n), set()).add(rel)
    return [[Neuron(*n) for n in neurons if seen_in[Neuron(*n)] == {rel}] for rel, neurons in zip(relations, sets)]
