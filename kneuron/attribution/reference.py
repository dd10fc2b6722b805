"""The slow, obviously correct attribution: what the authors' code does, one layer at a time.

For each layer: one clean forward pass, then one forward and backward pass of the whole model at
batch m (the prompt repeated), with the layer's activation vector at the blank overwritten by the
m path points.  Tests hold the fast engine to this, and benchmarks measure against it.
"""

from __future__ import annotations

import torch

from kneuron.attribution.paths import integration_points


def reference_attribution(kn, prompt: str, answer: str, steps: int = 20, method: str = "riemann_left"):
    """(scores, activations), each (num_layers, num_neurons), for one prompt."""
    model, adapter = kn.model, kn.adapter
    enc = kn.encode(prompt)
    gold = kn.answer_id(answer)
    ids = torch.tensor([enc.ids], device=kn.device)
    alphas, coefs = integration_points(method, steps)
    k0 = 0 if method == "riemann_left" else 1
    n_layers = kn.num_layers
    scores, acts = [], []
    for layer in range(n_layers):
        site = adapter.down_projection(model, layer)
        seen = {}

        def read(module, args, seen=seen):
            seen["w"] = args[0][0, enc.blank].detach().clone()

        handle = site.register_forward_pre_hook(read)
        with torch.no_grad():
            model(input_ids=ids)
        handle.remove()
        w = seen["w"].float()
        if method.startswith("riemann"):
            points = torch.arange(k0, k0 + steps, dtype=w.dtype, device=w.device)[:, None] * (w / steps)
        else:
            points = torch.tensor(alphas, device=w.device)[:, None] * w
        points.requires_grad_(True)

        def overwrite(module, args, points=points):
            x = args[0].clone()
            x[:, enc.blank, :] = points.to(x.dtype)
            return (x,) + tuple(args[1:])

        handle = site.register_forward_pre_hook(overwrite)
        try:
            with torch.enable_grad():
                logits = model(input_ids=ids.repeat(steps, 1)).logits[:, enc.blank, :].float()
                probs = torch.softmax(logits, dim=-1)[:, gold]
                (grad,) = torch.autograd.grad(probs.sum(), points)
        finally:
            handle.remove()
        if method.startswith("riemann"):
            scores.append(grad.sum(0) * (w / steps))
        else:
            scores.append((torch.tensor(coefs, device=w.device)[:, None] * grad).sum(0) * w)
        acts.append(w)
    return torch.stack(scores), torch.stack(acts)
