"""The paper's experiments as library functions returning tidy tables."""

from kneuron.experiments.activation_effects import (
    method_means,
    other_fact_effects,
    prompt_effects,
    relation_ratios,
)
from kneuron.experiments.fact_probe import FactProbe, probe_fact

__all__ = ["FactProbe", "method_means", "other_fact_effects", "probe_fact", "prompt_effects", "relation_ratios"]
