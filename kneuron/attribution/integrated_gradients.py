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
  blank and teacher-forced answer positions run for the (layer, point) rows;
- only scored positions reach the output head, and no parameter gradients are taken.
`kneuron.attribution.reference` does what the authors do; the tests hold the two to 1e-5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext

import torch

from kneuron.attribution.paths import integration_points
from kneuron.attribution.result import AttributionResult
from kneuron.attribution.targets import check_target, target_values
from kneuron.errors import KneuronError
from kneuron.models.replay import as_3d, compute_prefix, hooked, run_after_prefix, run_block, trace_forward


class IntegratedGradients:
    """`attribute(prompts, answers)` for a loaded `KnowledgeModel`.

    Options: `steps` (m), `method` (see `kneuron.attribution.paths`), `layers` (default all),
    `internal_batch_size` (most path-point rows in one forward/backward; bounds memory),
    `precision` ("fp32", or "bf16" autocast), `target` (see `kneuron.attribution.targets`).
    """

    def __init__(self, kn, steps: int = 20, method: str = "riemann_left", layers: Sequence[int] | None = None,
                 internal_batch_size: int | None = None, precision: str = "fp32", target: str = "product"):
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
        return AttributionResult(prompt, answer, scores, acts, float(value), delta, self.method, self.steps,
                                 self.target, self.kn.name)

    # -- shared pieces ----------------------------------------------------------------------------
    def _points(self, w: torch.Tensor) -> torch.Tensor:
        """(m, *w.shape) path points as a leaf; the authors' arithmetic for Riemann sums: k * (w / m)."""
        m = self.steps
        if self.method.startswith("riemann"):
            k0 = 0 if self.method == "riemann_left" else 1
            k = torch.arange(k0, k0 + m, device=w.device, dtype=w.dtype)
            points = k.view(-1, *([1] * w.dim())) * (w / m)
        else:
            points = torch.tensor(self.alphas, device=w.device).view(-1, *([1] * w.dim())) * w
        return points.detach().requires_grad_(True)

    def _combine(self, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Attribution of every neuron at every blank position: w * sum_k c_k grad_k."""
        grad = grad.float()
        if self.method.startswith("riemann"):
            return grad.sum(0) * (w / self.steps)
        coefs = torch.tensor(self.coefs, device=grad.device).view(-1, *([1] * w.dim()))
        return (coefs * grad).sum(0) * w

    def _autocast(self, device):
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _layer_chunks(self, rows_per_layer: int) -> list[list[int]]:
        per_chunk = max(1, self.max_rows // rows_per_layer)
        return [self.layers[i:i + per_chunk] for i in range(0, len(self.layers), per_chunk)]

    # -- masked LMs: block replay -------------------------------------------------------------------
    def _replay_group(self, encoded):
        """Equal-length prompts: [(scores, activations, clean value, delta)] per prompt."""
        kn, model, adapter = self.kn, self.kn.model, self.kn.adapter
        device = kn.device
        m = self.steps
        ids = torch.tensor([e.ids for e in encoded], device=device)
        trace = trace_forward(model, adapter, ids)
        golds = [torch.tensor(e.target_ids, device=device) for e in encoded]
        clean = [target_values(trace.logits[p:p + 1, list(e.targets)], golds[p], self.target)[0]
                 for p, e in enumerate(encoded)]
        # w[p][j]: (S_p, N) activations of prompt p, layer j, at its blank positions
        w = [[trace.activations[p, j, list(e.blank)].float() for j in range(kn.num_layers)]
             for p, e in enumerate(encoded)]
        n_prompts = len(encoded)
        scores = torch.zeros(n_prompts, kn.num_layers, kn.num_neurons, device=device)
        delta = torch.zeros(n_prompts, kn.num_layers, device=device) if self.alphas[0] == 0.0 else None
        blocks = adapter.blocks(model)
        last = len(blocks) - 1
        fast_last = adapter.block_at is not None and adapter.block_at_supported(
            blocks[last], trace.layer_args[last], trace.layer_kwargs[last])
        for chunk in self._layer_chunks(m * n_prompts):
            targets = set(chunk)
            leaves, order = [], []  # order: (layer, prompt) for each block of m rows
            done = []  # hidden states at the scored positions, per finished block of rows
            h = None  # full-sequence rows still going up
            with torch.enable_grad(), self._autocast(device):
                for j in range(chunk[0], len(blocks)):
                    if h is not None and j == last and fast_last:
                        first = len(done)
                        for b in range(first, len(order)):
                            rows = h[(b - first) * m:(b - first + 1) * m]
                            done.append(adapter.block_at(blocks[j], rows, list(encoded[order[b][1]].targets)))
                        h = None
                    elif h is not None:
                        h = run_block(blocks[j], h, trace.layer_args[j], trace.layer_kwargs[j])
                    if j not in targets:
                        continue
                    fresh = []
                    for p, e in enumerate(encoded):
                        leaf = self._points(w[p][j])
                        fresh.append(self._fan_out(j, trace, p, list(e.blank), leaf))
                        leaves.append(leaf)
                        order.append((j, p))
                    h = torch.cat(fresh) if h is None else torch.cat([h] + fresh)
                if not order:
                    continue
                first = len(done)
                for b in range(first, len(order)):
                    rows = h[(b - first) * m:(b - first + 1) * m]
                    done.append(rows[:, list(encoded[order[b][1]].targets)])
                sizes = [x.shape[1] for x in done]
                flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in done])
                logits = adapter.head(model, flat).float()
                values, start = [], 0
                for (_, p), k in zip(order, sizes):
                    block_logits = logits[start:start + m * k].view(m, k, -1)
                    values.append(target_values(block_logits, golds[p], self.target))
                    start += m * k
                values = torch.stack(values)  # (blocks, m)
            grads = torch.autograd.grad(values.sum(), leaves)
            values = values.detach()
            for (j, p), g, v in zip(order, grads, values):
                attr = self._combine(g, w[p][j])  # (S_p, N)
                scores[p, j] = attr.sum(0)
                if delta is not None:
                    delta[p, j] = attr.sum() - (clean[p] - v[0])
        return [(scores[p], torch.stack([x.mean(0) for x in w[p]]), clean[p],
                 None if delta is None else delta[p]) for p in range(n_prompts)]

    def _fan_out(self, layer, trace, p, blank, leaf):
        """Replay block `layer` for prompt p; fan out to the path points at the down projection."""
        kn = self.kn
        m = leaf.shape[0]

        def hook(module, args):
            x = as_3d(args[0], 1)
            x = x.expand(m, -1, -1).clone()
            x[:, blank, :] = leaf.to(x.dtype)
            return (x.reshape(m * x.shape[1], -1) if args[0].dim() == 2 else x,) + tuple(args[1:])

        handle = kn.adapter.down_projection(kn.model, layer).register_forward_pre_hook(hook)
        with hooked([handle]):
            return run_block(kn.adapter.blocks(kn.model)[layer], trace.layer_inputs[layer][p:p + 1],
                             trace.layer_args[layer], trace.layer_kwargs[layer])

    # -- causal LMs: prefix cache -------------------------------------------------------------------
    def _causal_prompt(self, e):
        kn, model, adapter = self.kn, self.kn.model, self.kn.adapter
        device = kn.device
        m = self.steps
        b0 = e.blank[0]
        ids = torch.tensor([e.ids], device=device)
        prefix = compute_prefix(model, ids[:, :b0])
        suffix = ids[:, b0:]  # the blank, then the teacher-forced answer tokens
        gold = torch.tensor(e.target_ids, device=device)
        seen: dict[int, torch.Tensor] = {}

        def read(j):
            def hook(module, args):
                seen[j] = as_3d(args[0], 1)[0, 0].detach().float()
            return hook

        sites = [adapter.down_projection(model, j) for j in range(kn.num_layers)]
        with torch.no_grad(), hooked([s.register_forward_pre_hook(read(j)) for j, s in enumerate(sites)]):
            clean = target_values(run_after_prefix(model, prefix, suffix), gold, self.target)[0]
        w = torch.stack([seen[j] for j in range(kn.num_layers)])  # (L, N)
        scores = torch.zeros(kn.num_layers, kn.num_neurons, device=device)
        delta = torch.zeros(kn.num_layers, device=device) if self.alphas[0] == 0.0 else None
        for chunk in self._layer_chunks(m):
            leaves = {j: self._points(w[j]) for j in chunk}
            rows = m * len(chunk)

            def inject(j, r, rows=rows, leaves=leaves):
                def hook(module, args):
                    x = as_3d(args[0], rows).clone()
                    x[r * m:(r + 1) * m, 0, :] = leaves[j].to(x.dtype)
                    return (x.reshape(args[0].shape),) + tuple(args[1:])
                return hook

            handles = [sites[j].register_forward_pre_hook(inject(j, r)) for r, j in enumerate(chunk)]
            with torch.enable_grad(), self._autocast(device), hooked(handles):
                logits = run_after_prefix(model, prefix, suffix.expand(rows, -1))
                values = target_values(logits, gold, self.target)
            grads = torch.autograd.grad(values.sum(), [leaves[j] for j in chunk])
            values = values.detach().view(len(chunk), m)
            for r, (j, g) in enumerate(zip(chunk, grads)):
                attr = self._combine(g, w[j])
                scores[j] = attr
                if delta is not None:
                    delta[j] = attr.sum() - (clean - values[r, 0])
        return scores, w, clean, delta
