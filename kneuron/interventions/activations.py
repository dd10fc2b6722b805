"""Suppressing and amplifying neurons at the blank (spec section 5.2).

The chosen neurons' activations are multiplied by a factor (0 = suppress, 2 = amplify) at the
blank position only, in every layer that holds one of them, within a single forward pass.  It is
done with hooks, never by touching weights: leaving the `with` block (normally or through an
exception) removes them, so the model is exactly as it was.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from kneuron.errors import KneuronError
from kneuron.interventions.cached import active_store, cached_scaled_probabilities
from kneuron.models.replay import as_3d
from kneuron.neurons import as_neurons

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel


def _blank_finder(kn: KnowledgeModel, where: dict):
    """A model pre-hook noting each forward pass's blank positions and batch size in `where`."""

    def find_blanks(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise KneuronError("interventions need input_ids to find the blank (inputs_embeds given)")
        where["rows"], where["cols"] = kn.blank_positions(input_ids, kwargs.get("attention_mask"))
        where["batch"] = input_ids.shape[0]

    return find_blanks


@contextmanager
def scale_activations(kn: KnowledgeModel, neurons, factor: float):
    """Within the block, every forward pass of `kn.model` scales `neurons` at its blank(s)."""
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)  # validate before touching anything
    factor = float(factor)
    by_layer: dict[int, list[int]] = defaultdict(list)
    for n in neurons:
        by_layer[n.layer].append(n.index)
    where: dict = {}

    def make_hook(indices: torch.Tensor):
        def hook(module, args):
            rows, cols = where["rows"], where["cols"]
            if rows.numel() == 0:
                return None
            x = as_3d(args[0], where["batch"]).clone()  # OPT hands (batch * positions, neurons)
            r, c, i = rows[:, None], cols[:, None], indices.to(x.device)[None, :]
            x[r, c, i] = 0.0 if factor == 0.0 else x[r, c, i] * factor
            return (x.reshape(args[0].shape),) + tuple(args[1:])
        return hook

    handles = []
    try:
        handles.append(kn.model.register_forward_pre_hook(_blank_finder(kn, where), with_kwargs=True))
        for layer, idx in by_layer.items():
            site = kn.adapter.down_projection(kn.model, layer)
            handles.append(site.register_forward_pre_hook(make_hook(torch.tensor(sorted(set(idx))))))
        yield neurons
    finally:
        for h in handles:
            h.remove()


def scaled_probabilities(kn: KnowledgeModel, prompts, answers, neuron_sets, factor: float, target: str = "product",
                         batch: int = 64) -> torch.Tensor:
    """Gold probabilities with each prompt's own neurons scaled at its blank, many prompts per pass.

    `neuron_sets[i]` belongs to `prompts[i]`.  Multiplying by a mask of ones and `factor` gives
    bit for bit what `scale_activations` gives one prompt at a time.  Inside
    `kneuron.interventions.prefix_caches(kn)` a causal LM computes each prompt's prefix once
    (`kneuron.interventions.cached`; equal to this route within float rounding, tested).  `batch`: rows per forward pass
    (rows of equal length share one).
    """
    sets = [as_neurons(s, kn.num_layers, kn.num_neurons) for s in neuron_sets]
    store = active_store(kn)
    if store is not None and prompts:  # a causal LM inside `prefix_caches`: each prefix computed once
        from kneuron.attribution.targets import check_target

        check_target(target)
        encoded = [kn.encode(p, a) for p, a in zip(prompts, [answers] * len(prompts) if isinstance(answers, str)
                                                     else answers)]
        values = cached_scaled_probabilities(kn, store, encoded, sets, float(factor), target, batch)
        if values is not None:
            return values
    layers = sorted({n.layer for s in sets for n in s})
    scale = {layer: torch.ones(len(prompts), kn.num_neurons, device=kn.device) for layer in layers}
    for i, s in enumerate(sets):
        for n in s:
            scale[n.layer][i, n.index] = factor
    current: dict = {}
    where: dict = {}

    def on_chunk(indices):
        current["rows"] = torch.tensor(indices, device=kn.device)

    def make_hook(layer: int):
        def hook(module, args):
            x = as_3d(args[0], where["batch"]).clone()
            rows, cols = where["rows"], where["cols"]
            factors = scale[layer][current["rows"][rows]]
            x[rows, cols] = x[rows, cols] * factors.to(x.dtype)
            return (x.reshape(args[0].shape),) + tuple(args[1:])
        return hook

    handles = [kn.model.register_forward_pre_hook(_blank_finder(kn, where), with_kwargs=True)]
    try:
        for layer in layers:
            site = kn.adapter.down_projection(kn.model, layer)
            handles.append(site.register_forward_pre_hook(make_hook(layer)))
        return kn.probabilities(prompts, answers, target, _before_chunk=on_chunk, batch=batch)
    finally:
        for h in handles:
            h.remove()
