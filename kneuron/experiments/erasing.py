"""Erasing relations (spec 5.5, the paper's Table 5).

Paper-faithful (the authors' `src/7_erase_knowledge.py`): for each erased relation, its 20 most
frequent knowledge neurons (`Counter.most_common(20)` over its facts' refined sets, fact order)
get their value slots set to zero.  Before and after, over **all** prompts of the erased relation
and over all prompts of all the other relations: accuracy (top-1 == gold) and
PPL = exp(mean over prompts of -log p(gold)).  The change is reported as the paper does,
(after - before) / before in percent (the authors' script prints the opposite sign).

Options with their own names: `replacement="unk"` (the [UNK] embedding instead of zeros, the
authors' commented-out line), `top_k`, and `controls=("random",)`: the same number of uniformly
random neurons (seeded) erased instead, a control the paper does not have.
The paper erased P19, P27, P106 and P937; `default_erase_relations` picks those present in the
data, else every relation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kneuron.edits import plan_erase, relation_neurons
from kneuron.selection import random_like

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

PAPER_RELATIONS = ("P19", "P27", "P106", "P937")


def default_erase_relations(relations: Sequence[str]) -> list[str]:
    chosen = [r for r in PAPER_RELATIONS if r in relations]
    return chosen or list(relations)


def prompt_scores(kn: KnowledgeModel, facts, fact_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(log p(gold), correct) for every prompt of the given facts, in order."""
    prompts = [p for i in fact_ids for p in facts.facts[i].prompts]
    answers = [facts.facts[i].object for i in fact_ids for _ in facts.facts[i].prompts]
    return score_prompts(kn, prompts, answers)


def score_prompts(kn: KnowledgeModel, prompts: Sequence[str], answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(log p(answer), top-1 is the answer) per prompt, float64; see `KnowledgeModel.answer_log_probs`."""
    logp, correct = kn.answer_log_probs(list(prompts), list(answers))
    return logp.numpy(), correct.numpy()


def perplexity(logp: np.ndarray) -> float:
    return float(math.exp(-logp.mean())) if len(logp) else math.nan


def run_erasing(kn: KnowledgeModel, run, relations: Sequence[str] | None = None, top_k: int = 20, replacement: str = "zero",
                method: str = "kn", controls: Sequence[str] = ("random",), seed: int = 42) -> pd.DataFrame:
    """One row per (erased relation, neuron choice): accuracy and PPL before/after, for it and the others."""
    relations = default_erase_relations(run.relations) if relations is None else list(relations)
    facts = run.facts
    base = {rel: prompt_scores(kn, facts, idx) for rel, idx in run.universe.items()}
    rel_sets = run.relation_sets(method)
    rows = []
    for k, rel in enumerate(relations):
        neurons = relation_neurons(rel_sets[rel], top_k)
        choices = [(method, neurons)]
        if "random" in controls:
            choices.append(("random", random_like([neurons], kn.num_layers, kn.num_neurons, seed=seed + k)[0]))
        for name, chosen in choices:
            row = {"relation": rel, "label": run.label(rel), "neurons_from": name, "neurons": len(chosen),
                   "replacement": replacement, "top_k": top_k}
            if not chosen:
                rows.append({**row, "status": "no_neurons"})
                continue
            with plan_erase(kn, chosen, replacement).apply(kn):
                after = {r: prompt_scores(kn, facts, idx) for r, idx in run.universe.items()}
            others = [r for r in run.universe if r != rel]
            cat = np.concatenate
            o_before_lp = cat([base[r][0] for r in others]) if others else np.zeros(0)
            o_after_lp = cat([after[r][0] for r in others]) if others else np.zeros(0)
            o_before_c = cat([base[r][1] for r in others]) if others else np.zeros(0, dtype=bool)
            o_after_c = cat([after[r][1] for r in others]) if others else np.zeros(0, dtype=bool)
            row.update({
                "status": "ok", "prompts": len(base[rel][0]), "other_prompts": len(o_before_lp),
                "ppl_before": perplexity(base[rel][0]), "ppl_after": perplexity(after[rel][0]),
                "acc_before": 100.0 * base[rel][1].mean(), "acc_after": 100.0 * after[rel][1].mean(),
                "other_ppl_before": perplexity(o_before_lp), "other_ppl_after": perplexity(o_after_lp),
                "other_acc_before": 100.0 * o_before_c.mean() if len(o_before_c) else math.nan,
                "other_acc_after": 100.0 * o_after_c.mean() if len(o_after_c) else math.nan,
                "neuron_list": " ".join(str(n) for n in chosen),
            })
            row["ppl_change_pct"] = 100.0 * (row["ppl_after"] - row["ppl_before"]) / row["ppl_before"]
            row["other_ppl_change_pct"] = 100.0 * (row["other_ppl_after"] - row["other_ppl_before"]) / row["other_ppl_before"]
            rows.append(row)
    return pd.DataFrame(rows)


def erasing_summary(erase: pd.DataFrame) -> pd.DataFrame:
    """Mean PPL change (%) of the erased relation and of the others, per neuron choice."""
    ok = erase[erase.get("status", "ok") == "ok"] if len(erase) else erase
    if not len(ok):
        return pd.DataFrame(columns=["neurons_from", "relations", "ppl_change_pct", "other_ppl_change_pct"])
    g = ok.groupby("neurons_from", sort=False)
    out = g[["ppl_change_pct", "other_ppl_change_pct", "acc_before", "acc_after"]].mean().reset_index()
    out.insert(1, "relations", g.size().values)
    return out
