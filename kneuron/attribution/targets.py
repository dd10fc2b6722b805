"""What attribution differentiates: the gold answer's score at its scored positions.

- "product" (default): the probability of the whole answer, the product of its tokens'
  probabilities with the earlier answer tokens teacher-forced (causal LMs) or filled by one mask
  each (masked LMs).  For a single-token answer it is exactly the paper's gold probability.
- "first": the probability of the answer's first token only.
- "mean_logprob": the mean log-probability of the answer's tokens (not a probability; IG's
  completeness then refers to log-probabilities).
"""

from __future__ import annotations

import torch

from kneuron.errors import KneuronError

TARGETS = ("product", "first", "mean_logprob")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise KneuronError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    return target


def target_values(logits: torch.Tensor, gold: torch.Tensor, target: str = "product") -> torch.Tensor:
    """(R,) values from logits (R, K, V) at the K scored positions and gold ids (K,) or (R, K)."""
    logits = logits.float()
    gold = gold.expand(logits.shape[0], -1) if gold.dim() == 1 else gold
    rows = torch.arange(logits.shape[0], device=logits.device)
    if target == "first" or (target == "product" and logits.shape[1] == 1):
        return torch.softmax(logits[:, 0], dim=-1)[rows, gold[:, 0]]  # the authors' arithmetic
    logp = torch.log_softmax(logits, dim=-1).gather(-1, gold[..., None])[..., 0]
    if target == "product":
        return logp.sum(dim=1).exp()
    return logp.mean(dim=1)
