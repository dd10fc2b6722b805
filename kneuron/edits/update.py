"""Updating a fact by editing its knowledge neurons' value slots (spec 5.4, the paper's Table 6).

For each neuron i kept for the fact, its value slot v_i (a column of the FFN down projection) is

    v_i <- v_i - lambda1_i * E[t] + lambda2_i * E[t']

with E the input word embeddings, t the original answer and t' the new one.  Paper-faithful
(`scaling="norm"`, what the authors' code runs with `--norm_lambda1 1 --norm_lambda2 8`):
lambda1_i = ||v_i|| / ||E[t]|| * lambda1 and lambda2_i = ||v_i|| / ||E[t']|| * lambda2, both from
the slot before the edit; so the removed vector has the norm of the slot and the added one
`lambda2` times it.  `scaling="raw"` uses lambda1 and lambda2 as plain factors (the paper's text).
Biases are untouched.

Which neurons (`select_update_neurons`, the authors' `select_kn`): the fact's refined neurons,
minus those shared by more than 10% of the relation's facts.  The counter starts at 1 for the
fact itself and then adds 1 for every fact of the relation (the fact included) holding the
neuron, so a neuron of the fact alone counts 2; it is dropped when count > 0.1 * N_facts.
No top-k cap: every remaining neuron is edited.

Two named deviations, on by default, make the rule correct on models the paper never met:

- `direction="signed"`: each slot's change is multiplied by the sign of its neuron's mean
  activation at the blank over the fact's prompts.  The neuron writes a_i * v_i; in a gated MLP
  (SwiGLU, GeGLU) a_i = act(gate) * up is often negative, and then subtracting E[t] from v_i *adds*
  t to the output.  `direction="paper"` is the literal rule.  The default, `"auto"`, is "signed"
  on gated MLPs (`Adapter.gated`) and "paper" elsewhere, so that BERT's results stay the paper's
  bit for bit.  (GELU can be negative too: one of the trained fact world's knowledge neurons has a
  negative mean activation, where "signed" and "paper" differ; ask for "signed" to handle it.)
- `embedding="output"`: E is the unembedding matrix (the rows the head reads), not the input
  embeddings.  The two are the same matrix in tied models (BERT, SmolLM2, Gemma 3);
  `embedding="input"` is the literal rule.

`fit_update` goes further (kneuron's edit, not the paper's): it keeps the direction and the ratio
of lambda1 to lambda2, and scales both by the smallest factor (times a margin) that makes the new
answer the top-1 on every prompt given to the editor.  A fixed lambda2 = 8 pushes too hard on some
facts and not enough on others; the fitted scale is the smallest edit that does what was asked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

from kneuron.edits.value_slots import Edit, make_edit, slot
from kneuron.errors import KneuronError
from kneuron.models.tokens import token_text
from kneuron.neurons import Neuron, as_neurons

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

SCALINGS = ("norm", "raw")
DIRECTIONS = ("auto", "signed", "paper")
# kneuron's default edit, chosen on the tune split of SmolLM2's CounterFact-style cases
# (results/edit/tune-smollm2-135m/tune.md): the highest S over margins 0.75-2 and selectivity off / 0.5.
FIT_MARGIN = 0.75  # times the smallest strength that makes the new answer top-1 on the edit's prompts
SELECTIVITY = 0.5  # selective_neurons' threshold, applied when other subjects' prompts are given
MAX_SCALE = 8.0  # the strongest fitted edit; one that needs more is declined
EMBEDDINGS = ("output", "input")


def _key(n) -> tuple[int, int]:
    layer, index = n
    return int(layer), int(index)


def select_update_neurons(fact_neurons: Sequence, relation_neurons: Iterable[Sequence], share: float = 0.1,
                          num_facts: int | None = None) -> list[Neuron]:
    """The fact's neurons that at most `share` of the relation's facts hold (authors' `select_kn`).

    `relation_neurons` are the neuron sets of all facts of the relation (the fact's own included,
    empty sets included); `num_facts` defaults to their number.  Order = the fact's order.
    """
    relation_neurons = [list(s) for s in relation_neurons]
    n_facts = len(relation_neurons) if num_facts is None else int(num_facts)
    counter: Counter = Counter()
    for n in fact_neurons:
        counter.update([_key(n)])
    for neurons in relation_neurons:
        for n in neurons:
            k = _key(n)
            if k in counter:
                counter.update([k])
    return [Neuron(*k) for k, v in counter.items() if not v > n_facts * share]


def answer_embeddings(kn: KnowledgeModel, embedding: str = "output") -> torch.Tensor:
    """The (V, H) matrix whose rows an update adds and removes."""
    if embedding not in EMBEDDINGS:
        raise KneuronError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    return kn.adapter.output_embeddings(kn.model) if embedding == "output" else kn.adapter.word_embeddings(kn.model)


@torch.no_grad()
def neuron_signs(kn: KnowledgeModel, neurons: Sequence[Neuron], prompts: Sequence[str]) -> list[float]:
    """+1 or -1 per neuron: the sign of its mean activation at the blank over `prompts` (0 counts as +1)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("the neurons' signs need at least one prompt of the fact")
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)
    mean = torch.stack([kn.activations(p) for p in prompts]).mean(0)
    return [-1.0 if float(mean[n.layer, n.index]) < 0 else 1.0 for n in neurons]


@torch.no_grad()
def selective_neurons(kn: KnowledgeModel, neurons: Sequence[Neuron], prompts: Sequence[str], contrast: Sequence[str],
                      selectivity: float = SELECTIVITY) -> list[Neuron]:
    """The neurons that fire for this fact much more than for other subjects of its relation.

    A value-slot edit acts wherever its neuron fires.  A neuron that carries the relation ("capital")
    as much as the subject ("Japan") moves every subject's answer.  With s_i the sign of the
    neuron's mean activation a_i over the fact's `prompts`, a neuron is kept when
    s_i * b_i <= selectivity * |a_i| for its activation b_i on every `contrast` prompt (the same
    relation, other subjects, answered by the model): the edit then pushes those prompts at most
    `selectivity` times as hard as the fact's own.  When none passes, the single most selective
    neuron is kept, so an edit is never silently empty.  (kneuron's deviation; not in the paper.)
    """
    neurons = list(neurons)
    if not neurons or not contrast:
        return neurons
    own = torch.stack([kn.activations(p) for p in prompts]).mean(0)
    other = torch.stack([kn.activations(p) for p in contrast])
    kept, ratios = [], []
    for n in neurons:
        a = float(own[n.layer, n.index])
        sign = -1.0 if a < 0 else 1.0
        worst = float((sign * other[:, n.layer, n.index]).max())
        ratio = worst / abs(a) if a != 0 else float("inf")
        ratios.append(ratio)
        if ratio <= selectivity:
            kept.append(n)
    if not kept:
        kept = [neurons[min(range(len(neurons)), key=ratios.__getitem__)]]
    return kept


def update_lambdas(kn: KnowledgeModel, neurons: Sequence[Neuron], original_id: int, target_id: int, lambda1: float = 1.0,
                   lambda2: float = 8.0, scaling: str = "norm", embedding: str = "output"
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(lambda1_i, lambda2_i) per listed neuron, from the slots as they are now."""
    if scaling not in SCALINGS:
        raise KneuronError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    emb = answer_embeddings(kn, embedding)
    with torch.no_grad():
        e_old, e_new = emb[original_id], emb[target_id]
        if scaling == "raw":
            return [(torch.tensor(float(lambda1)), torch.tensor(float(lambda2))) for _ in neurons]
        n_old, n_new = torch.norm(e_old), torch.norm(e_new)
        out = []
        for n in neurons:
            norm = torch.norm(slot(kn, n))
            out.append((norm / n_old * lambda1, norm / n_new * lambda2))
        return out


def resolve_direction(kn: KnowledgeModel, direction: str) -> str:
    """'signed' or 'paper': "auto" is "signed" on models whose coefficients are gated (can be negative)."""
    if direction not in DIRECTIONS:
        raise KneuronError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if direction == "auto":
        return "signed" if kn.adapter.gated(kn.model) else "paper"
    return direction


def _answer(kn: KnowledgeModel, answer: str | int) -> int:
    return answer if isinstance(answer, int) else kn.answer_id(answer)


def plan_update(kn: KnowledgeModel, neurons, original: str | int, target: str | int, *, prompts: Sequence[str] | None = None,
                direction: str = "auto", embedding: str = "output", lambda1: float = 1.0,
                lambda2: float = 8.0, scaling: str = "norm", signs: Sequence[float] | None = None) -> Edit:
    """The update of `neurons` from answer `original` to `target`, computed but not applied.

    `direction="signed"` reads each neuron's sign from `prompts` (the fact's prompts), or takes
    `signs` as given; `direction="paper"` needs neither.
    """
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)
    direction = resolve_direction(kn, direction)
    old_id, new_id = _answer(kn, original), _answer(kn, target)
    if old_id == new_id:
        raise KneuronError(f"the new answer is the old one ({token_text(kn.tokenizer, old_id).strip()!r}); "
                           "nothing to update")
    emb = answer_embeddings(kn, embedding)
    hidden = slot(kn, Neuron(0, 0)).shape[0] if kn.num_neurons else 0
    if emb.shape[1] != hidden:
        raise KneuronError(f"answer embeddings have size {emb.shape[1]} but value slots {hidden}; "
                           "this model cannot be edited with embedding vectors")
    if direction == "paper":
        signs = [1.0] * len(neurons)
    elif signs is None:
        if prompts is None:
            raise KneuronError("direction='signed' reads the neurons' signs from the fact's prompts: give prompts "
                               "(or signs, or direction='paper' for the literal rule)")
        signs = neuron_signs(kn, neurons, prompts)
    signs = [float(x) for x in signs]
    if len(signs) != len(neurons) or any(x not in (1.0, -1.0) for x in signs):
        raise KneuronError(f"signs must be {len(neurons)} values of +1 or -1, got {signs}")
    lambdas = update_lambdas(kn, neurons, old_id, new_id, lambda1, lambda2, scaling, embedding)
    per_neuron = iter(zip(lambdas, signs))
    with torch.no_grad():
        e_old, e_new = emb[old_id].detach(), emb[new_id].detach()

    def compute(n: Neuron, v: torch.Tensor) -> torch.Tensor:
        (l1, l2), sign = next(per_neuron)  # neurons are visited in the listed order
        if sign > 0:  # the paper's arithmetic, operation for operation
            v = v - e_old.to(v.device, v.dtype) * l1.to(v.device)
            return v + e_new.to(v.device, v.dtype) * l2.to(v.device)
        v = v + e_old.to(v.device, v.dtype) * l1.to(v.device)
        return v - e_new.to(v.device, v.dtype) * l2.to(v.device)

    info = {"original": token_text(kn.tokenizer, old_id).strip(), "target": token_text(kn.tokenizer, new_id).strip(),
            "original_id": int(old_id), "target_id": int(new_id),
            "lambda1": float(lambda1), "lambda2": float(lambda2), "scaling": scaling,
            "direction": direction, "embedding": embedding, "signs": signs,
            "lambdas": [[float(a), float(b)] for a, b in lambdas]}
    return make_edit(kn, "update_fact", neurons, compute, info)


def update_fact(kn: KnowledgeModel, neurons, original: str | int, target: str | int, **options) -> Edit:
    """Apply the value-slot update (spec 5.4) and return the applied `Edit` (`.undo()` reverts it).

    Options as `plan_update` (prompts, direction, embedding, lambda1, lambda2, scaling, signs).
    """
    return plan_update(kn, neurons, original, target, **options).apply(kn)


@torch.no_grad()
def _edit_reaches(kn: KnowledgeModel, edit: Edit, prompts: Sequence[str], old_id: int, new_id: int) -> bool:
    """Whether, with `edit` applied, the new answer is top-1 (and above the old one) on every prompt."""
    with edit.apply(kn, check_base=False):
        logits = kn.blank_logits(list(prompts))
    return bool((logits.argmax(-1) == new_id).all() and (logits[:, new_id] > logits[:, old_id]).all())


def fit_update(kn: KnowledgeModel, neurons, original: str | int, target: str | int, prompts: Sequence[str], *,
               direction: str = "auto", embedding: str = "output", ratio: float = 1.0, margin: float = FIT_MARGIN,
               max_scale: float = MAX_SCALE, iterations: int = 10, signs: Sequence[float] | None = None) -> Edit:
    """The smallest norm-scaled update (times `margin`) that makes `target` top-1 on every prompt.

    lambda1 = s and lambda2 = ratio * s, with s found by doubling from 1/64 up to `max_scale`, then
    bisection (`iterations` steps, in log space) on the edit's own prompts; the edit uses
    s * margin, capped at `max_scale` (`info["reached"]` says whether even that made the answer
    top-1).  Each trial applies and undoes the edit, so the model is unchanged afterwards.
    `max_scale` 8 is the paper's lambda2: on SmolLM2's tune split, with all refined neurons, every
    fit that reached its goal needed at most 4.9, and the fits left at the old cap of 64 flipped
    most neighbours (NS 0.14 against 0.39; results/edit/tune-smollm2-135m/tune.jsonl), so callers
    should decline an edit whose `info["reached"]` is False.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise KneuronError("fit_update needs at least one prompt of the fact")
    neurons = as_neurons(neurons, kn.num_layers, kn.num_neurons)
    old_id, new_id = _answer(kn, original), _answer(kn, target)
    direction = resolve_direction(kn, direction)
    if direction == "signed" and signs is None:
        signs = neuron_signs(kn, neurons, prompts)

    def plan(s: float) -> Edit:
        return plan_update(kn, neurons, old_id, new_id, direction=direction, embedding=embedding, lambda1=s,
                           lambda2=ratio * s, scaling="norm", signs=signs)

    lo, hi, reached = 0.0, 1.0 / 64, False
    while hi <= max_scale:
        if _edit_reaches(kn, plan(hi), prompts, old_id, new_id):
            reached = True
            break
        lo, hi = hi, hi * 2
    if reached:
        for _ in range(iterations):
            mid = (hi * lo) ** 0.5 if lo > 0 else hi / 2
            if _edit_reaches(kn, plan(mid), prompts, old_id, new_id):
                hi = mid
            else:
                lo = mid
        scale = min(hi * margin, max_scale)
    else:
        scale = max_scale
    edit = plan(scale)
    edit.info.update({"fit": True, "ratio": float(ratio), "margin": float(margin), "max_scale": float(max_scale),
                      "scale": float(scale), "reached": reached, "fit_prompts": len(prompts)})
    return edit
