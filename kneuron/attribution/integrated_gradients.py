"""Integrated gradients over FFN neurons, exact and fast.

Semantics (spec section 1): for each layer l separately, the whole activation vector w at the blank
is scaled along a straight path from zero; every other layer and position keeps its clean value;
the target is the gold answer's probability (see `kneuron.attribution.targets`).

What makes it fast without changing the result:
- masked LMs: the blocks below l are computed once per prompt (a recorded clean pass) and block l
  is replayed from its recorded input; block l's attention and up-projection run once and the
  batch fans out to the m path points only at the down projection; the path points of several
  layers travel in one "staircase" batch (rows for layer l join at block l and share every block
  above with the rows of lower layers); equal-length prompts share a batch (no padding);
- causal LMs: the prompt before the blank is computed once into a key/value cache and only the
  blank and teacher-forced answer positions run for the (layer, point) rows, which attend to the
  cached prefix without copying it (`kneuron.models.replay.shared_prefix_attention`), and the gold
  value's gradient through the vocabulary is taken in closed form (`kneuron.attribution.gold_head`);
- only scored positions reach the output head, and no parameter gradients are taken.
`kneuron.attribution.reference` does what the authors do; the tests hold the two to 1e-5.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from kneuron.attribution.gold_head import fusable, gold_values
from kneuron.attribution.paths import integration_points
from kneuron.attribution.result import AttributionResult
from kneuron.attribution.targets import check_target, target_values
from kneuron.errors import KneuronError, ModelError
from kneuron.models.replay import (
    as_3d,
    causal_trace,
    check_replay,
    head_parts,
    hooked,
    output_head,
    run_block,
    shared_prefix_attention,
    trace_forward,
)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 matmul kernels on this CPU (AVX512-BF16 or AMX).  Without them torch
    runs bf16 matmuls on a slow path: profiled at 96% of a bf16 attribution's time, ~10x fp32's."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class IntegratedGradients:
    """`attribute(prompts, answers)` for a loaded `KnowledgeModel`.

    Options: `steps` (m), `rule` (the integration rule, see `kneuron.attribution.paths`), `layers`
    (default all), `internal_batch_size` (most path-point rows in one forward/backward; bounds memory),
    `precision` ("fp32", or "bf16" autocast), `target` (see `kneuron.attribution.targets`).
    """

    def __init__(self, kn, steps: int = 20, rule: str = "riemann_left", layers: Sequence[int] | None = None,
                 internal_batch_size: int | None = None, precision: str = "fp32", target: str = "product"):
        self.kn = kn
        self.steps, self.rule = steps, rule
        self.alphas, self.coefs = integration_points(rule, steps)
        self.layers = kn.check_layers(layers)
        if internal_batch_size is not None and internal_batch_size < 1:
            raise KneuronError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        self.max_rows = internal_batch_size or kn.default_internal_batch_size(steps)
        self.sized_by_user = internal_batch_size is not None
        if precision not in ("fp32", "bf16"):
            raise KneuronError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.precision = precision
        if precision == "bf16" and kn.device.type == "cpu" and not cpu_has_fast_bf16():
            warnings.warn("this CPU has no bf16 matrix instructions (AVX512-BF16 or AMX): bf16 matmuls fall back "
                          "to a slow path, about 10x slower than fp32; use precision='fp32'", stacklevel=3)
        self.target = check_target(target)

    # -- public ---------------------------------------------------------------------------------
    def attribute(self, prompts: str | Sequence[str], answers: str | Sequence[str]) -> list[AttributionResult]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(answers, str):
            answers = [answers] * len(prompts)
        if len(prompts) != len(answers):
            raise KneuronError(f"{len(prompts)} prompts but {len(answers)} answers")
        encoded = [self.kn.encode(p, a) for p, a in zip(prompts, answers)]
        results: list[AttributionResult | None] = [None] * len(prompts)
        if self.kn.is_masked:
            by_length: dict[int, list[int]] = defaultdict(list)
            for i, e in enumerate(encoded):
                by_length[len(e.ids)].append(i)
            per_pass = max(1, self.max_rows // self.steps)
            groups = [idx[s:s + per_pass] for idx in by_length.values() for s in range(0, len(idx), per_pass)]
            for chunk in groups:
                for i, out in zip(chunk, self._replay_group([encoded[i] for i in chunk])):
                    results[i] = self._result(prompts[i], answers[i], *out)
        else:
            for i, e in enumerate(encoded):
                results[i] = self._result(prompts[i], answers[i], *self._causal_prompt(e))
        return results  # type: ignore[return-value]

    def _result(self, prompt, answer, scores, acts, value, delta):
        return AttributionResult(prompt, answer, scores, acts, float(value), delta, "ig", self.steps,
                                 self.target, self.kn.name, self.rule)

    # -- shared pieces ----------------------------------------------------------------------------
    def _points(self, w: torch.Tensor) -> torch.Tensor:
        """(m, *w.shape) path points as a leaf; the authors' arithmetic for Riemann sums: k * (w / m)."""
        m = self.steps
        if self.rule.startswith("riemann"):
            k0 = 0 if self.rule == "riemann_left" else 1
            k = torch.arange(k0, k0 + m, device=w.device, dtype=w.dtype)
            points = k.view(-1, *([1] * w.dim())) * (w / m)
        else:
            points = torch.tensor(self.alphas, device=w.device).view(-1, *([1] * w.dim())) * w
        return points.detach().requires_grad_(True)

    def _combine(self, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Attribution of every neuron at every blank position: w * sum_k c_k grad_k."""
        grad = grad.float()
        if self.rule.startswith("riemann"):
            return grad.sum(0) * (w / self.steps)
        coefs = torch.tensor(self.coefs, device=grad.device).view(-1, *([1] * w.dim()))
        return (coefs * grad).sum(0) * w

    def _autocast(self, device):
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _layer_chunks(self, rows_per_layer: int, max_rows: int) -> list[list[int]]:
        per_chunk = max(1, max_rows // rows_per_layer)
        return [self.layers[i:i + per_chunk] for i in range(0, len(self.layers), per_chunk)]

    # -- the staircase ---------------------------------------------------------------------------------
    def _replay_group(self, encoded):
        """Equal-length prompts of a masked LM: [(scores, activations, clean value, delta)] per prompt."""
        kn = self.kn
        ids = torch.tensor([e.ids for e in encoded], device=kn.device)
        trace = trace_forward(kn.model, kn.adapter, ids)
        spots = [(list(e.blank), list(e.targets), e.target_ids) for e in encoded]
        return self._staircase(trace, spots, output_head(kn.model, kn.adapter), fast_last=True)

    def _causal_prompt(self, e):
        """One prompt of a causal LM: the prefix before the blank is a key/value cache, and the
        staircase runs on the blank and the teacher-forced answer positions only."""
        kn = self.kn
        b0 = e.blank[0]
        ids = torch.tensor([e.ids], device=kn.device)
        trace = causal_trace(kn.model, kn.adapter, ids, b0)
        head = output_head(kn.model, kn.adapter)
        blocks = kn.adapter.blocks(kn.model)
        shared = False  # rows attend to the prefix through kneuron's attention function, if it reproduces the logits
        with torch.no_grad(), shared_prefix_attention(kn.model, blocks, trace.prefix) as switched:
            if switched:
                try:
                    check_replay(trace, blocks, head, kn.adapter.family)
                    shared = True
                except (ModelError, RuntimeError):  # not reproduced: the sdpa route below
                    pass
        if not shared:
            with torch.no_grad():
                check_replay(trace, blocks, head, kn.adapter.family)
        parts = head_parts(kn.model, kn.adapter)
        if fusable(parts):
            head = parts  # the gold value and its gradient in one fused pass (kneuron.attribution.gold_head)
        spots = [([p - b0 for p in e.blank], [p - b0 for p in e.targets], e.target_ids)]
        max_rows = self.max_rows
        if not self.sized_by_user:  # a long prompt or a large vocabulary: fewer rows per pass
            from kneuron.runs.memory import causal_rows

            max_rows = min(max_rows, causal_rows(kn, len(e.ids), len(e.targets), self.steps, self.precision))
        with shared_prefix_attention(kn.model, blocks, trace.prefix) if shared else nullcontext():
            return self._staircase(trace, spots, head, fast_last=False, max_rows=max_rows)[0]

    def _staircase(self, trace, spots, head, fast_last: bool, max_rows: int | None = None):
        """Scores of the prompts of one recorded clean pass; `spots[p]` = (blank positions, scored
        positions, gold ids) of prompt p.  Rows for layer l join at block l (the blocks below are the
        clean pass); the head runs only at the scored positions, in one matmul per pass."""
        kn, model, adapter = self.kn, self.kn.model, self.kn.adapter
        device = kn.device
        m = self.steps
        golds = [torch.tensor(gold, device=device) for _, _, gold in spots]
        clean = [target_values(trace.logits[p:p + 1, targets], golds[p], self.target)[0]
                 for p, (_, targets, _) in enumerate(spots)]
        # w[p][j]: (S_p, N) activations of prompt p, layer j, at its blank positions
        w = [[trace.activations[p, j, blank].float() for j in range(kn.num_layers)]
             for p, (blank, _, _) in enumerate(spots)]
        n_prompts = len(spots)
        scores = torch.zeros(n_prompts, kn.num_layers, kn.num_neurons, device=device)
        delta = torch.zeros(n_prompts, kn.num_layers, device=device) if self.alphas[0] == 0.0 else None
        blocks = adapter.blocks(model)
        last = len(blocks) - 1
        fast_last = fast_last and adapter.block_at is not None and adapter.block_at_supported(
            blocks[last], trace.layer_args[last], trace.layer_kwargs[last])
        for chunk in self._layer_chunks(m * n_prompts, max_rows or self.max_rows):
            targets = set(chunk)
            leaves, order = [], []  # order: (layer, prompt) for each block of m rows
            done = []  # hidden states at the scored positions, per finished block of rows
            h = None  # full-sequence rows still going up
            with torch.enable_grad(), self._autocast(device):
                for j in range(chunk[0], len(blocks)):
                    if h is not None and j == last and fast_last:
                        for b, rows in zip(range(len(done), len(order)), h.split(m)):
                            done.append(adapter.block_at(blocks[j], rows, spots[order[b][1]][1]))
                        h = None
                    elif h is not None:
                        h = run_block(blocks[j], h, trace.layer_args[j], trace.layer_kwargs[j])
                    if j not in targets:
                        continue
                    fresh = []
                    for p, (blank, _, _) in enumerate(spots):
                        leaf = self._points(w[p][j])
                        fresh.append(self._fan_out(j, trace, p, blank, leaf))
                        leaves.append(leaf)
                        order.append((j, p))
                    h = torch.cat(fresh) if h is None else torch.cat([h] + fresh)
                if not order:
                    continue
                if h is not None:
                    for b, rows in zip(range(len(done), len(order)), h.split(m)):
                        scored = spots[order[b][1]][1]
                        done.append(rows if scored == list(range(rows.shape[1])) else rows[:, scored])
                values = self._head_values(done, order, golds, head)  # (blocks, m)
            grads = torch.autograd.grad(values.sum(), leaves)
            values = values.detach()
            for (j, p), g, v in zip(order, grads, values):
                attr = self._combine(g, w[p][j])  # (S_p, N)
                scores[p, j] = attr.sum(0)
                if delta is not None:
                    delta[p, j] = attr.sum() - (clean[p] - v[0])
        return [(scores[p], torch.stack([x.mean(0) for x in w[p]]), clean[p],
                 None if delta is None else delta[p]) for p in range(n_prompts)]

    def _head_values(self, done, order, golds, head):
        """Target values (blocks, m) of the finished rows: one head matmul over all scored positions,
        or, given `HeadParts`, the fused gold head.
        (Splits, not slices: a slice's backward fills a zero tensor the size of all the logits.)"""
        m = self.steps
        sizes = [x.shape[1] for x in done]
        if not callable(head):
            if len(set(sizes)) != 1:
                raise KneuronError("the fused head needs one target length per pass")
            gold = torch.cat([golds[p].expand(m, -1) for _, p in order])
            return gold_values(head, torch.cat(done), gold, self.target).view(-1, m)
        flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in done])
        logits = head(flat).float()
        if len(set(sizes)) == 1:  # one target length: one call over every row
            gold = torch.cat([golds[p].expand(m, -1) for _, p in order])
            return target_values(logits.view(len(flat) // sizes[0], sizes[0], -1), gold, self.target).view(-1, m)
        parts = logits.split([m * k for k in sizes])
        return torch.stack([target_values(x.view(m, k, -1), golds[p], self.target)
                            for x, k, (_, p) in zip(parts, sizes, order)])

    def _fan_out(self, layer, trace, p, blank, leaf):
        """Replay block `layer` for prompt p; fan out to the path points at the down projection
        (or, where the block flattens its positions (OPT), at the block's input)."""
        kn = self.kn
        m = leaf.shape[0]
        hidden = trace.layer_inputs[layer][p:p + 1]
        if trace.flat_ffn:
            hidden = hidden.expand(m, *hidden.shape[1:])

        def hook(module, args):
            x = as_3d(args[0], m if trace.flat_ffn else 1)
            x = x.expand(m, -1, -1).clone()
            x[:, blank, :] = leaf.to(x.dtype)
            return (x.reshape(m * x.shape[1], -1) if args[0].dim() == 2 else x,) + tuple(args[1:])

        handle = kn.adapter.down_projection(kn.model, layer).register_forward_pre_hook(hook)
        with hooked([handle]):
            return run_block(kn.adapter.blocks(kn.model)[layer], hidden, trace.layer_args[layer],
                             trace.layer_kwargs[layer])
