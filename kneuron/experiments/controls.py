"""Neuron sets to compare against: the activation baseline (from a run) and seeded random sets."""

from __future__ import annotations

from kneuron.runs.rundir import neuron_sets
from kneuron.selection import random_like


def method_sets(table, num_layers: int, num_neurons: int, seed: int) -> dict[str, dict[int, list]]:
    """{"kn", "baseline", "random"} -> {fact: neurons}; random matches the kn counts fact by fact."""
    kn_sets = neuron_sets(table, "kn")
    facts = sorted(kn_sets)
    rnd = random_like([kn_sets[f] for f in facts], num_layers, num_neurons, seed=seed)
    return {"kn": kn_sets, "baseline": neuron_sets(table, "baseline"), "random": dict(zip(facts, rnd))}
