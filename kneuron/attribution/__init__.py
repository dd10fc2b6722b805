"""Knowledge attribution: integrated gradients of the gold probability w.r.t. neuron activations."""

from kneuron.attribution.integrated_gradients import IntegratedGradients
from kneuron.attribution.paths import INTEGRATION_RULES, integration_points
from kneuron.attribution.result import AttributionResult

__all__ = ["INTEGRATION_RULES", "AttributionResult", "IntegratedGradients", "integration_points"]
