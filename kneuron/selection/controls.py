"""Random-neuron control: as many neurons as the real set, drawn uniformly over the model, WITH replacement.

Mirrors the commented-out control of the authors' editing script: each neuron is replaced by a
uniformly random (layer, index), layer and index drawn independently, so the lists have the same
lengths.  The draws are with replacement, as there: a set may hold the same neuron twice (then it
has one distinct neuron fewer; rare: two draws from BERT-base's 12 x 3072 neurons coincide with
probability 1/36864), and a drawn neuron may also be one of the real set's.  Seeded; the seed goes
into the run config.

This is the control of the paper's experiments (probe, erasing, the controls table, multilingual).
`kneuron compare`'s `random` row draws differently on purpose: `random_neurons` of the compare
methods takes k *distinct* neurons (without replacement), because a budget of k neurons there
means k different neurons.  The two are kept apart; results depend on each draw.
"""

from __future__ import annotations

import numpy as np

from kneuron.neurons import Neuron


def random_like(neuron_sets, num_layers: int, num_neurons: int, seed: int = 0) -> list[list[Neuron]]:
    """For each set, as many uniformly random (layer, index) neurons, drawn with replacement (a set may
    repeat a neuron; see the module docstring), from one `numpy.random.default_rng(seed)` stream."""
    rng = np.random.default_rng(seed)
    out = []
    for neurons in neuron_sets:
        k = len(neurons)
        layers = rng.integers(0, num_layers, size=k)
        index = rng.integers(0, num_neurons, size=k)
        out.append([Neuron(int(a), int(b)) for a, b in zip(layers, index)])
    return out
