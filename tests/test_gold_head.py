"""The fused gold head (value and gradient through the vocabulary projection in one pass) against
autograd through `target_values`, for every target, multi-token answers, Granite's logit division,
Gemma-2 soft-capping and row pieces smaller than the batch."""

import pytest
import torch

import kneuron.attribution.gold_head as gold_head
from kneuron.attribution.targets import target_values
from kneuron.models.replay import HeadParts


def _autograd(parts, h, gold, target):
    x = h.clone().requires_grad_(True)
    logits = parts.logits(x.reshape(-1, x.shape[-1])).view(*x.shape[:2], -1)
    values = target_values(logits, gold, target)
    return values.detach(), torch.autograd.grad(values.sum(), x)[0]


def _fused(parts, h, gold, target):
    x = h.clone().requires_grad_(True)
    values = gold_head.gold_values(parts, x, gold, target)
    return values.detach(), torch.autograd.grad((values * torch.arange(1.0, len(values) + 1)).sum(), x)[0]


@pytest.mark.parametrize("target", ["product", "first", "mean_logprob"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("divide,cap", [(None, None), (4.0, None), (None, 3.0)])
@pytest.mark.parametrize("piece_rows", [None, 2])
def test_fused_head_matches_autograd(target, k, divide, cap, piece_rows, monkeypatch):
    torch.manual_seed(0)
    vocab, hidden, rows = 97, 16, 7
    linear = torch.nn.Linear(hidden, vocab, bias=True)
    norm = torch.nn.LayerNorm(hidden)
    parts = HeadParts(norm, linear, divide, cap)
    if piece_rows:
        monkeypatch.setattr(gold_head, "PIECE_BYTES", 4 * vocab * k * piece_rows)
    h = torch.randn(rows, k, hidden) * 3
    gold = torch.randint(0, vocab, (rows, k))
    v_ref, g_ref = _autograd(parts, h, gold, target)
    v, g = _fused(parts, h, gold, target)
    weights = torch.arange(1.0, rows + 1).view(-1, 1, 1)  # the upstream gradient reaches each row scaled
    assert torch.allclose(v, v_ref, rtol=1e-5, atol=1e-7)
    assert torch.allclose(g, g_ref * weights, rtol=1e-4, atol=1e-6 * float(g_ref.abs().max()))
    assert g.abs().max() > 0


def test_gold_ids_shared_by_every_row():
    torch.manual_seed(1)
    parts = HeadParts(lambda t: t, torch.nn.Linear(8, 31, bias=False), None, None)
    h = torch.randn(5, 2, 8)
    gold = torch.tensor([3, 17])
    v, _ = _fused(parts, h, gold, "product")
    v_ref, _ = _autograd(parts, h, gold, "product")
    assert torch.allclose(v, v_ref, rtol=1e-5)


def test_fusable_needs_a_linear_vocabulary_projection():
    assert gold_head.fusable(HeadParts(lambda t: t, torch.nn.Linear(4, 9), None, None))
    assert not gold_head.fusable(HeadParts(lambda t: t, torch.nn.Embedding(9, 4), None, None))
    assert not gold_head.fusable(None)
