"""Interventions on a model: activation scaling at the blank (and, later, weight edits)."""

from kneuron.interventions.activations import scale_activations, scaled_probabilities

__all__ = ["scale_activations", "scaled_probabilities"]
