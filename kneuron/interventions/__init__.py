"""Interventions on a model: activation scaling at the blank (and, later, weight edits)."""

from kneuron.interventions.activations import scale_activations, scaled_probabilities
from kneuron.interventions.cached import prefix_caches
from kneuron.interventions.specificity import SpecificityTask, effect_specific_sets, single_neuron_changes

__all__ = ["SpecificityTask", "effect_specific_sets", "prefix_caches", "scale_activations", "scaled_probabilities",
           "single_neuron_changes"]
