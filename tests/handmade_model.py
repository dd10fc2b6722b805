"""A one-layer Llama whose neurons are set by hand, so that which neuron carries what is known.

Attention writes nothing (o_proj = 0), so the residual at the last position is the last token's
one-hot embedding; a neuron fires when its gate and up rows point at that token ("cue") and
writes its down-projection column (an answer's direction).  The final RMSNorm saturates: one
large writer is enough, which is what makes a pair of writers redundant.

Neurons (all in layer 0):
  0  SHARED    fires on the English and the Lurian cue, writes Paris (the fact in both languages)
  1  EN_ONLY   fires on the English cue only, writes Paris (weaker)
  2  LU_ONLY   fires on the Lurian cue only, writes Paris (weaker)
  3, 4  PAIR   both fire on the "twin" cue and write Rome: either alone saturates, so each is
               dispensable, but together they carry the fact (a degenerate pair)
  5  ESSENTIAL fires on the "solo" cue and alone writes Oslo
  6, 7         fire on no cue (activation 0)
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "fact", "is", "ne", "esta", "twin", "solo", "about",
         "en_cue", "lu_cue", "Paris", "Rome", "Oslo", "Berlin"]
SHARED, EN_ONLY, LU_ONLY, PAIR_A, PAIR_B, ESSENTIAL = 0, 1, 2, 3, 4, 5

EN_PROMPTS = ["the fact en_cue [MASK].", "the fact is en_cue [MASK].", "about the en_cue [MASK].",
              "fact is the en_cue [MASK]."]
LU_PROMPTS = ["esta fact lu_cue [MASK].", "ne esta lu_cue [MASK].", "ne fact esta lu_cue [MASK].",
              "esta ne lu_cue [MASK]."]
TWIN_PROMPTS = ["the fact twin [MASK].", "about the twin [MASK].", "the fact is twin [MASK]."]
SOLO_PROMPTS = ["the fact solo [MASK].", "about the solo [MASK].", "the fact is solo [MASK]."]


def save_handmade_model(out: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    vocab = {w: i for i, w in enumerate(WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 2)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[CLS]", eos_token="[SEP]", unk_token="[UNK]",
                                  pad_token="[PAD]")
    v = len(WORDS)
    config = LlamaConfig(vocab_size=v, hidden_size=v, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=v, max_position_embeddings=32,
                         tie_word_embeddings=False, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(v))
        model.model.norm.weight.fill_(1.0)
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        mlp = layer.mlp

        def neuron(k: int, cues: list[str], answer: str, strength: float) -> None:
            for cue in cues:
                mlp.gate_proj.weight[k, vocab[cue]] = 1.0
                mlp.up_proj.weight[k, vocab[cue]] = 1.0
            mlp.down_proj.weight[vocab[answer], k] = strength

        neuron(SHARED, ["en_cue", "lu_cue"], "Paris", 3.0)
        neuron(EN_ONLY, ["en_cue"], "Paris", 1.0)
        neuron(LU_ONLY, ["lu_cue"], "Paris", 1.0)
        neuron(PAIR_A, ["twin"], "Rome", 3.0)
        neuron(PAIR_B, ["twin"], "Rome", 3.0)
        neuron(ESSENTIAL, ["solo"], "Oslo", 3.0)
        model.lm_head.weight.copy_(torch.eye(v) * 3.0)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
