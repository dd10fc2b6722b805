"""Neuron selection: per-prompt thresholds, per-fact refinement, per-relation adaptation, controls."""

from kneuron.selection.coarse import BASELINE_THRESHOLD, KN_THRESHOLD, baseline_neurons, coarse_neurons
from kneuron.selection.collateral import answer_key, answer_split
from kneuron.selection.config import SelectionConfig
from kneuron.selection.controls import random_like
from kneuron.selection.heldout import HELDOUT_PROMPTS, MIN_SELECTION_PROMPTS, check_heldout, heldout_split
from kneuron.selection.refine import Adaptation, adapt_p, refine
from kneuron.selection.specific import (
                                        SPECIFIC_FRACTION,
                                        SPECIFIC_RULES,
                                        check_specific_rule,
                                        effect_specific,
                                        specific_sets,
)

__all__ = ["BASELINE_THRESHOLD", "KN_THRESHOLD", "Adaptation", "adapt_p", "baseline_neurons",
           "coarse_neurons", "random_like", "refine", "SPECIFIC_FRACTION", "SPECIFIC_RULES",
           "check_specific_rule", "effect_specific", "specific_sets", "HELDOUT_PROMPTS", "MIN_SELECTION_PROMPTS",
           "check_heldout", "heldout_split", "SelectionConfig", "answer_key", "answer_split"]
