"""Knowledge attribution: integrated gradients of the gold probability w.r.t. neuron activations."""

from kneuron.attribution.integrated_gradients import AttributionResult, IntegratedGradients
from kneuron.attribution.paths import METHODS, integration_points

__all__ = ["AttributionResult", "IntegratedGradients", "METHODS", "integration_points"]
