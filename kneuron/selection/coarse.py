"""Per-prompt ("coarse") neuron sets (spec sections 2 and 4).

Knowledge neurons: attribution >= 0.2 x the prompt's maximum over all layers and neurons.
Activation baseline: activation >= 0.5 x the prompt's maximum activation.
The threshold is relative to the signed maximum, as in the authors' code; when the maximum is
<= 0 the rule behaves as the code does (typically nothing, or everything at exactly 0, is kept).
Neurons come out layer-major, index-ascending: the order of the authors' stored triplets, which
fixes the order of refined sets downstream.
"""

from __future__ import annotations

import torch

from kneuron.neurons import Neuron
from kneuron.ranges import FRACTION
from kneuron.selection.config import DEFAULT

KN_THRESHOLD = DEFAULT.threshold  # `SelectionConfig.threshold`
BASELINE_THRESHOLD = 0.5


def coarse_neurons(scores: torch.Tensor, threshold: float = KN_THRESHOLD) -> list[Neuron]:
    """Neurons whose score is >= threshold x max(scores); `scores` is (layers, neurons)."""
    FRACTION.check("threshold", threshold)
    cutoff = threshold * scores.max()
    layer, index = torch.nonzero(scores >= cutoff, as_tuple=True)
    return [Neuron(int(a), int(b)) for a, b in zip(layer.tolist(), index.tolist())]


def baseline_neurons(activations: torch.Tensor, threshold: float = BASELINE_THRESHOLD) -> list[Neuron]:
    """The "activation as attribution" baseline's per-prompt set."""
    return coarse_neurons(activations, threshold)
