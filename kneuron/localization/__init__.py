"""Localization methods: which neurons does a model use for an answer?  One class per method.

Every method scores every neuron of every layer at the blank of one prompt, a (num_layers,
num_neurons) tensor in which higher means "more responsible for the answer":

    from kneuron.localization import get_method, method_names

    scores = get_method("grad_x_act").attribute(kn, "The capital of France is [MASK].", "Paris")

The package imports every module of its folder, and each method registers itself on import;
`register` adds one more from anywhere ("Adding a localization method" in the guide to comparing
methods).  `kneuron compare`, `KnowledgeModel.attribute(method=...)` and the documentation's
table all read the registry.
"""

import importlib
import pkgutil

from kneuron.localization.activation import Activation
from kneuron.localization.atp import NOISE_SCALE, AtP, corrupted_activations, embedding_std, subject_positions
from kneuron.localization.grad_x_act import GradXAct
from kneuron.localization.gradients import activation_and_gradient
from kneuron.localization.ig import IG, IGOneStep
from kneuron.localization.random import Random
from kneuron.localization.registry import LocalizationMethod, get_method, method_names, register, unregister

# Every other module of this folder is a method too: one file is all a new method needs.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["NOISE_SCALE", "IG", "Activation", "AtP", "GradXAct", "IGOneStep", "LocalizationMethod", "Random",
           "activation_and_gradient", "corrupted_activations", "embedding_std", "get_method", "method_names",
           "register", "subject_positions", "unregister"]
