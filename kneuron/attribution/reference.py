"""The slow, obviously correct attribution: what the authors' code does, one layer at a time.

For each layer: one clean forward pass, then one forward and backward pass of the whole model at
batch m (the prompt repeated), with the layer's activation vectors at the blank overwritten by the
m path points.  Tests hold the fast engine to this, and benchmarks measure against it.
`pad_to=128` also pads every sequence to 128 tokens, as the released code does (spec section 8):
the result is the same (padding is masked), only the cost is the authors'.
"""

from __future__ import annotations

import torch

from kneuron.attribution.paths import integration_points
from kneuron.attribution.targets import target_values
from kneuron.models.replay import as_3d


def reference_attribution(kn, prompt: str, answer: str, steps: int = 20, rule: str = "riemann_left",
                          target: str = "product", pad_to: int | None = None, layers=None,
                          rows_per_pass: int | None = None):
    """(scores, activations), each (len(layers), num_neurons) (default all layers), for one prompt.

    `rows_per_pass` splits a layer's m rows into several passes (same sums; bounds memory)."""
    model, adapter = kn.model, kn.adapter
    enc = kn.encode(prompt, answer)
    blank, scored = list(enc.blank), list(enc.targets)
    gold = torch.tensor(enc.target_ids, device=kn.device)
    ids = torch.tensor([enc.ids], device=kn.device)
    mask = torch.ones_like(ids)
    if pad_to is not None and pad_to > ids.shape[1]:  # right padding keeps every real position
        pad = kn.tokenizer.pad_token_id if kn.tokenizer.pad_token_id is not None else 0
        extra = pad_to - ids.shape[1]
        ids = torch.cat([ids, torch.full((1, extra), pad, device=ids.device, dtype=ids.dtype)], dim=1)
        mask = torch.cat([mask, torch.zeros((1, extra), device=mask.device, dtype=mask.dtype)], dim=1)
    alphas, coefs = integration_points(rule, steps)
    k0 = 0 if rule == "riemann_left" else 1
    scores, acts = [], []
    for layer in range(kn.num_layers) if layers is None else layers:
        site = adapter.down_projection(model, layer)
        seen = {}

        def read(module, args, seen=seen):
            seen["w"] = as_3d(args[0], 1)[0, blank].detach().clone()

        handle = site.register_forward_pre_hook(read)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
        handle.remove()
        w = seen["w"].float()  # (S, N)
        if rule.startswith("riemann"):
            points = torch.arange(k0, k0 + steps, dtype=w.dtype, device=w.device)[:, None, None] * (w / steps)
        else:
            points = torch.tensor(alphas, device=w.device)[:, None, None] * w
        points.requires_grad_(True)

        grads = []
        for start in range(0, steps, rows_per_pass or steps):
            part = points[start:start + (rows_per_pass or steps)]
            rows = part.shape[0]

            def overwrite(module, args, part=part, rows=rows):
                x = as_3d(args[0], rows).clone()
                x[:, blank, :] = part.to(x.dtype)
                return (x.reshape(args[0].shape),) + tuple(args[1:])

            handle = site.register_forward_pre_hook(overwrite)
            try:
                with torch.enable_grad():
                    logits = model(input_ids=ids.repeat(rows, 1), attention_mask=mask.repeat(rows, 1)).logits[:, scored]
                    values = target_values(logits, gold, target)
                    grads.append(torch.autograd.grad(values.sum(), points)[0][start:start + rows])
            finally:
                handle.remove()
        grad = torch.cat(grads)
        if rule.startswith("riemann"):
            attr = grad.sum(0) * (w / steps)
        else:
            attr = (torch.tensor(coefs, device=w.device)[:, None, None] * grad).sum(0) * w
        scores.append(attr.sum(0))
        acts.append(w.mean(0))
    return torch.stack(scores), torch.stack(acts)
