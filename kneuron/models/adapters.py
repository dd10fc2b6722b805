"""Where a model family keeps its knowledge neurons.

One definition for every family: a knowledge neuron is a coordinate of the *input of the FFN's
output projection* ("down projection").  For BERT that is the post-GELU intermediate activation;
for gated MLPs it is act(gate) * up.  Its value slot is the matching column of that projection's
weight.  An `Adapter` names those modules for one family, plus how final hidden states become
logits, so that the rest of kneuron never looks at a model's class.

New families are added with `register_adapter`; nothing else has to change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from kneuron.errors import ModelError
from kneuron.models.fast_blocks import bert_block_at, bert_block_supported


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted attribute path ("bert.encoder.layer"); '' is the root itself."""
    obj = root
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Adapter:
    """The activation sites and head of one model family.

    - `layers`: path from the top-level model to the list of transformer blocks.
    - `down_proj`: path inside a block to the FFN output projection; its input holds the neurons.
    - `embeddings`: path to the input word-embedding module (tied with the MLM decoder in BERT).
    - `head`: maps last-block hidden states of the scored rows (R, H) to logits (R, V); it includes
      any final layer norm, so that only the scored rows ever reach the vocabulary projection.
      Masked LMs need it (their blocks are replayed); causal LMs run their own forward on the
      positions after the blank, so they leave it out.
    - `slot_axis`: axis of the down projection's weight that indexes neurons (1 for nn.Linear,
      whose weight is (out, in); 0 for GPT-2's Conv1D, whose weight is (in, out)).
    """

    family: str
    model_types: tuple[str, ...]
    objective: str  # "masked" or "causal"
    layers: str
    down_proj: str
    embeddings: str
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    slot_axis: int = 1
    # Optional: block output at a few query positions only, for the last block of masked LMs.
    block_at: Callable | None = field(default=None, compare=False)
    block_at_supported: Callable | None = field(default=None, compare=False)
    notes: str = field(default="", compare=False)

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_module(model, self.layers)

    def down_projection(self, model: nn.Module, layer: int) -> nn.Module:
        return get_module(self.blocks(model)[layer], self.down_proj)

    def value_slots(self, model: nn.Module, layer: int) -> torch.Tensor:
        """The weight holding layer `layer`'s value slots (a view: edits act on the model)."""
        return self.down_projection(model, layer).weight

    def word_embeddings(self, model: nn.Module) -> torch.Tensor:
        return get_module(model, self.embeddings).weight

    def output_embeddings(self, model: nn.Module) -> torch.Tensor:
        """(V, H) rows the LM head reads answers from: the unembedding matrix.

        The same tensor as `word_embeddings` in tied models; the input embeddings when the model
        exposes no output embedding of that width.
        """
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        weight = getattr(head, "weight", None)
        inputs = self.word_embeddings(model)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != inputs.shape[1]:
            return inputs
        return weight

    def gated(self, model: nn.Module) -> bool:
        """Whether the FFN is gated (act(gate) * up: SwiGLU, GeGLU), so that a neuron's coefficient
        is as often negative as positive.  Read from the module holding the down projection."""
        parent, _, _ = self.down_proj.rpartition(".")
        mlp = get_module(self.blocks(model)[0], parent)
        return any("gate" in name for name, _ in mlp.named_children())

    def num_neurons(self, model: nn.Module) -> int:
        return self.value_slots(model, 0).shape[self.slot_axis]


_ADAPTERS: dict[str, Adapter] = {}


def register_adapter(adapter: Adapter, *, replace: bool = False) -> Adapter:
    """Make kneuron support a family: every `model_type` in `adapter.model_types` maps to it."""
    for model_type in adapter.model_types:
        if model_type in _ADAPTERS and not replace:
            raise ModelError(f"an adapter for model_type {model_type!r} is already registered")
        _ADAPTERS[model_type] = adapter
    return adapter


def adapter_for(model: nn.Module) -> Adapter:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = _ADAPTERS.get(model_type or "")
    if adapter is None:
        raise ModelError(
            f"no kneuron adapter for {type(model).__name__} (model_type {model_type!r}); "
            f"supported: {', '.join(sorted(_ADAPTERS))}; add one with kneuron.register_adapter(Adapter(...))"
        )
    return adapter


def adapter_for_type(model_type: str) -> Adapter | None:
    return _ADAPTERS.get(model_type)


def registered_adapters() -> dict[str, Adapter]:
    return dict(_ADAPTERS)


# --- masked LMs of the BERT family ---------------------------------------------------------------

register_adapter(Adapter(
    family="bert", model_types=("bert",), objective="masked",
    layers="bert.encoder.layer", down_proj="output.dense",
    embeddings="bert.embeddings.word_embeddings",
    head=lambda m, h: m.cls(h), block_at=bert_block_at, block_at_supported=bert_block_supported,
    notes="BERT, mBERT: neuron = post-GELU output of `intermediate`.",
))

register_adapter(Adapter(
    family="roberta", model_types=("roberta", "xlm-roberta", "camembert"), objective="masked",
    layers="roberta.encoder.layer", down_proj="output.dense",
    embeddings="roberta.embeddings.word_embeddings",
    head=lambda m, h: m.lm_head(h), block_at=bert_block_at, block_at_supported=bert_block_supported,
    notes="RoBERTa, XLM-R: same block as BERT.",
))


def _distilbert_head(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))


register_adapter(Adapter(
    family="distilbert", model_types=("distilbert",), objective="masked",
    layers="distilbert.transformer.layer", down_proj="ffn.lin2",
    embeddings="distilbert.embeddings.word_embeddings",
    head=_distilbert_head,
    notes="DistilBERT: neuron = output of ffn.activation(ffn.lin1(x)).",
))


# --- causal LMs ------------------------------------------------------------------------------------
# The neuron is the input of the MLP's output projection: post-activation for GPT-2/Neo/J/NeoX/OPT,
# act(gate(x)) * up(x) for the gated MLPs of Llama, Mistral, Qwen2/3 and Gemma.

register_adapter(Adapter(
    family="gpt2", model_types=("gpt2",), objective="causal",
    layers="transformer.h", down_proj="mlp.c_proj", embeddings="transformer.wte", slot_axis=0,
    notes="GPT-2: Conv1D weights are (in, out), so value slots are rows.",
))

register_adapter(Adapter(
    family="gpt_neo", model_types=("gpt_neo",), objective="causal",
    layers="transformer.h", down_proj="mlp.c_proj", embeddings="transformer.wte",
))

register_adapter(Adapter(
    family="gptj", model_types=("gptj",), objective="causal",
    layers="transformer.h", down_proj="mlp.fc_out", embeddings="transformer.wte",
    notes="GPT-J: attention and MLP in parallel; the neuron is the input of fc_out.",
))

register_adapter(Adapter(
    family="gpt_neox", model_types=("gpt_neox",), objective="causal",
    layers="gpt_neox.layers", down_proj="mlp.dense_4h_to_h", embeddings="gpt_neox.embed_in",
    notes="GPT-NeoX, Pythia.",
))

register_adapter(Adapter(
    family="opt", model_types=("opt",), objective="causal",
    layers="model.decoder.layers", down_proj="fc2", embeddings="model.decoder.embed_tokens",
    notes="OPT flattens (batch, positions) before fc1/fc2; hooks see a 2-D input.",
))

register_adapter(Adapter(
    family="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"),
    objective="causal", layers="model.layers", down_proj="mlp.down_proj", embeddings="model.embed_tokens",
    notes="Gated MLPs: neuron = act(gate_proj(x)) * up_proj(x), the input of down_proj.",
))

# Gemma 3's text decoder: the same gated MLP (GELU-tanh gate), sliding-window attention on five
# layers of six, and input embeddings multiplied by sqrt(hidden_size) inside `embed_tokens`.  That
# scale lives in the module's forward, not in its weight: `word_embeddings` returns the unscaled
# matrix, which is also the (tied) output head, so an edit adding lambda * E[answer] to a value slot
# pushes along the direction the head reads; with the default norm scaling the magnitude of E does
# not matter at all.  Attribution acts on MLP inputs and never sees the embedding scale.
register_adapter(Adapter(
    family="gemma3", model_types=("gemma3_text",),
    objective="causal", layers="model.layers", down_proj="mlp.down_proj", embeddings="model.embed_tokens",
    notes="Gemma 3 (text): neuron = gelu_tanh(gate_proj(x)) * up_proj(x); embeddings scaled by sqrt(hidden) "
          "in the forward (word_embeddings is the unscaled, tied matrix).",
))
