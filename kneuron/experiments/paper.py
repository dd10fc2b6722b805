"""The paper's numbers (spec section 7) as data, and the table setting ours beside them.

Dai et al., "Knowledge Neurons in Pretrained Transformers", ACL 2022: bert-base-cased on PARAREL
(34 relations, 27,738 facts) and BINGREL.  "kn" = knowledge neurons found by integrated gradients;
the control is the activation baseline for Table 2, Figures 4-5 and Table 4, and random neurons
for Table 6.
"""

from __future__ import annotations

import math

import pandas as pd

MODEL = "bert-base-cased"
DATA = "PARAREL (34 relations, 27,738 facts, 253,448 prompts) and BINGREL"

# experiment, quantity, paper kn, paper control, control name, unit, source
HEADLINE = [
    ("statistics", "neurons per fact", 4.13, 3.96, "baseline", "", "Table 2"),
    ("statistics", "∩ intra-relation fact pairs", 1.23, 2.85, "baseline", "", "Table 2"),
    ("statistics", "∩ inter-relation fact pairs", 0.09, 1.92, "baseline", "", "Table 2"),
    ("suppression", "suppress (activation → 0), mean over relations", -29.03, -1.47, "baseline", "%", "Figure 4"),
    ("suppression", "amplify (activation × 2), mean over relations", 31.17, -1.27, "baseline", "%", "Figure 5"),
    ("prompt types", "mean activation, T1 (head and tail)", 0.485, 2.472, "baseline", "", "Table 4"),
    ("prompt types", "mean activation, T2 (head only)", 0.019, 2.312, "baseline", "", "Table 4"),
    ("prompt types", "mean activation, T3 (random)", -0.018, 2.244, "baseline", "", "Table 4"),
    ("updating", "change rate ↑", 48.5, 4.7, "random", "%", "Table 6"),
    ("updating", "success rate ↑", 34.4, 0.0, "random", "%", "Table 6"),
    ("updating", "Δ intra-relation PPL ↓", 8.4, 10.1, "random", "", "Table 6"),
    ("updating", "Δ inter-relation PPL ↓", 7.2, 4.3, "random", "", "Table 6"),
]

# relation, label, PPL erased before, after, PPL others before, after (Table 5)
ERASING = [
    ("P19", "place_of_birth", 1450.0, 2996.0, 120.3, 121.6),
    ("P27", "country_of_citizenship", 28.0, 38.3, 143.6, 149.5),
    ("P106", "occupation", 2279.0, 5202.0, 120.1, 125.3),
    ("P937", "work_location", 58.0, 140.0, 138.0, 151.9),
]
# The percentages the paper prints (rounded from its own unrounded PPLs).
ERASING_PCT = {"P19": (106.6, 1.1), "P27": (36.7, 4.2), "P106": (128.2, 4.3), "P937": (141.2, 10.1)}


def erasing_table() -> pd.DataFrame:
    rows = []
    for rel, label, b, a, ob, oa in ERASING:
        pct, opct = ERASING_PCT[rel]
        rows.append({"relation": rel, "label": label, "ppl_before": b, "ppl_after": a, "ppl_change_pct": pct,
                     "other_ppl_before": ob, "other_ppl_after": oa, "other_ppl_change_pct": opct})
    return pd.DataFrame(rows)


def erasing_means() -> tuple[float, float]:
    """Mean PPL change (%) of the erased relations and of the others over the paper's four."""
    pct = list(ERASING_PCT.values())
    return sum(p for p, _ in pct) / len(pct), sum(o for _, o in pct) / len(pct)


def _get(df: pd.DataFrame | None, key_col: str, key, col: str) -> float:
    if df is None or not len(df) or col not in df.columns:
        return math.nan
    sub = df[df[key_col] == key]
    return float(sub[col].iloc[0]) if len(sub) else math.nan


def comparison_table(stats: pd.DataFrame | None = None, effects: pd.DataFrame | None = None,
                     prompt_means: pd.DataFrame | None = None, update: pd.DataFrame | None = None,
                     erase: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers beside the paper's, one row per headline quantity (NaN where not run).

    stats: `neuron_statistics`; effects: `method_means` (suppress/amplify in %); prompt_means:
    `prompt_type_means`; update: `updating_summary`; erase: `erasing_summary`.
    """
    ours = {
        "neurons per fact": ("stats", "neurons_per_fact"),
        "∩ intra-relation fact pairs": ("stats", "intra_intersection"),
        "∩ inter-relation fact pairs": ("stats", "inter_intersection"),
        "suppress (activation → 0), mean over relations": ("effects", "suppress"),
        "amplify (activation × 2), mean over relations": ("effects", "amplify"),
        "mean activation, T1 (head and tail)": ("prompt", "T1"),
        "mean activation, T2 (head only)": ("prompt", "T2"),
        "mean activation, T3 (random)": ("prompt", "T3"),
        "change rate ↑": ("update", "change_rate"),
        "success rate ↑": ("update", "success_rate"),
        "Δ intra-relation PPL ↓": ("update", "delta_intra_ppl"),
        "Δ inter-relation PPL ↓": ("update", "delta_inter_ppl"),
    }
    frames = {"stats": stats, "effects": effects, "prompt": prompt_means, "update": update}
    rows = []
    for exp, quantity, p_kn, p_ctl, control, unit, source in HEADLINE:
        frame, col = ours[quantity]
        df = frames[frame]
        rows.append({"experiment": exp, "quantity": quantity, "unit": unit, "control": control,
                     "ours_kn": _get(df, "method", "kn", col), "ours_control": _get(df, "method", control, col),
                     "paper_kn": p_kn, "paper_control": p_ctl, "source": source})
    e_pct, o_pct = erasing_means()
    for quantity, col, paper in (("erase: PPL change of the erased relation, mean", "ppl_change_pct", e_pct),
                                 ("erase: PPL change of the other relations, mean", "other_ppl_change_pct", o_pct)):
        rows.append({"experiment": "erasing", "quantity": quantity, "unit": "%", "control": "random",
                     "ours_kn": _get(erase, "neurons_from", "kn", col),
                     "ours_control": _get(erase, "neurons_from", "random", col),
                     "paper_kn": paper, "paper_control": math.nan, "source": "Table 5"})
    return pd.DataFrame(rows)
