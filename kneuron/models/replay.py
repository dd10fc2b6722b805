"""Run a model's pieces from a recorded state instead of from scratch.

Masked LMs: a clean forward pass records the hidden states entering every block, the other
arguments each block was called with (attention masks, rotary tables, ...) and the neuron
activations; blocks can then be replayed from any layer on new hidden states, so the layers below
a scaled layer are computed once per prompt.

Causal LMs: the same, after the prompt before the blank is computed once into a key/value cache:
the clean pass and every replay cover only the blank and the teacher-forced answer positions,
because a change at the blank cannot reach earlier positions; replayed blocks attend to the
cached prefix through `PrefixKeysValues`.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from kneuron.errors import ModelError
from kneuron.models.adapters import Adapter, get_module


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
    flat_ffn: bool = False  # the down projections see (B*T, N) inputs (OPT): rows cannot fan out inside a block
    prefix: PrefixKeysValues | None = None  # causal LMs: the cached prompt before the suffix the trace covers


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
    return _trace(model, adapter, input_ids, {"attention_mask": torch.ones_like(input_ids)})


def _trace(model: nn.Module, adapter: Adapter, input_ids: torch.Tensor, model_kwargs: dict) -> Trace:
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
    flat: list = []
    handles.append(adapter.down_projection(model, 0).register_forward_pre_hook(
        lambda module, args: flat.append(args[0].dim() == 2)))
    with torch.no_grad(), hooked(handles):
        out = model(input_ids=input_ids, **model_kwargs)
    return Trace(layer_inputs, layer_args, layer_kwargs, torch.stack(acts, dim=1), out.logits, bool(flat[0]))


def read_activations(model: nn.Module, adapter: Adapter, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, L, T, N) activations, (B, T, V) logits) of a clean forward pass."""
    acts: list = [None] * len(adapter.blocks(model))
    handles = _activation_hooks(model, adapter, input_ids.shape[0], acts)
    with torch.no_grad(), hooked(handles):
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return torch.stack(acts, dim=1), out.logits


def takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the model's forward computes logits for its last positions only when asked
    (transformers' causal LMs: `logits_to_keep`)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def cache_kwarg(model: nn.Module) -> str:
    """The keyword a causal LM's forward takes its key/value cache by."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def prefix_cache(model: nn.Module, input_ids: torch.Tensor):
    """The key/value cache of a causal LM after `input_ids` (1, T); only the last position's logits
    are computed, and never used."""
    extra = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    with torch.no_grad():
        out = model(input_ids=input_ids, use_cache=True, **extra)
    return out["cache"] if "cache" in out else out["past_key_values"]  # renamed in transformers 5


class PrefixKeysValues:
    """Stands in for a decoder's key/value cache when blocks are replayed on many rows.

    Each block's attention calls `update(keys, values, layer)` with the rows' own keys and values
    and attends to what it returns: here the prompt prefix's keys and values of that layer (shared
    by every row, broadcast without copying the cache) followed by the rows' own.  Nothing is
    stored, so the same object serves every replay.  Inside `shared_prefix_attention` it returns
    the rows' own keys and values only, and kneuron's attention function reads the prefix itself.
    """

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers
        self.shared = False

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.shared:
            return key_states, value_states
        return self.joined(key_states, value_states, layer_idx)

    def joined(self, key_states, value_states, layer_idx):
        keys, values = self.layers[layer_idx]
        rows = key_states.shape[0]
        keys = keys.to(key_states.dtype).expand(rows, *keys.shape[1:])
        values = values.to(value_states.dtype).expand(rows, *values.shape[1:])
        return torch.cat([keys, key_states], dim=-2), torch.cat([values, value_states], dim=-2)


SHARED_PREFIX_ATTENTION = "kneuron_shared_prefix"
_ACTIVE_PREFIX: ContextVar[PrefixKeysValues | None] = ContextVar("kneuron_active_prefix", default=None)


def _shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                             softcap=None, **kwargs):
    """Attention of R rows, each with its own suffix keys and values, over one prefix they share.

    The sdpa route (`PrefixKeysValues.joined`) copies the prefix's keys and values into every row
    and, backwards, fills and computes their gradients, which nothing needs: at 60 tokens that is
    most of the time outside the matmuls.  Here the scores against the prefix are one batched
    matmul per key/value head against the unexpanded prefix, and the prefix gets no gradient.
    Anything unusual (dropout, attention sinks, a mask of another length) takes the sdpa route.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix = _ACTIVE_PREFIX.get()
    layer = getattr(module, "layer_idx", None)
    rows, q_heads, steps, dim = query.shape
    kv_heads = key.shape[1]
    plain = (prefix is not None and layer is not None and not dropout and kwargs.get("s_aux") is None
             and kwargs.get("sinks") is None and q_heads % kv_heads == 0)
    if plain:
        prefix_keys, prefix_values = prefix.layers[layer]
        known = prefix_keys.shape[-2]
        plain = attention_mask is None or attention_mask.shape[-1] == known + steps
    if not plain:
        if prefix is not None and layer is not None:
            key, value = prefix.joined(key, value, layer)
        if softcap is not None:
            from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

            return eager_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                           scaling=scaling, softcap=softcap, **kwargs)
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = q_heads // kv_heads
    scaling = dim ** -0.5 if scaling is None else scaling
    pk = prefix_keys[0].to(query.dtype)  # (kv_heads, known, dim)
    pv = prefix_values[0].to(query.dtype)
    q = query.view(rows, kv_heads, groups, steps, dim)
    q_by_head = q.permute(1, 0, 2, 3, 4).reshape(kv_heads, rows * groups * steps, dim)
    on_prefix = torch.matmul(q_by_head, pk.transpose(-1, -2))  # (kv_heads, rows*groups*steps, known)
    on_prefix = on_prefix.view(kv_heads, rows, groups, steps, known).permute(1, 0, 2, 3, 4)
    on_own = torch.matmul(q, key[:, :, None].transpose(-1, -2))  # (rows, kv_heads, groups, steps, steps)
    scores = torch.cat([on_prefix, on_own], dim=-1) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is None:
        if steps > 1:  # causal among the rows' own positions, as sdpa's is_causal
            causal = torch.ones(steps, steps, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~torch.cat([causal.new_ones(steps, known), causal], dim=-1), float("-inf"))
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[:, :, None], float("-inf"))
    else:
        scores = scores + attention_mask[:, :, None]
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    w_prefix = weights[..., :known].permute(1, 0, 2, 3, 4).reshape(kv_heads, rows * groups * steps, known)
    out = torch.matmul(w_prefix, pv).view(kv_heads, rows, groups, steps, dim).permute(1, 0, 2, 3, 4)
    out = out + torch.matmul(weights[..., known:], value[:, :, None])
    return out.reshape(rows, q_heads, steps, dim).transpose(1, 2).contiguous(), None


def _register_shared_prefix_attention() -> bool:
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(SHARED_PREFIX_ATTENTION, _shared_prefix_attention)
    return True


@contextmanager
def shared_prefix_attention(model: nn.Module, blocks: nn.ModuleList, prefix: PrefixKeysValues | None):
    """Blocks replayed inside attend through `_shared_prefix_attention` to `prefix`.

    Switches the attention implementation of the blocks' configurations (the transformers
    `AttentionInterface` route) and restores it on exit; yields whether it did.  It does not for a
    model whose modelling code does not use that interface (transformers says which), and callers
    run `check_replay` inside it before they rely on it.
    """
    can_switch = getattr(model, "_can_set_attn_implementation", None)
    try:
        supported = bool(can_switch()) if callable(can_switch) else False
    except Exception:  # transformers reads the modelling file's source; anything odd means no
        supported = False
    configs = {id(m.config): m.config for m in blocks.modules()
               if getattr(m, "config", None) is not None and hasattr(m.config, "_attn_implementation_internal")}
    if prefix is None or not supported or not configs or not _register_shared_prefix_attention():
        yield False
        return
    saved = {k: c._attn_implementation_internal for k, c in configs.items()}
    token = _ACTIVE_PREFIX.set(prefix)
    prefix.shared = True
    try:
        for c in configs.values():
            c._attn_implementation_internal = SHARED_PREFIX_ATTENTION
        yield True
    finally:
        prefix.shared = False
        _ACTIVE_PREFIX.reset(token)
        for k, c in configs.items():
            c._attn_implementation_internal = saved[k]


def _prefix_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) that the cache prepends (after any sliding-window truncation)."""
    cache = getattr(cache, "self_attention_cache", cache)
    return [(layer.keys, layer.values) for layer in cache.layers]


def causal_trace(model: nn.Module, adapter: Adapter, input_ids: torch.Tensor, start: int) -> Trace:
    """Clean pass of a causal LM over positions `start:` of `input_ids` (1, T), the prompt before
    `start` computed once into a key/value cache.  The recorded block arguments hold a
    `PrefixKeysValues` in place of the cache, so that blocks replay on rows of the suffix alone;
    `logits` are the suffix's.
    """
    if input_ids.shape[0] != 1:
        raise ValueError("causal_trace takes one prompt")
    kwargs: dict = {}
    frozen = None
    if start > 0:
        cache = prefix_cache(model, input_ids[:, :start])
        frozen = PrefixKeysValues(_prefix_layers(cache))  # read before the suffix pass appends to it
        kwargs = {cache_kwarg(model): cache, "use_cache": True}
    else:
        kwargs = {"use_cache": False}
    trace = _trace(model, adapter, input_ids[:, start:], kwargs)
    if frozen is not None:
        from transformers.cache_utils import Cache

        def swap(v):
            return frozen if isinstance(v, Cache) else v

        trace.layer_args = [tuple(swap(v) for v in args) for args in trace.layer_args]
        trace.layer_kwargs = [{k: swap(v) for k, v in kw.items()} for kw in trace.layer_kwargs]
        trace.prefix = frozen
    return trace


_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm")


@dataclass
class HeadParts:
    """A causal LM's head taken apart: logits = cap(divide(vocab(pre(h)))).

    `pre` is everything before the vocabulary matmul (final norm, OPT's `project_out`), so that a
    fused gold-probability head (`kneuron.attribution.gold_head`) can run the vocabulary-sized work
    itself.  `divide` is None when the model does not divide its logits."""

    pre: object  # Callable[[Tensor], Tensor]
    vocab: nn.Module  # the output embeddings; fusable when an nn.Linear
    divide: float | None  # Granite's logits_scaling (never 1)
    cap: float | None  # Gemma-2-style final logit soft-capping

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.vocab(self.pre(h))
        if self.divide:
            logits = logits / self.divide
        if self.cap:
            logits = torch.tanh(logits / self.cap) * self.cap
        return logits


def head_parts(model: nn.Module, adapter: Adapter) -> HeadParts | None:
    """The parts of a causal LM's head (the module holding the blocks' final norm `norm`, `ln_f`
    or `final_layer_norm`, OPT's `project_out`, the output embeddings, Granite's logit scaling,
    Gemma-2-style soft-capping); None when the adapter brings its own `head`."""
    if adapter.head is not None:
        return None
    out = model.get_output_embeddings()
    parent = get_module(model, adapter.layers.rpartition(".")[0])
    norm = next((getattr(parent, n) for n in _FINAL_NORMS if getattr(parent, n, None) is not None), None)
    project = getattr(parent, "project_out", None)
    config = getattr(model, "config", None)

    def pre(h):
        if norm is not None:
            h = norm(h)
        if project is not None:
            h = project(h)
        return h

    divide = getattr(config, "logits_scaling", None)
    return HeadParts(pre, out, divide if divide and divide != 1 else None,
                     getattr(config, "final_logit_softcapping", None))


def output_head(model: nn.Module, adapter: Adapter):
    """hidden states after the last block (R, H) -> logits (R, V): the adapter's `head` when it has
    one, otherwise `head_parts`.  `check_replay` holds it to the model's own logits."""
    if adapter.head is not None:
        return lambda h: adapter.head(model, h)
    return head_parts(model, adapter).logits


def check_replay(trace: Trace, blocks, head, family: str) -> None:
    """Replay the recorded clean pass from the first block through the head and compare with the
    model's own logits: a family whose blocks or head the replay misreads fails here, loudly."""
    h = trace.layer_inputs[0]
    for j, block in enumerate(blocks):
        h = run_block(block, h, trace.layer_args[j], trace.layer_kwargs[j])
    replayed, logits = head(h).float(), trace.logits.float()
    scale = float(logits.abs().max()) or 1.0
    if replayed.shape != logits.shape or float((replayed - logits).abs().max()) > 1e-3 * scale:
        raise ModelError(f"replaying {family} blocks does not reproduce the model's logits; "
                         "give its adapter a `head` (final norm and output projection)")
