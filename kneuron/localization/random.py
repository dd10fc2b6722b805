"""The random control: seeded uniform neurons, which any method worth its cost must beat."""

from __future__ import annotations

import numpy as np
import torch

from kneuron.localization.registry import LocalizationMethod, register
from kneuron.neurons import Neuron


@register
class Random(LocalizationMethod):
    """Seeded uniform scores, blind to the prompt: the control every method must beat.

    The top k of these scores are k distinct neurons drawn uniformly (i.i.d. continuous scores
    rank every k-subset alike), but not the same k as `draw` with the same seed: `compare` uses
    `draw`, whose draws its journals record.
    """

    name = "random"
    order = 60

    def attribute(self, kn, prompt: str, answer: str, *, subject: str = "", seed: int = 0) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(kn.num_layers, kn.num_neurons, generator=gen)

    def draw(self, num_layers: int, num_neurons: int, k: int, seed: int) -> list[Neuron]:
        """k distinct neurons drawn uniformly from all layers' neurons (seeded; `compare`'s random row)."""
        rng = np.random.default_rng(seed)
        flat = rng.choice(num_layers * num_neurons, size=min(k, num_layers * num_neurons), replace=False)
        return [Neuron(int(i) // num_neurons, int(i) % num_neurons) for i in flat]
