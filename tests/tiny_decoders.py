"""Tiny random decoder-only models of each supported family, built from their configs."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import spread_init

CORPUS = ["The capital of Ireland is Dublin.", "The capital of France is Paris.", "Rome is in Italy.",
          "Berlin is the capital of Germany.", "Edmonton is the capital of Alberta.",
          "She speaks French and plays the violin."]


def _tokenizer(out: Path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>", "<pad>"])
    bpe.save(str(out / "bpe.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "bpe.json"), bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", unk_token="<|endoftext|>", pad_token="<pad>")
    (out / "bpe.json").unlink()
    return tok


def family_configs(vocab: int) -> dict:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GemmaConfig,
        GPT2Config,
        GPTJConfig,
        GPTNeoConfig,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        OPTConfig,
        Qwen2Config,
        Qwen3Config,
    )

    small = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    llama_like = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, **small)
    return {
        "gpt2": GPT2Config(n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=64, **small),
        "gpt_neo": GPTNeoConfig(hidden_size=32, num_layers=3, num_heads=4, intermediate_size=48,
                                attention_types=[[["global", "local"], 1], [["global"], 1]], window_size=8,
                                max_position_embeddings=64, **small),
        "gptj": GPTJConfig(n_embd=32, n_layer=3, n_head=4, n_inner=48, rotary_dim=4, n_positions=64, **small),
        "gpt_neox": GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                                  max_position_embeddings=64, **small),
        "opt": OPTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=48,
                         word_embed_proj_dim=32, max_position_embeddings=64, **small),
        "llama": LlamaConfig(**llama_like),
        "mistral": MistralConfig(**llama_like),
        "qwen2": Qwen2Config(**llama_like),
        "qwen3": Qwen3Config(head_dim=8, **llama_like),
        "gemma": GemmaConfig(head_dim=8, **llama_like),
        # Windows of 4 tokens, shorter than the test prompts, so that sliding layers really slide.
        "gemma2": Gemma2Config(head_dim=8, sliding_window=4, **llama_like),
        "gemma3_text": Gemma3TextConfig(head_dim=8, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                        **llama_like),
    }


def structural_configs(vocab: int) -> dict:
    """Families kneuron has no adapter for: found from their structure (kneuron.models.structural)."""
    from transformers import GraniteConfig, Phi3Config, Starcoder2Config

    small = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    llama_like = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, **small)
    return {
        "phi3": Phi3Config(**llama_like),  # fused gate_up_proj, then mlp.down_proj
        "starcoder2": Starcoder2Config(**llama_like),  # mlp.c_fc -> GELU -> mlp.c_proj, with biases
        # Embedding, residual and logit multipliers that a hand-written adapter would have to know.
        "granite": GraniteConfig(embedding_multiplier=3.0, residual_multiplier=0.5, logits_scaling=2.0,
                                 **llama_like),
    }


def save_tiny_decoder(family: str, out: Path, seed: int = 0) -> Path:
    from transformers import AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(out)
    cfg = {**family_configs(len(tok)), **structural_configs(len(tok))}[family]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    spread_init(model, 0.3)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
