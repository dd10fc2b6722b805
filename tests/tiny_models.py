"""Tiny random models of each family, built from a config and saved like a real checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("the capital of is in was born a an and city country river language speaks Dublin Paris "
         "Ireland France Rome Italy Berlin Germany Alberta Edmonton lives works plays . , ' s").split()


def write_wordpiece_vocab(path: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set("".join(WORDS)) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    vocab = list(dict.fromkeys(specials + WORDS + chars + [f"##{c}" for c in chars]))
    path.write_text("\n".join(vocab) + "\n")
    return path


def spread_init(model, std: float) -> None:
    """Random init gives near-uniform predictions; a wider one spreads the logits so gradients are not tiny."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)


def save_tiny_bert(out: Path, seed: int = 0, layers: int = 3, hidden: int = 32, intermediate: int = 64,
                   family: str = "bert") -> Path:
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForMaskedLM,
        DistilBertTokenizerFast,
    )

    out.mkdir(parents=True, exist_ok=True)
    write_wordpiece_vocab(out / "vocab.txt")
    torch.manual_seed(seed)
    if family == "bert":
        tok = BertTokenizerFast.from_pretrained(str(out), do_lower_case=False)
        cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                         intermediate_size=intermediate, max_position_embeddings=64)
        model = BertForMaskedLM(cfg)
    elif family == "distilbert":
        tok = DistilBertTokenizerFast.from_pretrained(str(out), do_lower_case=False)
        cfg = DistilBertConfig(vocab_size=len(tok), dim=hidden, n_layers=layers, n_heads=4, hidden_dim=intermediate,
                               max_position_embeddings=64)
        model = DistilBertForMaskedLM(cfg)
    else:
        raise ValueError(family)
    spread_init(model, 0.2)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
