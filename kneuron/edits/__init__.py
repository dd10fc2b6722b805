"""Editing knowledge in the weights: fact updating (spec 5.4) and relation erasing (spec 5.5).

Both return an `Edit`: the new value slots plus what is needed to undo, save and re-apply them.

    edit = kn.update_fact(neurons, "Dublin", "Paris", prompts=prompts)   # applied
    edit.save("dublin-to-paris.kedit")
    edit.undo()                                            # weights restored bit for bit
    Edit.load("dublin-to-paris.kedit").apply(other_kn)     # same shape required
"""

from kneuron.edits.erase import REPLACEMENTS, erase_relation, plan_erase, relation_neurons
from kneuron.edits.rome import RomeUpdate, compute_rome, key_covariance, plan_rome, rome_edit
from kneuron.edits.subject import plan_subject_update, subject_update
from kneuron.edits.update import (
    DIRECTIONS,
    EMBEDDINGS,
    SCALINGS,
    answer_embeddings,
    fit_update,
    neuron_signs,
    plan_update,
    select_update_neurons,
    selective_neurons,
    update_fact,
    update_lambdas,
)
from kneuron.edits.value_slots import Edit, ModelShape, make_edit, slot

__all__ = [
    "DIRECTIONS",
    "EMBEDDINGS",
    "answer_embeddings",
    "fit_update",
    "selective_neurons",
    "neuron_signs",
    "REPLACEMENTS",
    "SCALINGS",
    "Edit",
    "ModelShape",
    "erase_relation",
    "make_edit",
    "plan_erase",
    "plan_update",
    "relation_neurons",
    "select_update_neurons",
    "slot",
    "update_fact",
    "update_lambdas",
    "RomeUpdate",
    "compute_rome",
    "key_covariance",
    "plan_rome",
    "rome_edit",
    "plan_subject_update",
    "subject_update",
]
