"""Random-neuron control: as many neurons as the real set, drawn uniformly over the model.

Mirrors the commented-out control of the authors' editing script: each neuron is replaced by a
uniformly random (layer, index), so counts match.  Seeded; the seed goes into the run config.
"""

from __future__ import annotations

import numpy as np

from kneuron.neurons import Neuron


def random_like(neuron_sets, num_layers: int, num_neurons: int, seed: int = 0) -> list[list[Neuron]]:
    rng = np.random.default_rng(seed)
    out = []
    for neurons in neuron_sets:
        k = len(neurons)
        layers = rng.integers(0, num_layers, size=k)
        index = rng.integers(0, num_neurons, size=k)
        out.append([Neuron(int(a), int(b)) for a, b in zip(layers, index)])
    return out
