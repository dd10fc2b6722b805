"""Integrated gradients as localization methods: the paper's setting, and its one-step shortcut.

Both run the exact engine (`kneuron.attribution.IntegratedGradients`, zero baseline, left Riemann
sum); `KnowledgeModel.attribute(method="ig")` exposes every other option of that engine.
"""

from __future__ import annotations

import torch

from kneuron.localization.registry import LocalizationMethod, register


@register
class IG(LocalizationMethod):
    """Integrated gradients at the paper's settings: 20 steps from a zero baseline (left Riemann sum)."""

    name = "ig"
    order = 10
    steps = 20

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        from kneuron.attribution import IntegratedGradients

        return IntegratedGradients(kn, steps=self.steps).attribute(prompt, answer)[0].scores.float().cpu()


@register
class IGOneStep(IG):
    """Integrated gradients with one step (what EasyEdit runs on large models): cheap, but coarse."""

    name = "ig_1step"
    order = 40
    steps = 1
