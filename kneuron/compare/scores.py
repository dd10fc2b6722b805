"""Per-prompt neuron scores of the localization methods `kneuron compare` ranks neurons by.

Every method scores every neuron of every layer at the blank, one prompt at a time, as a
(num_layers, num_neurons) tensor in which *higher means "more responsible for the answer"*:

- `ig`: integrated gradients, the exact engine at the paper's settings (20 steps, zero baseline).
- `ig_1step`: the same engine with one step (what EasyEdit runs on large models).
- `activation`: the activation itself (the paper's baseline, as a score).
- `grad_x_act`: a * dP/da, the first-order estimate of the drop in P(answer) when a is zeroed.
- `atp`: attribution patching.  (a_corrupt - a_clean) * dP/da estimates the change in P(answer)
  when the neuron takes its value from a run whose subject token embeddings carry seeded Gaussian
  noise of 3x the embeddings' standard deviation (as causal tracing does).  The neurons that carry
  the fact are those where that change is most negative, so the score is its negation,
  (a_clean - a_corrupt) * dP/da.  The subject is found in any letter case; `compare` skips a fact
  with a prompt that lacks it (recorded, like every skip).
- `random`: no score; `random_neurons` draws seeded uniform neurons.

P is the gold answer's probability, as for IG (`kneuron.attribution.targets`, "product").  With
several blank positions (a masked LM's multi-token answer) activations and gradients are averaged
over them, as `KnowledgeModel.activations` does.
"""

from __future__ import annotations

import re
import weakref

import numpy as np
import torch

from kneuron.attribution.targets import target_values
from kneuron.errors import KneuronError
from kneuron.models.replay import as_3d
from kneuron.neurons import Neuron

SCORED = ("ig", "activation", "grad_x_act", "ig_1step", "atp")
METHODS = SCORED + ("random",)
NOISE_SCALE = 3.0  # x the embeddings' standard deviation, as in causal tracing


def subject_positions(kn, prompt: str, subject: str) -> list[int]:
    """Token positions of `subject` (its first occurrence, in any letter case: "the Netherlands" in a
    prompt about "The Netherlands") in the model's input for `prompt`."""
    from kneuron.models.tokens import MASK, fill_mask_token

    text = fill_mask_token(prompt, kn.tokenizer) if kn.is_masked else (
        prompt.partition(MASK)[0].rstrip() if MASK in prompt else prompt)
    # A case-insensitive search on the text itself (not on text.lower(), whose length can differ).
    found = re.search(re.escape(subject.strip()), text, re.IGNORECASE) if subject.strip() else None
    if found is None:
        raise KneuronError(f"subject {subject!r} does not occur in the prompt {prompt!r} (atp corrupts it)")
    start, end = found.span()
    enc = kn.tokenizer(text, return_offsets_mapping=True)
    pos = [t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start]
    if not pos:
        raise KneuronError(f"subject {subject!r} has no tokens in the prompt {prompt!r}")
    return pos


def _hooks(kn, blank: list[int], leaves: dict, reads: dict):
    """Pre-hooks on every down projection: read the blank's activations (and keep them in `leaves`)."""
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


_EMBEDDING_STD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def embedding_std(emb: torch.nn.Module, rows: int = 65536) -> float:
    """Standard deviation of what the embedding layer *outputs* over the whole vocabulary (Gemma's
    layer multiplies its table by sqrt(hidden size): 25x on Gemma 3 270M, whose table alone would
    give noise 25x too weak); the noise of causal tracing is relative to it."""
    if emb not in _EMBEDDING_STD:
        n = emb.weight.shape[0]
        total = squares = 0.0
        for start in range(0, n, rows):
            out = emb(torch.arange(start, min(n, start + rows), device=emb.weight.device)).double()
            total, squares = total + float(out.sum()), squares + float((out * out).sum())
        count = n * emb.weight.shape[1]
        mean = total / count
        _EMBEDDING_STD[emb] = ((squares - count * mean * mean) / (count - 1)) ** 0.5
    return _EMBEDDING_STD[emb]


@torch.no_grad()
def corrupted_activations(kn, prompt: str, answer: str, subject: str, seed: int) -> torch.Tensor:
    """Activations at the blank with the subject's token embeddings noised (seeded)."""
    enc = kn.encode(prompt, answer)
    positions = subject_positions(kn, prompt, subject)
    extra = len(enc.blank) - 1  # a masked LM's answer of k tokens has k masks where the text had one
    positions = [p + extra if p > enc.blank[0] else p for p in positions]
    ids = torch.tensor([enc.ids], device=kn.device)
    emb = kn.model.get_input_embeddings()
    std = embedding_std(emb)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(len(positions), emb.weight.shape[1], generator=gen) * (NOISE_SCALE * std)

    def add_noise(module, args, out):
        out = out.clone()
        out[0, positions] = out[0, positions] + noise.to(out.device, out.dtype)
        return out

    reads: dict = {}
    handles = [emb.register_forward_hook(add_noise)] + _hooks(kn, list(enc.blank), None, reads)
    try:
        kn.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        for h in handles:
            h.remove()
    return torch.stack([reads[n] for n in range(kn.num_layers)])


def prompt_scores(kn, method: str, prompt: str, answer: str, subject: str = "", seed: int = 0) -> torch.Tensor:
    """(num_layers, num_neurons) scores of one prompt by a scored method (see the module docstring)."""
    if method == "ig":
        return kn.attribute(prompt, answer, steps=20).scores.float().cpu()
    if method == "ig_1step":
        return kn.attribute(prompt, answer, steps=1).scores.float().cpu()
    if method == "activation":
        return kn.activations(prompt, answer).float().cpu()
    acts, grad, _ = activation_and_gradient(kn, prompt, answer)
    if method == "grad_x_act":
        return (acts * grad).cpu()
    if method == "atp":
        corrupt = corrupted_activations(kn, prompt, answer, subject, seed)
        return ((acts - corrupt) * grad).cpu()
    raise KneuronError(f"unknown scored method {method!r}; use one of: {', '.join(SCORED)}")


def top_neurons(scores: torch.Tensor, k: int) -> list[Neuron]:
    """The k highest-scoring neurons, best first (ties: lower flat index first)."""
    flat = scores.flatten().double()
    k = min(k, flat.numel())
    order = np.lexsort((np.arange(flat.numel()), -flat.numpy()))[:k]
    n = scores.shape[1]
    return [Neuron(int(i) // n, int(i) % n) for i in order]


def random_neurons(num_layers: int, num_neurons: int, k: int, seed: int) -> list[Neuron]:
    """k distinct neurons drawn uniformly from all layers' neurons (seeded)."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(num_layers * num_neurons, size=min(k, num_layers * num_neurons), replace=False)
    return [Neuron(int(i) // num_neurons, int(i) % num_neurons) for i in flat]
