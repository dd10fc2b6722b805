"""Figures and report sections of the multilingual and interaction analyses.

Kept apart from `report.py` so that the experiment report can add these sections when it wants
them (`add_multilingual_section(report, run)`, `add_interactions_section(report, results)`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kneuron.reports.figures import plt  # noqa: F401  (Agg backend set there)


def _heatmap(ax, values: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, limit: float,
             annotate: bool = True):
    im = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(cols)), labels=list(cols), rotation=45 if len(cols) > 6 else 0, ha="right" if len(cols) > 6 else "center")
    ax.set_yticks(range(len(rows)), labels=list(rows))
    ax.set_title(title, fontsize=10)
    if annotate:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                v = values[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{100 * v:.0f}%", ha="center", va="center", fontsize=8,
                            color="white" if abs(v) > 0.6 * limit else "black")
    return im


def cross_lingual_figure(matrix: pd.DataFrame, random_matrix: pd.DataFrame, title: str = "",
                         other_matrix: pd.DataFrame | None = None) -> Figure:
    """Heatmaps side by side: knowledge neurons, random neurons of the same counts, and (when given)
    the knowledge neurons measured on another fact.

    Row = the set suppressed (a language's refined neurons, `shared`), column = the language whose
    gold probability is measured; cell = relative change of the mean gold probability.
    """
    panels = [(matrix, "knowledge neurons, own fact"), (random_matrix, "random neurons (same counts)")]
    if other_matrix is not None and len(other_matrix):
        panels.append((other_matrix, "knowledge neurons, another fact"))
    values = np.concatenate([f.to_numpy(dtype=float).ravel() for f, _ in panels])
    finite = values[np.isfinite(values)]
    limit = max(0.05, float(np.abs(finite).max()) if finite.size else 1.0)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 1.3 * len(matrix.columns) * len(panels),
                                                      1.5 + 0.5 * len(matrix.index)), constrained_layout=True)
    for ax, (frame, name) in zip(axes, panels):
        im = _heatmap(ax, frame.to_numpy(dtype=float), [str(r) for r in frame.index], list(frame.columns), name, limit)
        ax.set_xlabel("language measured")
    axes[0].set_ylabel("neurons suppressed (found in)")
    fig.colorbar(im, ax=axes, shrink=0.8, label="change of mean gold probability")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def interaction_figure(result, title: str = "") -> Figure:
    """The (k, k) interaction matrix of `neuron_interactions`: off the diagonal, joint effect minus the
    sum of single effects; on it, each neuron's single effect; degenerate pairs outlined."""
    matrix = result.interaction_matrix().numpy()
    labels = [str(n) for n in result.neurons]
    k = len(labels)
    limit = max(0.05, float(np.abs(matrix).max()))
    fig, ax = plt.subplots(figsize=(2.5 + 0.42 * k, 1.8 + 0.38 * k), constrained_layout=True)
    im = _heatmap(ax, matrix, labels, labels, title or f"interactions of {k} neurons ({result.answer})", limit,
                  annotate=k <= 12)
    index = {n: i for i, n in enumerate(result.neurons)}
    for a, b in result.degenerate_pairs():
        for i, j in ((index[a], index[b]), (index[b], index[a])):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    ax.tick_params(axis="x", labelrotation=90)
    fig.colorbar(im, ax=ax, shrink=0.8, label="interaction (diagonal: single effect)")
    return fig


def suppression_summary(run) -> pd.DataFrame:
    """Per suppressed set and language: mean neurons, the knowledge-neuron effect and the random one."""
    if not len(run.effects):
        return pd.DataFrame()
    kn = run.matrix("kn").stack().rename("knowledge_neurons")
    rnd = run.matrix("random").stack().rename("random_neurons")
    counts = run.effects[run.effects["control"] == "kn"].groupby("suppressed", sort=False)["neurons"].mean()
    out = pd.concat([kn, rnd], axis=1).reset_index()
    out.columns = ["suppressed", "language", "knowledge_neurons", "random_neurons"]
    out.insert(1, "mean_neurons", out["suppressed"].map(counts))
    return out


def add_multilingual_section(report, run, title: str = "Multilingual knowledge neurons") -> None:
    """The sets' sizes, the cross-lingual matrices and their heatmap, as one report section."""
    report.section(title, "multilingual")
    facts = run.facts
    done = facts[facts["skipped"] == ""] if len(facts) else facts
    shared = run.settings.get("shared", "pooled")
    report.text(f"{len(done)} of {len(facts)} facts analysed; `shared` by the **{shared}** definition "
                "(the other definition is the row `shared:<name>`). A cell is the change of the mean gold "
                "probability in the column's language when the row's neurons are suppressed, "
                "(mean p_suppressed - mean p) / mean p over every analysed fact's prompts.")
    counts = done.drop(columns=["fact", "relation", "subject", "languages", "skipped", "seconds"], errors="ignore")
    if len(counts.columns):
        means = counts.mean(numeric_only=True).rename("mean per fact").reset_index()
        means.columns = ["count", "mean per fact"]
        empty = [(c, float((counts[c] == 0).mean())) for c in counts.columns if c.startswith("shared_")]
        report.table("multilingual_set_sizes", means, "Neurons per fact: each language's refined set, its "
                     "language-specific neurons, and `shared` by both definitions.")
        if empty:
            report.text("Facts with an empty `shared` set: " +
                        ", ".join(f"{c.removeprefix('shared_')} {100 * v:.0f}%" for c, v in empty) + ".")
    if len(run.effects):
        matrix, random_matrix = run.matrix("kn"), run.matrix("random")
        other = run.matrix("kn@other") if (run.effects["control"] == "kn@other").any() else None
        report.table("cross_lingual_matrix", matrix.reset_index(names="suppressed"),
                     "Knowledge neurons: suppress the row's neurons, measure the column's language.")
        report.table("cross_lingual_matrix_random", random_matrix.reset_index(names="suppressed"),
                     "Random neurons of the same counts (seeded).")
        if other is not None:
            report.table("cross_lingual_matrix_other_fact", other.reset_index(names="suppressed"),
                         "The same knowledge neurons measured on another fact (the next analysed fact of "
                         "another subject): what they do beyond their own fact.")
        report.figure("cross_lingual", cross_lingual_figure(matrix, random_matrix, other_matrix=other),
                      "Cross-lingual suppression effects: knowledge neurons on their own fact (left), random "
                      "neurons (middle), the knowledge neurons on another fact (right).")


def interactions_summary(results) -> pd.DataFrame:
    """One row per studied fact: p, strongest single effect, degenerate pairs, greedy set, and each
    count against its null of matched random neurons (`Interactions.null`: mean, 95% interval,
    one-sided p-value; empty where no null was drawn)."""
    rows = []
    for name, res in results:
        table = res.table()
        greedy = res.greedy or {}
        null = res.null or {}
        row = {"fact": name, "neurons": len(res.neurons), "p": res.p,
               "strongest_single": float(min(res.single_effects().values())),
               "degenerate_pairs": int(table["degenerate"].sum()) if len(table) else 0,
               "most_negative_interaction": float(table["interaction"].min()) if len(table) else float("nan"),
               "greedy_set_size": greedy.get("size"), "greedy_kept": greedy.get("kept")}
        for stat, prefix in (("degenerate_pairs", "degenerate"), ("greedy_size", "greedy")):
            c = null.get(stat) or {}
            row.update({f"{prefix}_null_mean": c.get("null_mean"), f"{prefix}_null_low": c.get("null_low"),
                        f"{prefix}_null_high": c.get("null_high"), f"{prefix}_p": c.get("p_value")})
        row["greedy_null_reached"] = (null.get("greedy_size") or {}).get("null_defined")
        row.update(null_repeats=null.get("repeats"), null_seed=null.get("seed"), null_bins=null.get("bins"))
        rows.append(row)
    return pd.DataFrame(rows)


def interactions_null_totals(results) -> pd.DataFrame:
    """Counts over all studied facts against their pooled null: the degenerate pairs in total, and
    the facts whose greedy set is reached.  Null draw r of the total sums draw r of every fact (the
    facts' draws are independent), so only facts with a drawn null count, and all must have the same
    number of repeats.  Columns as `Interactions.null_table`, plus `facts` (how many were pooled)."""
    from kneuron.experiments.interactions import compare_to_null

    drawn = [res for _, res in results if (res.null or {}).get("available")]
    repeats = {res.null["repeats"] for res in drawn}
    if not drawn or len(repeats) != 1:
        return pd.DataFrame()
    rows = []
    degenerate = compare_to_null(sum(res.null["degenerate_pairs"]["observed"] for res in drawn),
                                 [int(sum(v)) for v in zip(*(res.null["degenerate_pairs"]["null"] for res in drawn))],
                                 "greater")
    rows.append({"statistic": "degenerate_pairs", **degenerate})
    greedy = [res for res in drawn if "greedy_size" in res.null]
    if len(greedy) == len(drawn):
        reached = compare_to_null(sum(res.null["greedy_size"]["observed"] is not None for res in greedy),
                                  [int(sum(v is not None for v in vs))
                                   for vs in zip(*(res.null["greedy_size"]["null"] for res in greedy))], "greater")
        rows.append({"statistic": "greedy_reached", **reached})
    frame = pd.DataFrame(rows).drop(columns=["null", "null_defined"])
    frame["repeats"], frame["facts"] = repeats.pop(), len(drawn)
    return frame


def interactions_pairs(results) -> pd.DataFrame:
    """Every pair of every studied fact (row-level data)."""
    frames = [res.table().assign(fact=name) for name, res in results]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def add_interactions_section(report, results, title: str = "Neuron interactions", max_figures: int = 6) -> None:
    """Per fact: the neurons studied, degenerate pairs, the strongest interactions and the greedy set;
    heatmaps of the first `max_figures` facts."""
    report.section(title, "interactions")
    report.table("interactions_summary", interactions_summary(results),
                 "Per fact: mean gold probability p; the largest single suppression effect; AMIG's degenerate "
                 "pairs (each alone keeps >= 80%, both < 75%); the most negative interaction (joint effect "
                 "minus the sum of singles); the set a greedy search grows from individually dispensable "
                 "neurons until it removes most of the gold probability (greedy, not necessarily the "
                 "smallest; size empty: not reached) and the share it keeps.  Each count against its null: "
                 "the same computation on random neurons of the same layers and activation quantile bins at "
                 "the blank (null_repeats draws, seeded with null_seed): the null's mean, 95% interval "
                 "(low, high) and the one-sided empirical p-value (greedy: a set as small or smaller; "
                 "greedy_null_reached: share of draws whose greedy set was reached).")
    totals = interactions_null_totals(results)
    if len(totals):
        report.table("interactions_null", totals,
                     "All facts together against the pooled null (draw r sums every fact's draw r): the "
                     "degenerate pairs in total and the facts whose greedy set is reached; observed, null "
                     "mean, 95% interval, one-sided empirical p-value.")
    for k, (name, res) in enumerate(results[:max_figures]):
        report.figure(f"interactions_{k}", interaction_figure(res, f"{name}: interactions"),
                      f"{name}: interaction matrix (outlined: degenerate pairs).")


__all__ = ["add_interactions_section", "add_multilingual_section", "cross_lingual_figure", "interaction_figure",
           "interactions_null_totals", "interactions_pairs", "interactions_summary", "suppression_summary"]
