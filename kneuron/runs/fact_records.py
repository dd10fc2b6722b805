"""One fact record of a discovery run: attribute a fact's prompts, keep the coarse sets with their scores.

Both discovery backends (`kneuron.runs.backends`) turn batches of facts into records with
`attribute_facts`, so a run's records do not depend on where they were computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kneuron.errors import KneuronError
from kneuron.seeds import derived_seed
from kneuron.selection import baseline_neurons, coarse_neurons, heldout_split

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel


def internal_batch_size(kn: KnowledgeModel, prompts: list[str], config) -> int | None:
    """On a GPU: as many path-point rows as fit in free memory for this batch's longest prompt."""
    if kn.device.type not in ("cuda", "mps") or not prompts:
        return None  # CPU: the engine's default (one prompt's staircase)
    from kneuron.runs.memory import choose_internal_batch_size

    longest = max(len(kn.encode(p).ids) for p in prompts)
    return choose_internal_batch_size(kn, longest, config.steps, precision=config.precision)


def attribute_facts(kn: KnowledgeModel, facts, indices, config):
    """Records for the given fact indices (one attribution call, prompts batched by length).

    `facts.facts[i]` must give fact i (a FactSet, or any object whose `facts` maps indices to facts).
    With `config.holdout` = K > 0, K of each fact's usable prompts (when it has at least K + 3) are
    held out (`kneuron.selection.heldout`, seed `derived_seed(config.seed, "heldout", i)`): they are
    not attributed, and the record lists them as "heldout_prompts" (always present, [] for a fact
    too small to split); "used_prompts" then lists the attributed ones.
    """
    prompts, answers, owner = [], [], []
    records = {}
    used: dict[int, list[int]] = {}
    held: dict[int, list[int]] = {}
    usable: dict[int, list[int]] = {}
    holdout = getattr(config, "holdout", 0)
    for i in indices:
        f = facts.facts[i]
        # A causal LM can only continue prompts that end at the blank; the others are skipped.
        usable[i] = [k for k, p in enumerate(f.prompts) if kn.is_masked or kn.ends_at_blank(p)]
        used[i], held[i] = heldout_split(usable[i], holdout, derived_seed(config.seed, "heldout", i))
        try:
            if not used[i]:
                raise KneuronError("no prompt ends at the blank, as a causal LM needs")
            for k in usable[i]:
                kn.encode(f.prompts[k], f.object)
        except KneuronError as exc:
            records[i] = {"fact": i, "relation": f.relation, "subject": f.subject, "object": f.object,
                          "skipped": str(exc), "skipped_prompts": len(f.prompts) - len(usable[i])}
            continue
        for k in used[i]:
            prompts.append(f.prompts[k])
            answers.append(f.object)
            owner.append(i)
    results = kn.attribute(prompts, answers, steps=config.steps, rule=config.rule, precision=config.precision,
                           internal_batch_size=internal_batch_size(kn, prompts, config)) if prompts else []
    for i in indices:
        if i in records:
            continue
        f = facts.facts[i]
        mine = [r for r, o in zip(results, owner) if o == i]
        rec = {"fact": i, "relation": f.relation, "subject": f.subject, "object": f.object,
               "prob": [round(r.probability, 8) for r in mine], "kn": [], "base": []}
        if len(used[i]) < len(f.prompts):
            rec["used_prompts"] = used[i]
        if len(usable[i]) < len(f.prompts):
            rec["skipped_prompts"] = len(f.prompts) - len(usable[i])
        if holdout:
            rec["heldout_prompts"] = held[i]
        for r in mine:
            kn_set = coarse_neurons(r.scores, config.threshold)
            base_set = baseline_neurons(r.activations, config.baseline_threshold)
            rec["kn"].append([[n.layer, n.index, float(r.scores[n.layer, n.index])] for n in kn_set])
            rec["base"].append([[n.layer, n.index, float(r.activations[n.layer, n.index])] for n in base_set])
        records[i] = rec
    return [records[i] for i in indices]
