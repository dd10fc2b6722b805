"""Erasing a relation by overwriting its most frequent neurons' value slots (spec 5.5, Table 5).

Paper-faithful (the authors' `src/7_erase_knowledge.py`): the neurons are the 20 most frequent
(layer, index) pairs over the refined neuron sets of all the relation's facts, counted with
`collections.Counter` in fact order and taken with `Counter.most_common(20)` (ties keep first-seen
order); their value slots are set to zero (`replacement="zero"`), which removes the neurons'
contribution at every position.  `replacement="unk"` writes the [UNK] word embedding instead
(present in the authors' script only as a commented-out line).

Signs: a zeroed slot removes the neuron's contribution whatever the sign of its activation, so the
paper's erase needs no sign handling on gated MLPs.  `replacement="unk"` writes s_i * E[UNK], with
s_i the sign of the neuron's mean activation when `signs` are given (else +1, the literal rule), so
that the neuron writes +E[UNK] where it fires, as it does in BERT.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch

from kneuron.edits.value_slots import Edit, make_edit
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

REPLACEMENTS = ("zero", "unk")


def _is_neuron(item) -> bool:
    if isinstance(item, Neuron):
        return True
    try:
        a, b = item
    except (TypeError, ValueError):
        return False
    return all(isinstance(x, int) or (hasattr(x, "__index__") and not hasattr(x, "__len__")) for x in (a, b))


def relation_neurons(fact_neurons, top_k: int | None = 20) -> list[Neuron]:
    """The `top_k` most frequent neurons over per-fact neuron sets (`Counter.most_common`).

    `fact_neurons`: per-fact lists (a list of lists, or a {fact: list} mapping, in fact order), or
    one flat list of neurons (each counted once, so the first `top_k` are kept).  None = all.
    """
    if isinstance(fact_neurons, Mapping):
        fact_neurons = list(fact_neurons.values())
    items = list(fact_neurons)
    sets: Iterable = [items] if items and all(_is_neuron(x) for x in items) else items
    counter: Counter = Counter()
    for neurons in sets:
        for n in neurons:
            layer, index = n
            counter.update([(int(layer), int(index))])
    top = counter.most_common(top_k)
    return [Neuron(*k) for k, _ in top]


def plan_erase(kn: KnowledgeModel, neurons, replacement: str = "zero", signs=None) -> Edit:
    """Overwrite exactly `neurons`' value slots with zeros or the [UNK] embedding (not applied).

    `signs` (+1/-1 per neuron, `kneuron.edits.neuron_signs`) orient the [UNK] vector; zeros ignore them.
    """
    if replacement not in REPLACEMENTS:
        raise KneuronError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    info = {"replacement": replacement}
    if replacement == "zero":
        def compute(n, v):
            return torch.zeros_like(v)
    else:
        unk = getattr(kn.tokenizer, "unk_token_id", None)
        if unk is None:
            raise KneuronError("this tokenizer has no [UNK] token; use replacement='zero'")
        emb = kn.adapter.word_embeddings(kn.model)
        if emb.shape[1] != kn.adapter.value_slots(kn.model, 0).shape[1 - kn.adapter.slot_axis]:
            raise KneuronError("word embeddings and value slots differ in size; use replacement='zero'")
        e_unk = emb[unk].detach().clone()
        info["unk_id"] = int(unk)
        order = list(dict.fromkeys(kn.neurons(neurons)))
        if signs is not None and len(signs) != len(order):
            raise KneuronError(f"signs must be one per neuron ({len(order)}), got {len(signs)}")
        sign_of = {n: float(x) for n, x in zip(order, signs)} if signs is not None else {}
        if signs is not None:
            info["signs"] = [sign_of[n] for n in order]

        def compute(n, v):
            return (e_unk * sign_of.get(n, 1.0)).to(v.device, v.dtype).clone()
    return make_edit(kn, "erase_relation", neurons, compute, info)


def erase_relation(kn: KnowledgeModel, fact_neurons, *, top_k: int | None = 20, replacement: str = "zero") -> Edit:
    """Erase the `top_k` most frequent neurons of a relation's facts; returns the applied `Edit`."""
    neurons = relation_neurons(fact_neurons, top_k)
    if not neurons:
        raise KneuronError("no neurons to erase: the relation's facts have no knowledge neurons")
    edit = plan_erase(kn, neurons, replacement)
    edit.info["top_k"] = top_k
    return edit.apply(kn)
