"""Knowledge attribution: integrated gradients of the gold probability w.r.t. neuron activations."""

from kneuron.attribution.integrated_gradients import IntegratedGradients
from kneuron.attribution.paths import METHODS, integration_points
from kneuron.attribution.result import AttributionResult

__all__ = ["AttributionResult", "IntegratedGradients", "METHODS", "integration_points"]
