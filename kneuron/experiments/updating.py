"""Updating facts (spec 5.4, the paper's Table 6), with the random-neuron control.

Paper-faithful sampling (the authors' `src/6_edit_knowledge_sampled.py`, seed 42), per arm
(`ARMS`: `kn`; `random` = the authors' commented-out control; `baseline` also possible), each arm a
fresh `random.Random(seed)` stream as a separate run of the script would be:

for each relation, up to `max_tries` times, until `edits_per_relation` valid edits:
  1. a random fact (`randint`), and a target t' = the object of a random fact of the same relation
     (`choice`) that differs from the fact's object (redrawn until it does);
  2. its neurons minus those shared by more than 10% of the relation's facts
     (`kneuron.edits.select_update_neurons`); for `random`, each is replaced by a uniformly random
     (layer, index) (`randint` layer, then index), so the count is kept; none left: skipped;
  3. one random prompt of the fact (`randint`); skipped unless the model's top-1 is the gold object;
  4. the value-slot edit (lambda1 = 1, lambda2 = 8, norm-scaled; `direction="auto"` flips the
     change of a neuron whose mean activation over the fact's prompts is negative on gated MLPs,
     and is the literal rule on BERT), then on that prompt:
     success = new top-1 is t', change = new top-1 differs from the original top-1;
  5. side effects: 5 random *other* facts of the relation (intra) and 5 random facts of random
     other relations (inter; relation by `choice`, redrawn while it is the edited one; then
     `randint`), all their prompts: log-PPL = -log p(gold), mean over the prompts, before and after.
  6. the edit is undone (exactly, from a saved copy).

Aggregates (`updating_summary`) are plain means over all valid edits pooled across relations;
the PPL of a group is exp(mean over edits of the log-PPLs), and
ΔPPL = exp(mean new) - exp(mean orig), an absolute difference.

Deviations, all immaterial in the paper's setting: facts whose answer discovery skipped (not a
single token) are not in the sampling universe; a relation with a single distinct object, where
the authors' target loop would never end, is skipped; with a single relation there is no inter
sample (NaN).  Ranks count strictly larger logits (ties get the best rank).  Log-probabilities
come from `log_softmax` (the authors took log(1/p) of the float32 probability).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from kneuron.edits import plan_update, select_update_neurons
from kneuron.models.tokens import token_text
from kneuron.neurons import Neuron

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

ARMS = ("kn", "random")  # the experiment's arms: a run's neuron sets ("kn", "baseline") or the random control


def gold_log_probs(kn: KnowledgeModel, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """log p(gold) at each prompt's blank (per token for multi-token answers)."""
    return kn.answer_log_probs(list(prompts), list(answers))[0].numpy()


def run_updating(kn: KnowledgeModel, run, arms: Sequence[str] = ARMS, seed: int = 42, edits_per_relation: int = 10,
                 max_tries: int = 10000, share: float = 0.1, lambda1: float = 1.0, lambda2: float = 8.0,
                 scaling: str = "norm", ppl_facts: int = 5, relations: Sequence[str] | None = None,
                 direction: str = "auto"):
    """(edits, attempts): one row per valid edit; one row per (arm, relation) with the skip counts.  Each
    arm's rows carry its name in the "method" column."""
    facts = run.facts
    universe = {r: run.universe[r] for r in (relations or run.relations)}
    all_rels = run.relations
    logppl_cache: dict[int, list[float]] = {}  # fact -> per-prompt log-PPL on the unedited model
    top1_cache: dict[str, int] = {}

    def fact_logppl(fact_ids: list[int]) -> list[float]:
        need = [i for i in dict.fromkeys(fact_ids) if i not in logppl_cache]
        if need:
            prompts = [p for i in need for p in facts.facts[i].prompts]
            answers = [facts.facts[i].object for i in need for _ in facts.facts[i].prompts]
            lp = gold_log_probs(kn, prompts, answers)
            k = 0
            for i in need:
                n = len(facts.facts[i].prompts)
                logppl_cache[i] = (-lp[k:k + n]).tolist()
                k += n
        return [v for i in fact_ids for v in logppl_cache[i]]

    def new_logppl(fact_ids: list[int]) -> list[float]:
        prompts = [p for i in fact_ids for p in facts.facts[i].prompts]
        answers = [facts.facts[i].object for i in fact_ids for _ in facts.facts[i].prompts]
        return (-gold_log_probs(kn, prompts, answers)).tolist()

    edit_rows, attempt_rows = [], []
    for arm in arms:
        rng = random.Random(seed)
        sets = run.sets("kn" if arm == "random" else arm)
        for rel, idx in universe.items():
            n = len(idx)
            counts = {"method": arm, "relation": rel, "facts": n, "tries": 0, "edits": 0, "no_kn": 0,
                      "incorrect_answer": 0, "multi_token": 0, "status": "ok"}
            objects = {facts.facts[i].object for i in idx}
            if len(objects) < 2:
                counts["status"] = "single_object"
                attempt_rows.append(counts)
                continue
            rel_sets = [sets[i] for i in idx]
            kept: dict[int, list[Neuron]] = {}  # the 10% filter depends only on the fact
            for _ in range(max_tries):
                counts["tries"] += 1
                pos = rng.randint(0, n - 1)
                fact = facts.facts[idx[pos]]
                while True:
                    target = facts.facts[rng.choice(idx)].object
                    if target != fact.object:
                        break
                if pos not in kept:
                    kept[pos] = select_update_neurons(sets[idx[pos]], rel_sets, share, n)
                neurons = kept[pos]
                if arm == "random":
                    neurons = [Neuron(rng.randint(0, kn.num_layers - 1), rng.randint(0, kn.num_neurons - 1))
                               for _ in neurons]
                if not neurons:
                    counts["no_kn"] += 1
                    continue
                if len(kn.answer_ids(fact.object)) != 1 or len(kn.answer_ids(target)) != 1:
                    counts["multi_token"] += 1  # the update writes one embedding vector per answer
                    continue
                j = rng.randint(1, len(fact.prompts)) - 1
                prompt = fact.prompts[j]
                gold_id, target_id = kn.answer_id(fact.object), kn.answer_id(target)
                if prompt not in top1_cache:  # the unedited model's answer (every edit is undone)
                    top1_cache[prompt] = int(kn.blank_logits([prompt])[0].argmax())
                top1 = top1_cache[prompt]
                if top1 != gold_id:
                    counts["incorrect_answer"] += 1
                    continue
                before = kn.blank_logits([prompt])[0].double()
                edit = plan_update(kn, neurons, top1, target_id, prompts=fact.prompts, direction=direction,
                                   lambda1=lambda1, lambda2=lambda2, scaling=scaling)
                edit.apply(kn)
                try:
                    after = kn.blank_logits([prompt])[0].double()
                    intra: list[int] = []
                    for _ in range(ppl_facts):
                        r = rng.randint(0, n - 1)
                        while r == pos:
                            r = rng.randint(0, n - 1)
                        intra.append(idx[r])
                    inter: list[int] = []
                    if len(all_rels) > 1:
                        for _ in range(ppl_facts):
                            other = rng.choice(all_rels)
                            while other == rel:
                                other = rng.choice(all_rels)
                            inter.append(run.universe[other][rng.randint(0, len(run.universe[other]) - 1)])
                    intra_new, inter_new = new_logppl(intra), new_logppl(inter)
                finally:
                    edit.undo()
                intra_orig, inter_orig = fact_logppl(intra), fact_logppl(inter)
                p_before, p_after = torch.softmax(before, -1), torch.softmax(after, -1)
                new_top1 = int(after.argmax())
                rank_before = int((before > before[target_id]).sum()) + 1
                rank_after = int((after > after[target_id]).sum()) + 1
                counts["edits"] += 1
                edit_rows.append({
                    "method": arm, "relation": rel, "fact": idx[pos], "subject": fact.subject,
                    "original": fact.object, "target": target, "prompt": prompt, "neurons": len(neurons),
                    "neuron_list": " ".join(str(x) for x in edit.neurons), "try": counts["tries"],
                    "new_top1": token_text(kn.tokenizer, new_top1),
                    "success": int(new_top1 == target_id), "changed": int(new_top1 != top1),
                    "success_top5": int(rank_after <= 5),
                    "p_target_orig": float(p_before[target_id]), "p_target_new": float(p_after[target_id]),
                    "p_original_new": float(p_after[top1]),
                    "rank_target_orig": rank_before, "rank_target_new": rank_after,
                    "intra_logppl_orig": float(np.mean(intra_orig)), "intra_logppl_new": float(np.mean(intra_new)),
                    "inter_logppl_orig": float(np.mean(inter_orig)) if inter else math.nan,
                    "inter_logppl_new": float(np.mean(inter_new)) if inter else math.nan,
                    "intra_facts": json.dumps(intra), "inter_facts": json.dumps(inter),
                })
                if counts["edits"] == edits_per_relation:
                    break
            attempt_rows.append(counts)
    return pd.DataFrame(edit_rows), pd.DataFrame(attempt_rows)


def _ppl(values: pd.Series) -> float:
    v = values.dropna()
    return float(math.exp(v.mean())) if len(v) else math.nan


def updating_summary(edits: pd.DataFrame, arms: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 6: per arm (the "method" column), change and success rates (%) and the intra/inter PPL changes."""
    arms = list(dict.fromkeys(edits["method"])) if arms is None and len(edits) else list(arms or [])
    rows = []
    for m in arms:
        g = edits[edits["method"] == m] if len(edits) else edits
        row = {"method": m, "edits": len(g), "relations": int(g["relation"].nunique()) if len(g) else 0}
        if len(g):
            row.update({
                "change_rate": 100.0 * g["changed"].mean(), "success_rate": 100.0 * g["success"].mean(),
                "success_top5_rate": 100.0 * g["success_top5"].mean(),
                "target_prob_change": float((g["p_target_new"] - g["p_target_orig"]).mean()),
                "mrr_orig": float((1.0 / g["rank_target_orig"]).mean()),
                "mrr_new": float((1.0 / g["rank_target_new"]).mean()),
                "intra_ppl_orig": _ppl(g["intra_logppl_orig"]), "intra_ppl_new": _ppl(g["intra_logppl_new"]),
                "inter_ppl_orig": _ppl(g["inter_logppl_orig"]), "inter_ppl_new": _ppl(g["inter_logppl_new"]),
            })
            row["delta_intra_ppl"] = row["intra_ppl_new"] - row["intra_ppl_orig"]
            row["delta_inter_ppl"] = row["inter_ppl_new"] - row["inter_ppl_orig"]
        rows.append(row)
    return pd.DataFrame(rows)
