"""Interventions on a causal LM that compute each prompt's prefix once.

Scaling neurons at the blank cannot change the positions before it, so for a causal LM the
prompt before the blank is the same key/value cache under every intervention.  Inside
`with prefix_caches(kn):` `scaled_probabilities` keeps that cache per prompt and runs only the
blank and the teacher-forced answer positions, one row per neuron set: a comparison that suppresses
hundreds of sets on the same prompts then pays for their prefixes once.  The weights must not
change inside the block (an edit would leave stale caches).  The first prompt of a block checks
the cached route against the plain forward pass; a model whose cache cannot be reused (or which
disagrees) falls back to the plain route for the rest of the block.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import torch

from kneuron.attribution.targets import target_values
from kneuron.models.replay import as_3d, cache_kwarg, prefix_cache

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

_STORE: ContextVar[dict | None] = ContextVar("kneuron_prefix_caches", default=None)
TOLERANCE = 1e-4  # relative agreement of the cached route with the plain one on the check prompt


@contextmanager
def prefix_caches(kn: KnowledgeModel):
    """Keep each prompt's prefix cache for `scaled_probabilities` until the block ends.  Inside a
    block already open for `kn` this is that block: its caches (and its check) are reused."""
    store = _STORE.get()
    if store is not None and store["kn"] is kn:
        yield
        return
    token = _STORE.set({"kn": kn, "caches": {}, "templates": {}, "ok": None} if not kn.is_masked else None)
    try:
        yield
    finally:
        _STORE.reset(token)


def active_store(kn: KnowledgeModel) -> dict | None:
    """The open store for `kn`, unless its check failed."""
    store = _STORE.get()
    return store if store is not None and store["kn"] is kn and store["ok"] is not False else None


def cached_scaled_probabilities(kn: KnowledgeModel, store: dict, encoded, sets, factor: float, target: str,
                                batch: int) -> torch.Tensor | None:
    """`scaled_probabilities` through cached prefixes; None when the check fails (use the plain route).

    Rows whose prefix and suffix have the same lengths (and blank and answer offsets) share a pass:
    their caches are stacked along the batch."""
    if store["ok"] is None:
        store["ok"] = _agrees(kn, store, encoded[0], target)
        if not store["ok"]:
            return None
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(encoded):
        b0 = e.blank[0]
        shape = (b0, len(e.ids), tuple(p - b0 for p in e.blank), tuple(p - b0 for p in e.targets))
        groups.setdefault(shape, []).append(i)
    _fill_prefixes(kn, store, encoded, batch)
    out = torch.empty(len(encoded), dtype=torch.float32, device=kn.device)
    for rows in groups.values():
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            values = _run_suffix(kn, store, [encoded[i] for i in chunk], [sets[i] for i in chunk], factor, target)
            out[torch.tensor(chunk, device=kn.device)] = values.float()
    return out


def _agrees(kn: KnowledgeModel, store: dict, e, target: str) -> bool:
    """Whether the cached route reproduces the plain forward pass on one prompt (no neuron scaled)."""
    try:
        _fill_prefixes(kn, store, [e])
        fast = float(_run_suffix(kn, store, [e, e], [[], []], 1.0, target)[1])  # two rows: the stacking too
    except Exception:  # a cache type that cannot be copied or stacked: the plain route
        return False
    ids = torch.tensor([e.ids], device=kn.device)
    with torch.no_grad():
        logits = kn.model(input_ids=ids).logits[0]
    gold = torch.tensor(e.target_ids, device=kn.device)
    plain = float(target_values(logits[list(e.targets)][None], gold, target)[0])
    return abs(fast - plain) <= TOLERANCE * max(abs(plain), 1e-30) + 1e-7


def _fill_prefixes(kn: KnowledgeModel, store: dict, encoded, batch: int = 64) -> None:
    """Compute the prefixes the store lacks, those of equal length together."""
    missing: dict[int, dict[tuple, None]] = {}
    for e in encoded:
        key = tuple(e.ids[: e.blank[0]])
        if key and key not in store["caches"]:
            missing.setdefault(len(key), {})[key] = None
    for length, keys in missing.items():
        keys = list(keys)
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            cache = prefix_cache(kn.model, torch.tensor(chunk, device=kn.device))
            for r, key in enumerate(chunk):
                store["caches"][key] = [(layer.keys[r:r + 1].clone(), layer.values[r:r + 1].clone())
                                        for layer in cache.layers]
            if length not in store["templates"]:  # the cache object's other state, which depends on the length
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[:1].clone(), layer.values[:1].clone()
                store["templates"][length] = cache


def _stacked_cache(store: dict, encoded):
    """One cache holding each row's prefix (all of one length)."""
    cache = copy.deepcopy(store["templates"][encoded[0].blank[0]])  # the suffix pass appends to it
    parts = [store["caches"][tuple(e.ids[: e.blank[0]])] for e in encoded]
    for j, layer in enumerate(cache.layers):
        layer.keys = torch.cat([p[j][0] for p in parts])
        layer.values = torch.cat([p[j][1] for p in parts])
    return cache


def _run_suffix(kn: KnowledgeModel, store: dict, encoded, neuron_sets, factor: float, target: str) -> torch.Tensor:
    """Gold values of rows of equal shape, each with its neurons scaled at the blank, from cached prefixes
    (already in the store: `_fill_prefixes`)."""
    first = encoded[0]
    b0 = first.blank[0]
    rows = len(encoded)
    kwargs = {cache_kwarg(kn.model): _stacked_cache(store, encoded), "use_cache": True} if b0 > 0 else {}
    blank = torch.tensor([p - b0 for p in first.blank], device=kn.device)
    masks: dict[int, torch.Tensor] = {}
    for r, neurons in enumerate(neuron_sets):
        for n in neurons:
            if n.layer not in masks:
                masks[n.layer] = torch.ones(rows, kn.num_neurons, device=kn.device)
            masks[n.layer][r, n.index] = factor

    def make_hook(mask: torch.Tensor):
        def hook(module, args):
            x = as_3d(args[0], rows).clone()
            x[:, blank] = x[:, blank] * mask[:, None, :].to(x.dtype)
            return (x.reshape(args[0].shape),) + tuple(args[1:])
        return hook

    handles = [kn.adapter.down_projection(kn.model, layer).register_forward_pre_hook(make_hook(mask))
               for layer, mask in masks.items()]
    try:
        suffix = torch.tensor([e.ids[b0:] for e in encoded], device=kn.device)
        with torch.no_grad():
            logits = kn.model(input_ids=suffix, **kwargs).logits
    finally:
        for h in handles:
            h.remove()
    scored = logits[:, [p - b0 for p in first.targets]]
    return torch.stack([target_values(scored[r:r + 1], torch.tensor(e.target_ids, device=kn.device), target)[0]
                        for r, e in enumerate(encoded)])
