"""A neuron's address: (layer, index) of a coordinate of the FFN down projection's input."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from kneuron.errors import NeuronError


class Neuron(NamedTuple):
    layer: int
    index: int

    def __str__(self) -> str:  # the paper writes w^(layer)_index, 1-based layers
        return f"L{self.layer}.{self.index}"


def as_neurons(items: Iterable, num_layers: int, num_neurons: int) -> list[Neuron]:
    """Validate and normalise (layer, index) pairs; raises `NeuronError` naming the first bad one."""
    out = []
    for item in items:
        try:
            layer, index = (int(v) for v in item)
        except (TypeError, ValueError):
            raise NeuronError(f"a neuron is a (layer, index) pair, got {item!r}") from None
        if not 0 <= layer < num_layers:
            raise NeuronError(f"neuron {(layer, index)}: layer out of range 0..{num_layers - 1}")
        if not 0 <= index < num_neurons:
            raise NeuronError(f"neuron {(layer, index)}: index out of range 0..{num_neurons - 1}")
        out.append(Neuron(layer, index))
    return out
