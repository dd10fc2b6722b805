"""Suppressing and amplifying a fact's neurons (spec section 5.2, the paper's Figures 4 and 5).

Each prompt of each fact runs three times: clean, with the fact's neurons x0 and x2 at the blank.
Per relation the paper's metric is a ratio of means over all prompts of all its facts,
mean(p_new - p_orig) / mean(p_orig); facts without neurons count with no change.  The reported
number is the unweighted mean over relations.

A run made with `discover --holdout K` also has held-out prompts that chose nothing:
`heldout_ratios` gives the same ratios on them (`suppress_heldout`, `amplify_heldout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from kneuron.data.facts import FactSet

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

FACTORS = {"suppress": 0.0, "amplify": 2.0}


@torch.no_grad()
def prompt_effects(kn: KnowledgeModel, facts: FactSet, neuron_sets: Mapping[str, Mapping[int, Sequence]],
                   fact_indices: Sequence[int] | None = None, factors: Mapping[str, float] = FACTORS) -> pd.DataFrame:
    """One row per (method, fact, prompt): p_orig and p_<intervention> for each factor.

    `neuron_sets[method][fact_index]` is that fact's neuron list (missing = no neurons).
    """
    from kneuron.interventions import scaled_probabilities

    indices = list(range(len(facts))) if fact_indices is None else list(fact_indices)
    usable = [(i, j) for i in indices for j, p in enumerate(facts.facts[i].prompts)
              if kn.is_masked or kn.ends_at_blank(p)]  # a causal LM skips prompts not ending at the blank
    owner = [i for i, _ in usable]
    position = [j for _, j in usable]
    prompts = [facts.facts[i].prompts[j] for i, j in usable]
    answers = [facts.facts[i].object for i in owner]
    p_orig = kn.probabilities(prompts, answers).tolist()
    rows = []
    for method, sets in neuron_sets.items():
        per_prompt = [list(sets.get(i, [])) for i in owner]
        new = {name: scaled_probabilities(kn, prompts, answers, per_prompt, factor).tolist()
               for name, factor in factors.items()}
        for k, (i, j) in enumerate(zip(owner, position)):
            row = {"method": method, "relation": facts.facts[i].relation, "fact": i, "prompt": j,
                   "neurons": len(per_prompt[k]), "p_orig": p_orig[k]}
            row.update({f"p_{name}": new[name][k] for name in factors})
            rows.append(row)
    return pd.DataFrame(rows)


def relation_ratios(effects: pd.DataFrame, factors: Sequence[str] = tuple(FACTORS)) -> pd.DataFrame:
    """Per (method, relation): mean(p_new - p_orig) / mean(p_orig) for each intervention, in percent."""
    out = []
    for (method, rel), g in effects.groupby(["method", "relation"], sort=False):
        row = {"method": method, "relation": rel, "facts": g["fact"].nunique(), "prompts": len(g),
               "neurons_per_fact": g.drop_duplicates("fact")["neurons"].mean()}
        for name in factors:
            row[name] = 100.0 * (g[f"p_{name}"] - g["p_orig"]).mean() / g["p_orig"].mean()
        out.append(row)
    return pd.DataFrame(out)


def method_means(ratios: pd.DataFrame, factors: Sequence[str] = tuple(FACTORS)) -> pd.DataFrame:
    """Unweighted mean over relations of the per-relation ratios (the paper's headline numbers)."""
    return ratios.groupby("method", sort=False)[list(factors)].mean().reset_index()


@torch.no_grad()
def other_fact_effects(kn: KnowledgeModel, facts: FactSet, neuron_sets: Mapping[str, Mapping[int, Sequence]], seed: int,
                       prompts_per_fact: int = 10, factor: float = 0.0,
                       fact_indices: Sequence[int] | None = None) -> pd.DataFrame:
    """Collateral damage: each fact's neurons scaled on prompts of facts of *other* relations.

    A neuron that moves every fact carries none in particular, so the paper's own-prompt metric is
    read beside this one.  For every fact with neurons, `prompts_per_fact` prompts are drawn
    (`random.Random(seed)`, without replacement) from the usable prompts of the other relations'
    facts.  One row per (method, fact, other prompt): p_orig and p_new; `relation` is the relation
    whose neurons were scaled, so `relation_ratios(..., factors=("other",))` gives the paper's ratio
    of means per relation.
    """
    import random

    from kneuron.interventions import scaled_probabilities

    indices = list(range(len(facts))) if fact_indices is None else list(fact_indices)
    pool = [(i, j) for i in indices for j, p in enumerate(facts.facts[i].prompts)
            if kn.is_masked or kn.ends_at_blank(p)]
    rng = random.Random(seed)
    draws: dict[int, list[tuple[int, int]]] = {}
    for i in indices:
        others = [(g, j) for g, j in pool if facts.facts[g].relation != facts.facts[i].relation]
        draws[i] = rng.sample(others, min(prompts_per_fact, len(others)))
    cells = sorted({c for d in draws.values() for c in d})
    prompts = [facts.facts[g].prompts[j] for g, j in cells]
    answers = [facts.facts[g].object for g, _ in cells]
    p_orig = dict(zip(cells, kn.probabilities(prompts, answers).tolist())) if cells else {}
    rows = []
    for method, sets in neuron_sets.items():
        todo = [(i, c) for i in indices if sets.get(i) for c in draws[i]]
        if not todo:
            continue
        new = scaled_probabilities(kn, [facts.facts[g].prompts[j] for _, (g, j) in todo],
                                   [facts.facts[g].object for _, (g, _) in todo],
                                   [list(sets[i]) for i, _ in todo], factor).tolist()
        rows += [{"method": method, "relation": facts.facts[i].relation, "fact": i, "other_fact": g, "prompt": j,
                  "neurons": len(sets[i]), "p_orig": p_orig[(g, j)], "p_other": p}
                 for (i, (g, j)), p in zip(todo, new)]
    return pd.DataFrame(rows, columns=["method", "relation", "fact", "other_fact", "prompt", "neurons", "p_orig",
                                       "p_other"])


HELDOUT_FACTORS = ("suppress_heldout", "amplify_heldout")


def heldout_ratios(kn: KnowledgeModel, heldout: FactSet | None, neuron_sets: Mapping[str, Mapping[int, Sequence]],
                   fact_indices: Sequence[int] | None = None) -> pd.DataFrame | None:
    """The paper's ratios on held-out prompts (a run's `RunData.heldout`, which discovery never saw):
    per (method, relation) `suppress_heldout`, `amplify_heldout`, `heldout_facts`, `heldout_prompts`,
    to merge beside `relation_ratios` of the prompts that chose the neurons.  None when no fact has a
    held-out prompt.  A relation none of whose facts has one has no row (NaN after the merge)."""
    if heldout is None:
        return None
    indices = list(range(len(heldout))) if fact_indices is None else list(fact_indices)
    indices = [i for i in indices if heldout.facts[i].prompts]
    if not indices:
        return None
    effects = prompt_effects(kn, heldout, neuron_sets, fact_indices=indices)
    if not len(effects):
        return None
    ratios = relation_ratios(effects)
    return ratios.rename(columns={"suppress": "suppress_heldout", "amplify": "amplify_heldout", "facts": "heldout_facts",
                                  "prompts": "heldout_prompts"}).drop(columns="neurons_per_fact")
