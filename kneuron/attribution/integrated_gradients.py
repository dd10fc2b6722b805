"""Integrated gradients over FFN neurons, exact and fast.

Semantics (spec section 1): for each layer l separately, the whole activation vector w at the blank
is scaled along a straight path from zero; every other layer and position keeps its clean value;
the target is the gold token's probability (softmax over the vocabulary) at the blank.

What makes it fast without changing the result:
- the blocks below l are computed once per prompt (a recorded clean pass) instead of once per
  (layer, step): block l is replayed from its recorded input;
- block l's attention and up-projection run once; the batch fans out to the m path points only at
  the down projection, where the scaled activations enter;
- the path points of several layers travel in one "staircase" batch: rows for layer l join the
  batch at block l and share every block above with the rows of lower layers;
- several prompts of equal token length share a batch (no padding, so nothing is wasted);
- only the blank rows go through the output head; no parameter gradients are taken.
The slow reference (`kneuron.attribution.reference`) does what the authors do, and the tests hold
the two to 1e-5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from kneuron.attribution.paths import integration_points
from kneuron.errors import KneuronError
from kneuron.models.replay import run_block, trace_forward


@dataclass
class AttributionResult:
    """Attribution of one prompt.  `scores` and `activations` are (num_layers, num_neurons)."""

    prompt: str
    answer: str
    scores: torch.Tensor
    activations: torch.Tensor
    probability: float  # gold probability on the clean prompt
    convergence_delta: torch.Tensor | None  # per layer: sum(scores[l]) - (P(w) - P(0 at layer l))
    method: str = "riemann_left"
    steps: int = 20

    def to(self, device) -> AttributionResult:
        self.scores, self.activations = self.scores.to(device), self.activations.to(device)
        return self


class IntegratedGradients:
    """`attribute(prompts, answers)` for a loaded `KnowledgeModel`.

    Options: `steps` (m), `method` (see `kneuron.attribution.paths`), `layers` (default all),
    `internal_batch_size` (most path-point rows in one forward/backward; bounds memory),
    `precision` ("fp32", or "bf16" autocast for the blocks above the scaled layer).
    """

    def __init__(self, kn, steps: int = 20, method: str = "riemann_left", layers: Sequence[int] | None = None,
                 internal_batch_size: int | None = None, precision: str = "fp32"):
        self.kn = kn
        self.steps, self.method = steps, method
        self.alphas, self.coefs = integration_points(method, steps)
        self.layers = kn.check_layers(layers)
        if internal_batch_size is not None and internal_batch_size < 1:
            raise KneuronError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.max_rows = internal_batch_size or kn.default_internal_batch_size(steps)
        if precision not in ("fp32", "bf16"):
            raise KneuronError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision

    # -- public ---------------------------------------------------------------------------------
    def attribute(self, prompts: str | Sequence[str], answers: str | Sequence[str]) -> list[AttributionResult]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(answers, str):
            answers = [answers] * len(prompts)
        if len(prompts) != len(answers):
            raise KneuronError(f"{len(prompts)} prompts but {len(answers)} answers")
        encoded = [self.kn.encode(p) for p in prompts]
        golds = [self.kn.answer_id(a) for a in answers]
        results: list[AttributionResult | None] = [None] * len(prompts)
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, e in enumerate(encoded):
            by_length[len(e.ids)].append(i)
        per_pass = max(1, self.max_rows // self.steps)
        for idx in by_length.values():
            for start in range(0, len(idx), per_pass):
                chunk = idx[start:start + per_pass]
                scores, acts, probs, delta = self._attribute_group([encoded[i] for i in chunk],
                                                                   [golds[i] for i in chunk])
                for k, i in enumerate(chunk):
                    results[i] = AttributionResult(
                        prompts[i], answers[i], scores[k], acts[k], float(probs[k]),
                        None if delta is None else delta[k], self.method, self.steps)
        return results  # type: ignore[return-value]

    # -- engine ---------------------------------------------------------------------------------
    def _layer_chunks(self, n_prompts: int) -> list[list[int]]:
        per_chunk = max(1, self.max_rows // (self.steps * n_prompts))
        return [self.layers[i:i + per_chunk] for i in range(0, len(self.layers), per_chunk)]

    def _attribute_group(self, encoded, golds):
        kn, model, adapter = self.kn, self.kn.model, self.kn.adapter
        device = kn.device
        ids = torch.tensor([e.ids for e in encoded], device=device)
        blank = torch.tensor([e.blank for e in encoded], device=device)
        gold = torch.tensor(golds, device=device)
        trace = trace_forward(model, adapter, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, blank)
        p_clean = torch.softmax(trace.logits.float(), dim=-1)[torch.arange(len(golds)), gold]
        w = trace.activations.float()  # (P, L, N)
        n_prompts, n_layers, n_neurons = w.shape
        scores = torch.zeros(n_prompts, n_layers, n_neurons, device=device)
        has_zero = self.alphas[0] == 0.0
        delta = torch.zeros(n_prompts, n_layers, device=device) if has_zero else None
        blocks = adapter.blocks(model)
        m = self.steps
        riemann = self.method.startswith("riemann")
        k0 = 0 if self.method == "riemann_left" else 1
        alphas = torch.tensor(self.alphas, device=device)
        coefs = torch.tensor(self.coefs, device=device)
        autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                    if self.precision == "bf16" else nullcontext())

        for chunk in self._layer_chunks(n_prompts):
            targets = set(chunk)
            leaves, order = [], []  # order: (layer, prompt) for each block of m rows
            h = None
            with torch.enable_grad(), autocast:
                for j in range(chunk[0], len(blocks)):
                    if h is not None:
                        h = run_block(blocks[j], h, trace.layer_args[j], trace.layer_kwargs[j])
                    if j not in targets:
                        continue
                    fresh = []
                    for p in range(n_prompts):
                        wj = w[p, j]
                        if riemann:  # the authors' arithmetic: point k = k * (w / m)
                            step = wj / m
                            leaf = torch.arange(k0, k0 + m, device=device, dtype=wj.dtype)[:, None] * step
                        else:
                            leaf = alphas[:, None] * wj
                        leaf = leaf.detach().requires_grad_(True)
                        fresh.append(self._inject(blocks[j], adapter, model, j, trace, p, int(blank[p]), leaf))
                        leaves.append(leaf)
                        order.append((j, p))
                    h = torch.cat(fresh) if h is None else torch.cat([h] + fresh)
                if h is None:
                    continue
                row_prompt = torch.tensor([p for (_, p) in order], device=device).repeat_interleave(m)
                hb = h[torch.arange(h.shape[0], device=device), blank[row_prompt]]
                logits = adapter.head(model, hb).float()
                probs = torch.softmax(logits, dim=-1)[torch.arange(h.shape[0], device=device), gold[row_prompt]]
            grads = torch.autograd.grad(probs.sum(), leaves)
            probs = probs.detach().view(len(order), m)
            for (j, p), g, pr in zip(order, grads, probs):
                g = g.float()
                if riemann:
                    attr = g.sum(0) * (w[p, j] / m)
                else:
                    attr = (coefs[:, None] * g).sum(0) * w[p, j]
                scores[p, j] = attr
                if delta is not None:
                    delta[p, j] = attr.sum() - (p_clean[p] - pr[0])
        return scores, w, p_clean, delta

    @staticmethod
    def _inject(block, adapter, model, layer, trace, p, blank, leaf):
        """Replay block `layer` for prompt p; fan out to the path points at the down projection."""
        m = leaf.shape[0]

        def fan_out(module, args):
            x = args[0]  # (1, T, N): the clean activations of this prompt
            x = x.expand(m, -1, -1)
            x = torch.cat([x[:, :blank], leaf[:, None, :].to(x.dtype), x[:, blank + 1:]], dim=1)
            return (x,) + tuple(args[1:])

        handle = adapter.down_projection(model, layer).register_forward_pre_hook(fan_out)
        try:
            return run_block(block, trace.layer_inputs[layer][p:p + 1], trace.layer_args[layer],
                             trace.layer_kwargs[layer])
        finally:
            handle.remove()
