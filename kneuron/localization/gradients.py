"""Activations and dP/da at the blank, in one forward and one backward pass.

What the gradient methods share.  P is the gold answer's probability, as for IG
(`kneuron.attribution.targets`, "product").  With several blank positions (a masked LM's
multi-token answer) activations and gradients are averaged over them, as
`KnowledgeModel.activations` does.
"""

from __future__ import annotations

import torch

from kneuron.attribution.targets import target_values
from kneuron.models.replay import as_3d


def _hooks(kn, blank: list[int], leaves: dict | None, reads: dict):
    """Pre-hooks on every down projection: read the blank's activations into `reads` (and, unless
    `leaves` is None, keep them in `leaves` as points of the graph to differentiate by)."""
    handles = []
    for layer in range(kn.num_layers):
        site = kn.adapter.down_projection(kn.model, layer)

        def hook(module, args, layer=layer):
            x = as_3d(args[0], 1)
            reads[layer] = x[0, blank].detach().float().mean(0)
            if leaves is None:
                return None
            # Not a detached leaf: the gradient of a lower layer must still flow through the blank's
            # activations in the layers above it.
            point = x[0, blank]
            if not point.requires_grad:  # the lowest layer (frozen weights): start the graph here
                point = point.detach().requires_grad_(True)
            leaves[layer] = point
            x = x.clone()
            x[0, blank] = point
            return (x.reshape(args[0].shape),) + tuple(args[1:])

        handles.append(site.register_forward_pre_hook(hook))
    return handles


def activation_and_gradient(kn, prompt: str, answer: str, target: str = "product"):
    """(activations, dP/d activations, P), the first two (num_layers, num_neurons), at the blank."""
    enc = kn.encode(prompt, answer)
    blank = list(enc.blank)
    ids = torch.tensor([enc.ids], device=kn.device)
    leaves, reads = {}, {}
    handles = _hooks(kn, blank, leaves, reads)
    try:
        with torch.enable_grad():
            logits = kn.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, list(enc.targets)]
            value = target_values(logits, torch.tensor(enc.target_ids, device=kn.device), target)[0]
            grads = torch.autograd.grad(value, [leaves[n] for n in range(kn.num_layers)])
    finally:
        for h in handles:
            h.remove()
    acts = torch.stack([reads[n] for n in range(kn.num_layers)])
    grad = torch.stack([g.float().mean(0) for g in grads])
    return acts, grad, float(value.detach())
