"""The gold answer's value and its gradient through a causal LM's vocabulary projection, fused.

Autograd through `softmax(h W^T)[gold]` keeps the (rows, V) logits and softmax for the backward
pass, fills a zero (rows, V) gradient for the indexing, and sweeps those tensors several more
times: with V = 49k to 262k and a few hundred rows that is gigabytes of memory traffic, which on a
CPU costs nearly as much as the two matmuls.  Here the gradient is taken in the forward pass, in
place on one logits buffer per piece of rows, from the closed form

    d value / d logits_k = c_k (onehot(gold_k) - softmax(logits_k)),

c_k being the value's derivative with respect to log p_k (the value itself for "product", p_0 at
the first position for "first", 1/K for "mean_logprob"); only the (rows, H) gradient is kept for
the backward pass.  Logit division (Granite) and soft-capping (Gemma 2) are chained in.  The
values equal `kneuron.attribution.targets.target_values` on the same logits, and the tests hold
the gradient to autograd's.
"""

from __future__ import annotations

import torch

from kneuron.models.replay import HeadParts

PIECE_BYTES = 256 << 20  # bounds the transient logits of one piece of rows; smaller pieces run slower
# (SmolLM2, 600 rows, 1 thread: 1.14 s at 32 MB, 1.09 s at 256 MB, 1.04 s unbounded, autograd 1.8 s)


def fusable(parts: HeadParts | None) -> bool:
    return parts is not None and isinstance(parts.vocab, torch.nn.Linear)


def gold_values(parts: HeadParts, h: torch.Tensor, gold: torch.Tensor, target: str) -> torch.Tensor:
    """(R,) target values of hidden states `h` (R, K, H) after the last block at K scored positions,
    gold ids `gold` (K,) or (R, K); differentiable with respect to `h` (not the head's parameters)."""
    gold = gold.expand(h.shape[0], -1) if gold.dim() == 1 else gold
    x = parts.pre(h)
    vocab = parts.vocab
    bias = None if vocab.bias is None else vocab.bias.detach()
    return _GoldValues.apply(x, vocab.weight.detach(), bias, gold, target, parts.divide, parts.cap)


def _values_and_grad(x, weight, bias, gold, target, divide, cap):
    rows, k, hidden = x.shape
    vocab = weight.shape[0]
    flat = x.reshape(rows * k, hidden)
    gold = gold.reshape(rows * k, 1)
    values = torch.empty(rows, dtype=torch.float32, device=x.device)
    grad = torch.empty_like(flat)
    piece = max(1, PIECE_BYTES // (4 * vocab * k))  # rows per piece
    for r0 in range(0, rows, piece):
        r1 = min(rows, r0 + piece)
        a, b = r0 * k, r1 * k
        logits = torch.nn.functional.linear(flat[a:b], weight, bias).float()
        if divide:
            logits.div_(divide)
        tanh = None
        if cap:
            tanh = torch.tanh(logits / cap)
            logits = tanh * cap
        g = gold[a:b]
        log_gold = None
        if target == "mean_logprob" or (target == "product" and k > 1):
            log_gold = logits.gather(-1, g) - torch.logsumexp(logits, -1, keepdim=True)
        # torch's own softmax, as autograd's route and the reference loop use: on CPU its fp32 result
        # is ~2e-5 off in relative terms (a float64 softmax says so), and the exact mode matches the
        # reference to 1e-5, not a more accurate softmax
        probs = torch.softmax(logits, dim=-1)
        del logits
        n = r1 - r0
        if target == "first" or (target == "product" and k == 1):
            value = probs.gather(-1, g).view(n, k)[:, 0]  # softmax, then index: the authors' arithmetic
            coef = torch.zeros(n, k, device=x.device)
            coef[:, 0] = value
        elif target == "product":
            value = log_gold.view(n, k).sum(1).exp()  # the log-softmax route, as target_values
            coef = value[:, None].expand(n, k)
        else:  # mean_logprob
            value = log_gold.view(n, k).mean(1)
            coef = torch.full((n, k), 1.0 / k, device=x.device)
        coef = coef.reshape(-1, 1)
        values[r0:r1] = value
        dlogits = probs.mul_(-coef).scatter_add_(-1, g, coef)  # c (onehot - softmax), in place
        if tanh is not None:
            dlogits.mul_(1 - tanh * tanh)
        if divide:
            dlogits.div_(divide)
        grad[a:b] = dlogits.to(weight.dtype) @ weight
    return values, grad.view(rows, k, hidden)


class _GoldValues(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gold, target, divide, cap):
        with torch.no_grad():
            values, grad = _values_and_grad(x.detach(), weight, bias, gold, target, divide, cap)
        ctx.save_for_backward(grad)
        return values

    @staticmethod
    def backward(ctx, grad_values):
        (grad,) = ctx.saved_tensors
        return grad_values.view(-1, 1, 1).to(grad.dtype) * grad, None, None, None, None, None, None
