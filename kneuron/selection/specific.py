"""Specific refined sets: the paper's refined sets minus the generic neurons (a named deviation).

The paper's refined set of a fact can hold output neurons that carry no fact in particular: on
SmolLM2-135M, 7 of Tokyo's 12 refined neurons sit in the last layer, and suppressing them also
lowers P(Jupiter | "The largest planet ... is") by 54%.  Two rules name a neuron *generic*; a
fact's specific set is its refined set without them, order kept.  Never a default: the
paper-faithful settings keep the refined sets.

- `other_relations`: the neuron is also in the refined set of a fact of another relation.  It
  costs nothing beyond those refined sets, but it only sees generic neurons that IG happens to
  select twice.
- `effect`: suppressing the neuron alone (x0 at the blank) does not lower the fact's own gold
  probability, or moves the gold probability of other relations' prompts by more than
  `fraction` of what it does to the fact's own (relative changes of the mean, as in the paper's
  metric).  It asks the question the comparison asks, neuron by neuron, for one forward pass per
  neuron and prompt (`kneuron.interventions.specificity` measures it).

Both are options of `find_neurons(..., specific_against=..., specific_rule=...)`, of
`discover(..., specific=RULE)` (method `kn_specific` in neurons.parquet) and of `kneuron compare`
(row `ig_specific`).
"""

from __future__ import annotations

from collections.abc import Sequence

from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

SPECIFIC_RULES = ("other_relations", "effect")
SPECIFIC_FRACTION = 0.2  # the effect rule's default: collateral at most a fifth of the own effect


def check_specific_rule(rule: str, fraction: float = SPECIFIC_FRACTION) -> str:
    if rule not in SPECIFIC_RULES:
        raise KneuronError(f"unknown specific rule {rule!r}; use one of: {', '.join(SPECIFIC_RULES)}")
    if not fraction >= 0:
        raise KneuronError(f"the specific fraction must be >= 0, got {fraction}")
    return rule


def specific_sets(relations: Sequence[str], sets: Sequence[Sequence[Neuron]],
                  reference: Sequence[Sequence[int]] | None = None) -> list[list[Neuron]]:
    """Rule `other_relations`: each fact's set without the neurons that also occur in a set of a fact
    of another relation.  `relations[i]` is the relation of fact i and `sets[i]` its refined set.

    `reference[i]`, when given, lists the facts (positions) whose sets fact i is compared against;
    the others are not looked at.  `kneuron compare` leaves out the facts whose prompts measure
    fact i's collateral damage, so that the rule does not see the test."""
    if len(relations) != len(sets):
        raise ValueError("one relation per set is needed")
    if reference is not None:
        if len(reference) != len(sets):
            raise ValueError("one reference list per set is needed")
        out = []
        for rel, neurons, ref in zip(relations, sets, reference):
            generic = {Neuron(*n) for j in ref if relations[j] != rel for n in sets[j]}
            out.append([Neuron(*n) for n in neurons if Neuron(*n) not in generic])
        return out
    seen_in: dict[Neuron, set[str]] = {}
    for rel, neurons in zip(relations, sets):
        for n in neurons:
            seen_in.setdefault(Neuron(*n), set()).add(rel)
    return [[Neuron(*n) for n in neurons if seen_in[Neuron(*n)] == {rel}] for rel, neurons in zip(relations, sets)]


def effect_specific(neurons: Sequence[Neuron], own_change: Sequence[float], other_change: Sequence[float],
                    fraction: float = SPECIFIC_FRACTION) -> list[Neuron]:
    """Rule `effect`: the neurons whose suppression alone lowers their fact (`own_change[i] < 0`) and
    moves other relations' prompts by at most `fraction` of that (`|other_change[i]| <= fraction *
    |own_change[i]|`).  Changes are relative (-0.3 = the gold probability fell by 30%)."""
    if not len(neurons) == len(own_change) == len(other_change):
        raise ValueError("one own and one other change per neuron are needed")
    return [Neuron(*n) for n, own, other in zip(neurons, own_change, other_change)
            if own < 0 and abs(other) <= fraction * abs(own)]
