"""Subject-neuron edit: write the new answer into the value slots of the few neurons that carry the subject.

Why it exists.  The paper's neurons are found by attribution at the blank, so they carry the
*answer*: on 71 SmolLM2 test cases, editing them rewrote the neighbours that share the true answer
(NS 0.18 there, `results/edit/bench-smollm2-135m-per30/`).  What tells "Japan" from "Empire of
Japan" is the subject's own representation.  At one layer, the neurons' coefficients at the
subject's last token are ROME's key k*; a few of them carry most of what is particular to this
subject against ordinary text.  This edit changes only those neurons' value slots.

What it does (kneuron's own method, not the paper's; kind "subject"):

1. k*, v* and the direction u = C^-1 k* / (k*^T C^-1 k*) exactly as ROME computes them
   (`kneuron.edits.rome.compute_rome`, every setting and deviation documented there), with the
   edit prompts as ROME's prompts.  u . k* = 1, and u_j k*_j is neuron j's share of it.
2. The neurons: the `count` neurons of that layer with the largest share u_j k*_j (the subject's
   neurons, in the metric of ordinary text's keys: a neuron that fires as much on any text gets a
   small share however large its coefficient).
3. ROME's insertion restricted to those slots: with S the chosen neurons,
   W'_S = W_S + (v* - W k* - b) (A_SS^-1 k*_S)^T / (k*_S^T A_SS^-1 k*_S), where A is ROME's
   ridged C.  Then W' k* + b = v* exactly, as in ROME; the other slots do not move.

`count` = the layer's width is ROME itself (same update, up to the ridge's scale over the block).

`context_fit` (a number mu, or None for step 3 as written) replaces the exact insertion at the mean
key by a least-squares fit to every context's key k_r (each edit prompt after each prefix):
u_S = (K_S^T K_S / n + mu A_SS)^-1 mean_r k_r,S, so that u_S . k_r is near 1 in every context.
Why: k* is a mean, and the keys of a bare prompt that *starts* with the subject (no BOS token, as
in SmolLM2) lie far from it: u . k_r was 0.34 there against about 1.1 after a prefix (tune case
"Isaac Newton"), so the edit reached a third of its strength on exactly the prompts it was asked
to change.  The change is still rank one, v* - W k* - b times u_S; mu trades fit against C-metric
size (locality), and is chosen on the tune split.
The default count was chosen on the tune split of the edit benchmark (docs/results/editing.md).
The result is an ordinary `Edit`: apply, undo bit for bit, save, load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from kneuron.edits.rome import compute_rome, insertion_direction, key_covariance, ridged
from kneuron.edits.value_slots import Edit, make_edit
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

if TYPE_CHECKING:
    from kneuron.edits.rome import RomeUpdate
    from kneuron.knowledge_model import KnowledgeModel

DEFAULT_COUNT = 32
DEFAULT_STEPS = 20  # v*'s optimisation passes (ROME's v_num_grad_steps); chosen on the tune split
DEFAULT_CONTEXT_FIT = 10.0  # None: the exact insertion at the mean key; chosen on the tune split
# Bound on v*'s change, x the hidden norm: ROME's clamp_norm_factor.  The tune split picked 3 for generation
# entropy; on 30 test cases 3 lost ES (0.975 -> 0.886) and gained no entropy (x 0.886 -> 0.885), so ROME's 4 stays
# (results/edit/bench-subject-clamp3-smollm2-135m-per30/).
DEFAULT_CLAMP_NORM = 4.0


def subject_neurons(update: RomeUpdate, count: int) -> list[Neuron]:
    """The `count` neurons of the update's layer with the largest share u_j k*_j of u . k* = 1."""
    if int(count) < 1:
        raise KneuronError(f"the subject edit needs at least one neuron, got count={count}")
    share = update.direction * update.key
    order = torch.argsort(share, descending=True)[:int(count)]
    return [Neuron(update.layer, int(j)) for j in order]


def restricted_direction(cov: torch.Tensor, key: torch.Tensor, columns: Sequence[int], ridge: float = 1e-4,
                         mom2_weight: float = 1.0) -> torch.Tensor:
    """u_S = A_SS^-1 k*_S / (k*_S^T A_SS^-1 k*_S): ROME's A = mom2_weight C + ridge mean(diag C) I, on the block."""
    idx = torch.as_tensor(list(columns), dtype=torch.long)
    return insertion_direction(cov[idx][:, idx], key[idx], ridge=ridge, mom2_weight=mom2_weight,
                               scale=float(torch.diagonal(cov).mean()),
                               degenerate="on the chosen neurons: they carry none of the subject's key")


def context_direction(cov: torch.Tensor, keys: torch.Tensor, columns: Sequence[int], context_fit: float,
                      ridge: float = 1e-4, mom2_weight: float = 1.0) -> torch.Tensor:
    """u_S = (K_S^T K_S / n + context_fit A_SS)^-1 mean(K_S): u_S . k_r near 1 for every context key k_r."""
    if not context_fit > 0:
        raise KneuronError(f"context_fit must be > 0, got {context_fit}")
    idx = torch.as_tensor(list(columns), dtype=torch.long)
    k = keys[:, idx].to(torch.float64)
    a = ridged(cov[idx][:, idx], ridge=ridge, mom2_weight=mom2_weight, scale=float(torch.diagonal(cov).mean()))
    return torch.linalg.solve(k.T @ k / k.shape[0] + context_fit * a, k.mean(0))


def plan_subject_update(kn: KnowledgeModel, subject: str, prompts: str | Sequence[str], target_new: str, *,
                        count: int = DEFAULT_COUNT, steps: int = DEFAULT_STEPS,
                        context_fit: float | None = DEFAULT_CONTEXT_FIT, clamp_norm: float = DEFAULT_CLAMP_NORM,
                        layer: int | None = None, texts: Sequence[str] | None = None, ridge: float = 1e-4,
                        mom2_weight: float = 1.0, seed: int = 0, cache=True, **rome_options) -> Edit:
    """The subject-neuron edit making `subject` lead to `target_new` (kind "subject"); not applied.

    `steps`, `clamp_norm` and `rome_options` go to `compute_rome` (lr, kl_factor, weight_decay,
    prefixes, cov_tokens, stop_prob).  Reads the model only.
    """
    if int(count) < 1:
        raise KneuronError(f"the subject edit needs at least one neuron, got count={count}")
    update = compute_rome(kn, subject, prompts, target_new, layer=layer, texts=texts, ridge=ridge, steps=steps,
                          clamp_norm=clamp_norm, mom2_weight=mom2_weight, seed=seed, cache=cache, **rome_options)
    return subject_edit(kn, update, count, texts=texts, ridge=ridge, mom2_weight=mom2_weight, seed=seed, cache=cache,
                        cov_tokens=rome_options.get("cov_tokens"), context_fit=context_fit)


def subject_edit(kn: KnowledgeModel, update: RomeUpdate, count: int = DEFAULT_COUNT, *,
                 texts: Sequence[str] | None = None, ridge: float = 1e-4, mom2_weight: float = 1.0, seed: int = 0,
                 cache=True, cov_tokens: int | None = None, neurons: Sequence[int] | None = None,
                 context_fit: float | None = DEFAULT_CONTEXT_FIT) -> Edit:
    """The ROME update `update` restricted to its `count` subject neurons, against `kn`'s current weights.

    `neurons` (indices in the update's layer) replaces the choice: the control that inserts the
    same pair through other slots.  `context_fit`: see the module's docstring."""
    if neurons is None:
        neurons = subject_neurons(update, min(int(count), kn.num_neurons))
    else:
        neurons = [Neuron(update.layer, int(j)) for j in dict.fromkeys(neurons)]
        if not neurons or not all(0 <= n.index < kn.num_neurons for n in neurons):
            raise KneuronError(f"neurons must be 1 to {kn.num_neurons} indices in [0, {kn.num_neurons})")
    extra = {} if cov_tokens is None else {"cov_tokens": cov_tokens}
    cov, _ = key_covariance(kn, update.layer, texts, seed=seed, cache=cache, **extra)
    columns = [n.index for n in neurons]
    if context_fit is None:
        u = restricted_direction(cov, update.key, columns, ridge=ridge, mom2_weight=mom2_weight)
    elif update.context_keys is None:
        raise KneuronError("context_fit needs the update's per-context keys (compute_rome records them)")
    else:
        u = context_direction(cov, update.context_keys, columns, context_fit, ridge=ridge, mom2_weight=mom2_weight)
    residual = update.residual(kn)
    change = {n: residual * float(u[i]) for i, n in enumerate(neurons)}

    def compute(neuron, current):
        return (current.to("cpu", torch.float64) + change[neuron]).to(current.dtype).to(current.device)

    share = float((update.direction * update.key)[columns].sum())
    info = {key: value for key, value in update.info.items() if key != "history"}
    info.update(method="subject-neuron edit (kneuron.edits.subject)", count=len(neurons), key_share=share,
                residual_norm=float(residual.norm()), context_fit=context_fit)
    if update.context_keys is not None:  # how much of the change each context's key receives (1 = all)
        reach = update.context_keys[:, columns] @ u
        info.update(context_reach_min=float(reach.min()), context_reach_mean=float(reach.mean()))
    return make_edit(kn, "subject", neurons, compute, info)


def subject_update(kn: KnowledgeModel, subject: str, prompts: str | Sequence[str], target_new: str,
                   **options) -> Edit:
    """`plan_subject_update(...)` applied; returns the applied `Edit`."""
    return plan_subject_update(kn, subject, prompts, target_new, **options).apply(kn)
