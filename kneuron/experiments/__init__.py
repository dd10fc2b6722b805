"""The paper's experiments as library functions returning tidy tables."""

from kneuron.experiments.activation_effects import method_means, prompt_effects, relation_ratios

__all__ = ["method_means", "prompt_effects", "relation_ratios"]
