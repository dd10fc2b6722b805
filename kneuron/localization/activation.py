"""The activation itself as a score: the paper's baseline method."""

from __future__ import annotations

import torch

from kneuron.localization.registry import LocalizationMethod, register


@register
class Activation(LocalizationMethod):
    """The neuron's activation at the blank: the paper's baseline, which ignores the answer's gradient."""

    name = "activation"
    order = 20

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        return kn.activations(prompt, answer).float().cpu()
