"""Updating a fact by editing its knowledge neurons' value slots (spec 5.4, the paper's Table 6).

For each neuron i kept for the fact, its value slot v_i (a column of the FFN down projection) is

    v_i <- v_i - lambda1_i * E[t] + lambda2_i * E[t']

with E the input word embeddings, t the original answer and t' the new one.  Paper-faithful
(`scaling="norm"`, what the authors' code runs with `--norm_lambda1 1 --norm_lambda2 8`):
lambda1_i = ||v_i|| / ||E[t]|| * lambda1 and lambda2_i = ||v_i|| / ||E[t']|| * lambda2, both from
the slot before the edit; so the removed vector has the norm of the slot and the added one
`lambda2` times it.  `scaling="raw"` uses lambda1 and lambda2 as plain factors (the paper's text).
Biases are untouched.

Which neurons (`select_update_neurons`, the authors' `select_kn`): the fact's refined neurons,
minus those shared by more than 10% of the relation's facts.  The counter starts at 1 for the
fact itself and then adds 1 for every fact of the relation (the fact included) holding the
neuron, so a neuron of the fact alone counts 2; it is dropped when count > 0.1 * N_facts.
No top-k cap: every remaining neuron is edited.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from kneuron.edits.value_slots import Edit, make_edit, slot
from kneuron.errors import KneuronError
from kneuron.models.tokens import token_text
from kneuron.neurons import Neuron, as_neurons

SCALINGS = ("norm", "raw")


def _key(n) -> tuple[int, int]:
    layer, index = n
    return int(layer), int(index)


def select_update_neurons(fact_neurons: Sequence, relation_neurons: Iterable[Sequence], share: float = 0.1,
                          num_facts: int | None = None) -> list[Neuron]:
    """The fact's neurons that at most `share` of the relation's facts hold (authors' `select_kn`).

    `relation_neurons` are the neuron sets of all facts of the relation (the fact's own included,
    empty sets included); `num_facts` defaults to their number.  Order = the fact's order.
    """
    relation_neurons = [list(s) for s in relation_neurons]
    n_facts = len(relation_neurons) if num_facts is None else int(num_facts)
    counter: Counter = Counter()
    for n in fact_neurons:
        counter.update([_key(n)])
    for neurons in relation_neurons:
        for n in neurons:
            k = _key(n)
            if k in counter:
                counter.update([k])
    return [Neuron(*k) for k, v in counter.items() if not v > n_facts * share]


def update_lambdas(kn, neurons: Sequence[Neuron], original_id: int, target_id: int, lambda1: float = 1.0,
                   lambda2: float = 8.0, scaling: str = "norm") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lambda1_i, lambda2_i) per listed neuron, from the slots as they are now."""
    if scaling not in SCALINGS:
        raise KneuronError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    emb = kn.adapter.word_embeddings(kn.model)
    with torch.no_grad():
        e_old, e_new = emb[original_id], emb[target_id]
        if scaling == "raw":
            return [(torch.tensor(float(lambda1)), torch.tensor(float(lambda2))) for _ in neurons]
        n_old, n_new = torch.norm(e_old), torch.norm(e_new)
        out = []
        for n in neurons:
            norm = torch.norm(slot(kn, n))
            out.append((norm / n_old * lambda1, norm / n_new * lambda2))
        return out


def plan_update(kn, neurons, original: str | int, target: str | int, *, lambda1: float = 1.0,
                lambda2: float = 8.0, scaling: str = "norm") -> Edit:
    """The update of `neurons` from answer `original` to `target`, computed but not applied."""
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)
    old_id = original if isinstance(original, int) else kn.answer_id(original)
    new_id = target if isinstance(target, int) else kn.answer_id(target)
    emb = kn.adapter.word_embeddings(kn.model)
    hidden = slot(kn, Neuron(0, 0)).shape[0] if kn.num_neurons else 0
    if emb.shape[1] != hidden:
        raise KneuronError(f"word embeddings have size {emb.shape[1]} but value slots {hidden}; "
                           "this model cannot be edited with embedding vectors")
    lambdas = update_lambdas(kn, neurons, old_id, new_id, lambda1, lambda2, scaling)
    per_neuron = iter(lambdas)
    with torch.no_grad():
        e_old, e_new = emb[old_id].detach(), emb[new_id].detach()

    def compute(n: Neuron, v: torch.Tensor) -> torch.Tensor:
        l1, l2 = next(per_neuron)  # neurons are visited in the listed order
        v = v - e_old.to(v.device, v.dtype) * l1.to(v.device)
        return v + e_new.to(v.device, v.dtype) * l2.to(v.device)

    info = {"original": token_text(kn.tokenizer, old_id).strip(), "target": token_text(kn.tokenizer, new_id).strip(),
            "original_id": int(old_id), "target_id": int(new_id),
            "lambda1": float(lambda1), "lambda2": float(lambda2), "scaling": scaling,
            "lambdas": [[float(a), float(b)] for a, b in lambdas]}
    return make_edit(kn, "update_fact", neurons, compute, info)


def update_fact(kn, neurons, original: str | int, target: str | int, *, lambda1: float = 1.0,
                lambda2: float = 8.0, scaling: str = "norm") -> Edit:
    """Apply the value-slot update (spec 5.4) and return the applied `Edit` (`.undo()` reverts it)."""
    return plan_update(kn, neurons, original, target, lambda1=lambda1, lambda2=lambda2, scaling=scaling).apply(kn)
