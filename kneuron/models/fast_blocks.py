"""A BERT-style block evaluated at a few query positions only.

In the last block of a masked LM only the scored (blank) positions reach the output, so their
queries, attention output and feed-forward are all that is needed; keys and values still come
from every position.  Same arithmetic as the block itself, on K rows instead of T.  Used for the
families whose blocks have BERT's layout (BERT, RoBERTa, XLM-R); others replay the whole block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bert_block_supported(block, args: tuple, kwargs: dict) -> bool:
    """Plain self-attention, absolute positions, and no mask that changes anything."""
    att = getattr(getattr(block, "attention", None), "self", None)
    cfg = getattr(att, "config", None)
    if att is None or cfg is None or not all(hasattr(att, n) for n in ("query", "key", "value", "scaling")):
        return False
    if getattr(cfg, "is_decoder", False) or getattr(block, "add_cross_attention", False):
        return False
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    if getattr(block, "chunk_size_feed_forward", 0):
        return False
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_floating_point() and bool((value != 0).any()):
            return False  # an additive attention mask that masks something: replay the whole block
        if isinstance(value, torch.Tensor) and value.dtype == torch.bool and not bool(value.all()):
            return False
    return True


def bert_block_at(block, hidden: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """Output of `block` at `positions` only: (R, T, H) -> (R, K, H)."""
    att = block.attention.self
    rows, _, _ = hidden.shape
    at = hidden[:, positions]

    def heads(x):
        return x.view(rows, x.shape[1], -1, att.attention_head_size).transpose(1, 2)

    ctx = F.scaled_dot_product_attention(heads(att.query(at)), heads(att.key(hidden)), heads(att.value(hidden)),
                                         scale=att.scaling)
    ctx = ctx.transpose(1, 2).reshape(rows, len(positions), -1)
    attn_out = block.attention.output(ctx, at)
    return block.output(block.intermediate(attn_out), attn_out)
