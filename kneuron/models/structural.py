"""An adapter found from a model's structure, for causal LMs of families nobody registered.

Most decoders are a list of identical blocks whose MLP ends in one linear map from the
intermediate size back to the hidden size; its input holds the knowledge neurons, exactly as in
the hand-written adapters.  `structural_adapter` finds

- the blocks: the largest `nn.ModuleList` of modules of one class;
- the MLP output projection inside a block: a Linear (or GPT-2's Conv1D) mapping the intermediate
  size to the hidden size, not under attention, preferring the usual names (down_proj, c_proj, fc2,
  fc_out, dense_4h_to_h, wo, w2, out_proj) under mlp / ffn / feed_forward;
- the word embeddings: `model.get_input_embeddings()`;

and then proves the choice on a short input before anyone relies on it: each block calls the
projection exactly once, hooking its input as the identity (the way kneuron's interventions hook
it) gives bit-identical logits, and scaling that input changes them.  Any failure is one line
naming the family and the module tried.  Registered adapters always take priority.

Masked LMs are not covered: their attribution replays blocks and needs the model's own head,
which has no common shape (BERT's `cls`, RoBERTa's `lm_head`, DistilBERT's four modules).
"""

from __future__ import annotations

import torch
from torch import nn

from kneuron.errors import ModelError
from kneuron.models.adapters import Adapter, get_module
from kneuron.models.replay import as_3d, hooked

OUTPUT_NAMES = ("down_proj", "c_proj", "fc2", "fc_out", "dense_4h_to_h", "wo", "w2", "out_proj")
MLP_PARENTS = ("mlp", "ffn", "feed_forward", "feedforward", "ff", "mlp_block")
ATTENTION_WORDS = ("attn", "attention")
_INTERMEDIATE_KEYS = ("intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size", "inner_dim")


def objective_for_config(config) -> str | None:
    """"causal" or "masked" from the config's architectures; without any, from transformers' auto
    mappings; None when the checkpoint is neither kind of LM."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    names = getattr(config, "architectures", None) or []
    if any(n.endswith("ForMaskedLM") for n in names):
        return "masked"
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "causal"
    if names or getattr(config, "is_encoder_decoder", False):
        return None  # saved as something else (a seq2seq model, a classifier): not a language model head
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    return None


def _io_dims(module: nn.Module) -> tuple[int, int, int] | None:
    """(in, out, slot_axis) of a Linear or Conv1D; None for anything else."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, 1
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.nf, 0
    return None


def find_blocks(model: nn.Module) -> str:
    """Path of the largest ModuleList whose members all share one class."""
    best, best_key = None, None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(m) for m in module}) != 1:
            continue
        key = (len(module), sum(p.numel() for p in module.parameters()))
        if best_key is None or key > best_key:
            best, best_key = name, key
    if best is None:
        raise ModelError(f"structural adapter for model_type {_family(model)!r}: no list of identical blocks "
                         f"(nn.ModuleList) in {type(model).__name__}")
    return best


def find_output_projection(block: nn.Module, hidden: int, intermediate: int | None) -> tuple[str, int]:
    """(path inside the block, slot_axis) of the MLP output projection; ModelError if none or several."""
    candidates = []
    for name, module in block.named_modules():
        dims = _io_dims(module)
        if dims is None or not name:
            continue
        d_in, d_out, axis = dims
        parts = name.lower().split(".")
        if d_out != hidden or any(w in p for p in parts for w in ATTENTION_WORDS):
            continue
        if (intermediate is not None and d_in != intermediate) or (intermediate is None and d_in <= hidden):
            continue
        score = (parts[-1] in OUTPUT_NAMES) * 2 + any(p in MLP_PARENTS for p in parts[:-1])
        candidates.append((score, name, axis))
    if not candidates:
        return "", -1
    top = max(c[0] for c in candidates)
    best = [c for c in candidates if c[0] == top]
    if len(best) > 1:
        raise ModelError("several candidate MLP output projections (" + ", ".join(c[1] for c in best) + ")")
    return best[0][1], best[0][2]


def _family(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def _intermediate_size(config) -> int | None:
    for key in _INTERMEDIATE_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _module_path(model: nn.Module, target: nn.Module) -> str | None:
    return next((name for name, m in model.named_modules() if m is target), None)


def structural_adapter(model: nn.Module, check: bool = True) -> Adapter:
    """An adapter for a causal LM found from its structure and, with `check`, proven on its logits."""
    family = _family(model)
    config = model.config
    layers = find_blocks(model)
    blocks = get_module(model, layers)
    emb = model.get_input_embeddings()
    embeddings = _module_path(model, emb) if emb is not None else None
    if embeddings is None:
        raise ModelError(f"structural adapter for model_type {family!r}: no input word embeddings found")
    hidden = getattr(config, "hidden_size", None) or emb.weight.shape[1]
    try:
        down_proj, slot_axis = find_output_projection(blocks[0], hidden, _intermediate_size(config))
    except ModelError as exc:
        raise ModelError(f"structural adapter for model_type {family!r}: in {layers}.0, {exc}") from None
    if not down_proj:
        raise ModelError(f"structural adapter for model_type {family!r}: no MLP output projection (a Linear from "
                         f"the intermediate size to the hidden size {hidden}, outside attention) in {layers}.0; "
                         "register an Adapter for this family")
    adapter = Adapter(family=f"structural:{family}", model_types=(family,), objective="causal", layers=layers,
                      down_proj=down_proj, embeddings=embeddings, slot_axis=slot_axis,
                      notes=f"found from the structure: {layers}.N.{down_proj}")
    if check:
        check_adapter(model, adapter)
    return adapter


def check_adapter(model: nn.Module, adapter: Adapter, length: int = 6) -> None:
    """Prove that `adapter.down_proj` is where the model's MLP output is computed from, or raise.

    On a fixed short input: every block calls the site once per forward, an identity hook through
    kneuron's hook path (3-D view, clone, reshape back) leaves the logits bit-identical, and
    doubling the site's input changes them.
    """
    where = f"model_type {_family(model)!r}, module {adapter.layers}.N.{adapter.down_proj}"
    device = next(model.parameters()).device
    vocab = adapter.word_embeddings(model).shape[0]
    ids = (torch.arange(length, device=device)[None] * 7919 + 11) % vocab  # a fixed, ordinary-looking input
    blocks = adapter.blocks(model)
    sites = [adapter.down_projection(model, i) for i in range(len(blocks))]
    calls = [0] * len(sites)

    def rerouted(i, factor):
        def hook(module, args):
            calls[i] += 1
            x = as_3d(args[0], ids.shape[0]).clone()
            if factor != 1.0:
                x = x * factor
            return (x.reshape(args[0].shape),) + tuple(args[1:])
        return hook

    def logits(factor=None):
        handles = [] if factor is None else [s.register_forward_pre_hook(rerouted(i, factor))
                                             for i, s in enumerate(sites)]
        with torch.no_grad(), hooked(handles):
            return model(input_ids=ids).logits

    try:
        clean = logits()
        same = logits(1.0)
        counted = list(calls)
        scaled = logits(2.0)
    except Exception as exc:  # a site whose input is not one (batch, positions, neurons) tensor
        raise ModelError(f"structural adapter check failed ({where}): hooking it raised "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}") from None
    if any(c != 1 for c in counted):
        raise ModelError(f"structural adapter check failed ({where}): called {counted} times per block in one "
                         "forward pass (once expected)")
    if not torch.equal(clean, same):
        raise ModelError(f"structural adapter check failed ({where}): an identity hook changes the logits "
                         f"(max |diff| {float((clean - same).abs().max()):.3g})")
    if torch.equal(clean, scaled):  # the identity run was bit-exact, so any change is the site's doing
        raise ModelError(f"structural adapter check failed ({where}): scaling its input does not change the "
                         "logits, so it is not where the MLP output comes from")
