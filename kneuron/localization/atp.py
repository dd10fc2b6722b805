"""Attribution patching (AtP) against a run with the subject corrupted, as causal tracing does.

(a_corrupt - a_clean) * dP/da estimates the change in P(answer) when the neuron takes its value
from a run whose subject token embeddings carry seeded Gaussian noise of `NOISE_SCALE` times the
embeddings' standard deviation.  The neurons that carry the fact are those where that change is
most negative, so the score is its negation, (a_clean - a_corrupt) * dP/da.  The subject is found
in any letter case; a prompt that lacks it cannot be scored (`compare` skips the fact, recorded).
"""

from __future__ import annotations

import re
import weakref

import torch

from kneuron.errors import KneuronError
from kneuron.localization.gradients import _hooks, activation_and_gradient
from kneuron.localization.registry import LocalizationMethod, register

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


@register
class AtP(LocalizationMethod):
    """Attribution patching: (a_clean - a_corrupt) x dP/da, with the subject's embeddings noised (seeded)."""

    name = "atp"
    order = 50
    needs_subject = True

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        acts, grad, _ = activation_and_gradient(kn, prompt, answer)
        corrupt = corrupted_activations(kn, prompt, answer, subject, seed)
        return ((acts - corrupt) * grad).cpu()

    def check(self, kn, prompt: str, answer: str, *, subject: str = "") -> None:
        subject_positions(kn, prompt, subject)
