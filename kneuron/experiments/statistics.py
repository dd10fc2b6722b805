"""Statistics of the neuron sets (spec 5.1): the paper's Table 2 and Figure 3.

Paper-faithful (the authors' `src/2_analyze_kn.py`):
- neurons per fact = all neurons / all facts, pooled over relations, facts with no neuron counted;
- intra-relation intersection: every unordered pair (i < j) of facts of a relation,
  |N_i ∩ N_j|, averaged over all pairs of all relations pooled;
- inter-relation intersection: for every fact, 100 partners, each drawn by picking a uniformly
  random *other* relation, then a uniformly random fact of it; pooled mean.  The authors' draws
  were unseeded; here they come from `random.Random(seed)` (Python's generator, the authors'
  calls: `choice` then `randint`), first for the knowledge neurons, then on the same stream for
  the baseline, and the seed is recorded;
- layer distribution: the share of all neurons (pooled over facts) in each layer, reported with
  1-based layer numbers as in the paper's figure.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd

INTER_PARTNERS = 100


def _as_sets(sets: Sequence[Sequence]) -> list[set]:
    return [{(int(a), int(b)) for a, b in s} for s in sets]


def neurons_per_fact(relation_sets: Mapping[str, Sequence[Sequence]]) -> float:
    facts = sum(len(v) for v in relation_sets.values())
    neurons = sum(len(s) for v in relation_sets.values() for s in v)
    return neurons / facts if facts else float("nan")


def intra_intersections(relation_sets: Mapping[str, Sequence[Sequence]]) -> list[int]:
    """|N_i ∩ N_j| for every pair i < j of facts within each relation (relations in order)."""
    out = []
    for sets in relation_sets.values():
        s = _as_sets(sets)
        out += [len(a & b) for a, b in combinations(s, 2)]
    return out


def inter_intersections(relation_sets: Mapping[str, Sequence[Sequence]], rng: random.Random,
                        partners: int = INTER_PARTNERS) -> list[int]:
    """For each fact, `partners` draws (random other relation, random fact of it); |∩| of each."""
    rels = list(relation_sets)
    sets = {r: _as_sets(v) for r, v in relation_sets.items()}
    out = []
    if len(rels) < 2:
        return out
    for rel in rels:
        others = [x for x in rels if x != rel]
        for a in sets[rel]:
            for _ in range(partners):
                other = rng.choice(others)
                if not sets[other]:
                    continue
                b = sets[other][rng.randint(0, len(sets[other]) - 1)]
                out.append(len(a & b))
    return out


def neuron_statistics(sets_by_method: Mapping[str, Mapping[str, Sequence[Sequence]]], seed: int = 42,
                      partners: int = INTER_PARTNERS) -> pd.DataFrame:
    """Table 2: one row per method (e.g. "kn", "baseline").

    `sets_by_method[method][relation]` = the neuron sets of that relation's facts, empty ones included.
    """
    rng = random.Random(seed)
    rows = []
    for method, rel_sets in sets_by_method.items():
        intra = intra_intersections(rel_sets)
        inter = inter_intersections(rel_sets, rng, partners)
        rows.append({"method": method, "relations": len(rel_sets), "facts": sum(len(v) for v in rel_sets.values()),
                     "neurons": sum(len(s) for v in rel_sets.values() for s in v),
                     "neurons_per_fact": neurons_per_fact(rel_sets),
                     "intra_pairs": len(intra), "intra_intersection": float(np.mean(intra)) if intra else float("nan"),
                     "inter_pairs": len(inter), "inter_intersection": float(np.mean(inter)) if inter else float("nan"),
                     "seed": seed})
    return pd.DataFrame(rows)


def relation_statistics(sets_by_method: Mapping[str, Mapping[str, Sequence[Sequence]]],
                        labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per (method, relation): facts, facts with no neuron, neurons per fact, intra-relation ∩."""
    rows = []
    for method, rel_sets in sets_by_method.items():
        for rel, sets in rel_sets.items():
            intra = intra_intersections({rel: sets})
            rows.append({"method": method, "relation": rel, "label": (labels or {}).get(rel, ""),
                         "facts": len(sets), "empty_facts": sum(1 for s in sets if not s),
                         "neurons_per_fact": neurons_per_fact({rel: sets}),
                         "intra_intersection": float(np.mean(intra)) if intra else float("nan")})
    return pd.DataFrame(rows)


def layer_distribution(sets_by_method: Mapping[str, Mapping[str, Sequence[Sequence]]], num_layers: int) -> pd.DataFrame:
    """Figure 3: per (method, layer) the count and share of all that method's neurons (layer 1-based)."""
    rows = []
    for method, rel_sets in sets_by_method.items():
        counts = np.zeros(num_layers, dtype=np.int64)
        for sets in rel_sets.values():
            for s in sets:
                for layer, _ in s:
                    counts[int(layer)] += 1
        total = counts.sum()
        for layer in range(num_layers):
            rows.append({"method": method, "layer": layer + 1, "neurons": int(counts[layer]),
                         "fraction": float(counts[layer] / total) if total else 0.0})
    return pd.DataFrame(rows)


def run_statistics(run, seed: int = 42, methods: Sequence[str] = ("kn", "baseline"), num_layers: int | None = None):
    """All of 5.1 on a `RunData`: (table2, per_relation, layers)."""
    sets = {m: run.relation_sets(m) for m in methods}
    if num_layers is None:
        num_layers = int(run.table["layer"].max()) + 1 if len(run.table) else 1
    return (neuron_statistics(sets, seed=seed), relation_statistics(sets, run.labels()),
            layer_distribution(sets, num_layers))
