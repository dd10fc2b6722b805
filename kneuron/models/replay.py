"""Run a model's blocks one at a time, starting anywhere, without touching its source.

A clean forward pass is recorded once per prompt batch: the hidden states entering every block,
the other arguments each block was called with (attention masks, rotary tables, ...), and the
neuron activations at the blank.  Blocks can then be replayed from any layer on new hidden states.
This is what lets attribution compute the layers below the scaled one once per prompt instead of
once per (layer, step), and works for any family whose blocks take the hidden states first.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from kneuron.models.adapters import Adapter


@dataclass
class Trace:
    """What one clean forward pass over a batch of equal-length prompts leaves behind."""

    layer_inputs: list[torch.Tensor]  # per block: hidden states entering it, (B, T, H)
    layer_args: list[tuple]  # per block: positional args after the hidden states (batch-1 form)
    layer_kwargs: list[dict]  # per block: keyword args (batch-1 form)
    activations: torch.Tensor  # (B, L, N) neuron activations at the blank
    logits: torch.Tensor  # (B, V) logits at the blank


def _to_batch_one(value, batch: int):
    """Reduce a per-row argument to one row; prompts of equal length share masks, so it broadcasts."""
    if isinstance(value, torch.Tensor) and batch > 1 and value.dim() > 0 and value.shape[0] == batch:
        if not bool((value == value[:1]).all()):
            raise RuntimeError("block argument differs between prompts; replay needs shared masks")
        return value[:1]
    if isinstance(value, tuple):
        return tuple(_to_batch_one(v, batch) for v in value)
    return value


def run_block(block: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@contextmanager
def hooks(handles_factory):
    handles = handles_factory()
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def trace_forward(model: nn.Module, adapter: Adapter, inputs: dict, blank: torch.Tensor) -> Trace:
    """Clean forward pass recording block inputs/arguments and blank activations.

    `blank` holds one position per row.  Runs without gradients.
    """
    blocks = adapter.blocks(model)
    n = len(blocks)
    batch = inputs["input_ids"].shape[0]
    rows = torch.arange(batch, device=blank.device)
    layer_inputs: list = [None] * n
    layer_args: list = [None] * n
    layer_kwargs: list = [None] * n
    acts: list = [None] * n

    def block_hook(i):
        def hook(module, args, kwargs):
            if args:
                layer_inputs[i], rest = args[0], args[1:]
            else:
                kwargs = dict(kwargs)
                layer_inputs[i], rest = kwargs.pop("hidden_states"), ()
            layer_args[i] = _to_batch_one(rest, batch)
            layer_kwargs[i] = {k: _to_batch_one(v, batch) for k, v in kwargs.items()}
        return hook

    def act_hook(i):
        def hook(module, args):
            acts[i] = args[0][rows, blank].detach()
        return hook

    def register():
        hs = [b.register_forward_pre_hook(block_hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
        hs += [adapter.down_projection(model, i).register_forward_pre_hook(act_hook(i)) for i in range(n)]
        return hs

    with torch.no_grad(), hooks(register):
        out = model(**inputs, use_cache=False) if adapter.objective == "causal" else model(**inputs)
    logits = out.logits[rows, blank]
    return Trace(layer_inputs, layer_args, layer_kwargs, torch.stack(acts, dim=1), logits)
