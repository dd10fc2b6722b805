"""Gradient x activation: the first-order estimate of what zeroing a neuron does to P(answer)."""

from __future__ import annotations

import torch

from kneuron.localization.gradients import activation_and_gradient
from kneuron.localization.registry import LocalizationMethod, register


@register
class GradXAct(LocalizationMethod):
    """a x dP/da: the first-order estimate of the drop in P(answer) when the neuron is zeroed."""

    name = "grad_x_act"
    order = 30

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        acts, grad, _ = activation_and_gradient(kn, prompt, answer)
        return (acts * grad).cpu()
