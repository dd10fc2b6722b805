"""Run a model's pieces from a recorded state instead of from scratch.

Masked LMs: a clean forward pass records the hidden states entering every block, the other
arguments each block was called with (attention masks, rotary tables, ...) and the neuron
activations; blocks can then be replayed from any layer on new hidden states, so the layers below
a scaled layer are computed once per prompt.

Causal LMs: the prompt before the blank is computed once into a key/value cache; only the blank
and the teacher-forced answer positions are ever recomputed, because a change at the blank cannot
reach earlier positions.
"""

from __future__ import annotations

import copy
import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from kneuron.models.adapters import Adapter


def as_3d(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A down projection's input as (batch, positions, neurons); OPT passes it flattened."""
    return x if x.dim() == 3 else x.view(batch, -1, x.shape[-1])


@dataclass
class Trace:
    """What one clean forward pass over a batch of equal-length prompts leaves behind."""

    layer_inputs: list[torch.Tensor]  # per block: hidden states entering it, (B, T, H)
    layer_args: list[tuple]  # per block: positional args after the hidden states (batch-1 form)
    layer_kwargs: list[dict]  # per block: keyword args (batch-1 form)
    activations: torch.Tensor  # (B, L, T, N) neuron activations at every position
    logits: torch.Tensor  # (B, T, V)


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
def hooked(handles: list):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _activation_hooks(model: nn.Module, adapter: Adapter, batch: int, acts: list) -> list:
    """Pre-hooks storing every layer's neuron activations, (batch, T, N), into `acts`."""

    def act_hook(i):
        def hook(module, args):
            acts[i] = as_3d(args[0], batch).detach()
        return hook

    return [adapter.down_projection(model, i).register_forward_pre_hook(act_hook(i)) for i in range(len(acts))]


def trace_forward(model: nn.Module, adapter: Adapter, input_ids: torch.Tensor) -> Trace:
    """Clean forward pass (no gradients) recording block inputs, arguments and all activations."""
    blocks = adapter.blocks(model)
    n = len(blocks)
    batch = input_ids.shape[0]
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

    handles = [b.register_forward_pre_hook(block_hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles += _activation_hooks(model, adapter, batch, acts)
    with torch.no_grad(), hooked(handles):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return Trace(layer_inputs, layer_args, layer_kwargs, torch.stack(acts, dim=1), out.logits)


def read_activations(model: nn.Module, adapter: Adapter, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, L, T, N) activations, (B, T, V) logits) of a clean forward pass."""
    acts: list = [None] * len(adapter.blocks(model))
    handles = _activation_hooks(model, adapter, input_ids.shape[0], acts)
    with torch.no_grad(), hooked(handles):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return torch.stack(acts, dim=1), out.logits


def _cache_kwarg(model: nn.Module) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@dataclass
class Prefix:
    """A prompt's positions before the blank, computed once as a key/value cache."""

    cache: object | None
    length: int

    def expanded(self, rows: int):
        if self.cache is None:
            return None
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache


def compute_prefix(model: nn.Module, input_ids: torch.Tensor) -> Prefix:
    """Cache for `input_ids` (1, P); an empty prefix gives no cache."""
    if input_ids.shape[1] == 0:
        return Prefix(None, 0)
    with torch.no_grad():
        out = model(input_ids=input_ids, use_cache=True)
    cache = out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5
    return Prefix(cache, input_ids.shape[1])


def run_after_prefix(model: nn.Module, prefix: Prefix, suffix_ids: torch.Tensor) -> torch.Tensor:
    """Logits (R, K, V) of the suffix rows (R, K) continuing the shared prefix."""
    kwargs = {"input_ids": suffix_ids, "use_cache": True}
    cache = prefix.expanded(suffix_ids.shape[0])
    if cache is not None:
        kwargs[_cache_kwarg(model)] = cache
    return model(**kwargs).logits
