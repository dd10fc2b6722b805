"""From per-prompt scores to a method's neurons: the k highest-scoring ones.

The scores themselves come from the registered localization methods (`kneuron.localization`).
"""

from __future__ import annotations

import numpy as np
import torch

from kneuron.neurons import Neuron


def top_neurons(scores: torch.Tensor, k: int) -> list[Neuron]:
    """The k highest-scoring neurons, best first (ties: lower flat index first)."""
    flat = scores.flatten().double()
    k = min(k, flat.numel())
    order = np.lexsort((np.arange(flat.numel()), -flat.numpy()))[:k]
    n = scores.shape[1]
    return [Neuron(int(i) // n, int(i) % n) for i in order]
