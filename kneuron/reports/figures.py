"""The paper's figures from the experiments' tidy tables (matplotlib, Agg backend).

Every function returns a `matplotlib.figure.Figure` with labelled axes, relation names on the
x axis and a legend; `save_png` writes it and closes it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

METHOD_NAMES = {"kn": "knowledge neurons", "baseline": "activation baseline", "random": "random neurons"}
METHOD_COLORS = {"kn": "#d62728", "baseline": "#1f77b4", "random": "#7f7f7f"}
TYPE_STYLE = {"T1": ("#e50000", "//", "prompts with head and tail (T1)"),
              "T2": ("#fea993", "\\\\", "prompts with only the head (T2)"),
              "T3": ("#445ee4", "x", "random prompts (T3)")}


def relation_ticks(relations: Sequence[str], labels: Mapping[str, str] | None = None, width: int = 22) -> list[str]:
    out = []
    for r in relations:
        label = (labels or {}).get(r, "")
        if label and label != r:
            label = label.replace("_", " ")
            label = label if len(label) <= width else label[:width - 1] + "…"
            out.append(f"{r} · {label}")
        else:
            out.append(r)
    return out


def _headroom(ax, share: float = 0.3) -> None:
    """Room above the bars for a legend."""
    lo, hi = ax.get_ylim()
    top = max(hi, 0.0)
    ax.set_ylim(lo, top + (top - min(lo, 0.0)) * share + 1e-9)


def _width(n: int, per: float = 0.55, minimum: float = 7.5) -> float:
    return max(minimum, min(30.0, 2.5 + per * n))


def layer_distribution_figure(layers: pd.DataFrame, title: str = "") -> Figure:
    """Figure 3: share of neurons per layer, drawn like the paper (bars symmetric around 0)."""
    methods = list(dict.fromkeys(layers["method"]))
    n_layers = int(layers["layer"].max())
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 + 0.6 * n_layers), 3.6), dpi=110)
    width = 0.8 / max(1, len(methods))
    top = 0.0
    for k, m in enumerate(methods):
        sub = layers[layers["method"] == m].sort_values("layer")
        x = sub["layer"].to_numpy() + (k - (len(methods) - 1) / 2) * width
        y = 100.0 * sub["fraction"].to_numpy()
        top = max(top, float(y.max()) if len(y) else 0.0)
        ax.bar(x, 2 * y, bottom=-y, width=width * 0.95, color=METHOD_COLORS.get(m, None),
               label=METHOD_NAMES.get(m, m), alpha=0.9)
    ax.set_xticks(range(1, n_layers + 1))
    ax.set_xlabel("Layer (1 = lowest)")
    ax.set_ylabel("Share of the method's neurons (%)")
    lim = max(top * 1.15, 1.0)
    ax.set_ylim(-lim, lim)
    ticks = ax.get_yticks()
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{abs(t):.0f}" for t in ticks])
    ax.set_ylim(-lim, lim)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(title or "Distribution of neurons over layers (bar height = share, drawn symmetrically)")
    fig.tight_layout()
    return fig


def effects_figure(ratios: pd.DataFrame, kind: str, labels: Mapping[str, str] | None = None,
                   means: pd.DataFrame | None = None) -> Figure:
    """Figures 4 and 5: per relation, change of the gold probability (%) for each neuron set."""
    relations = list(dict.fromkeys(ratios["relation"]))
    methods = [m for m in ("kn", "baseline", "random") if m in set(ratios["method"])]
    methods += [m for m in dict.fromkeys(ratios["method"]) if m not in methods]
    fig, ax = plt.subplots(figsize=(_width(len(relations)) + 2.2, 4.6), dpi=110)
    x = np.arange(len(relations))
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        sub = ratios[ratios["method"] == m].set_index("relation").reindex(relations)
        label = METHOD_NAMES.get(m, m)
        if means is not None and m in set(means["method"]):
            label += f"\n(mean {float(means[means['method'] == m][kind].iloc[0]):+.2f}%)"
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, sub[kind].to_numpy(), width=width * 0.95,
               color=METHOD_COLORS.get(m), label=label)
    what = "suppressing (activation × 0)" if kind == "suppress" else "amplifying (activation × 2)"
    _relation_axis(ax, relations, labels, "Change of gold probability (%)",
                   f"Effect of {what} the neurons on the correct answer, per relation", "neurons")
    fig.tight_layout()
    return fig


def _relation_axis(ax, relations, labels, ylabel: str, title: str, legend_title: str) -> None:
    """Bars per relation: a zero line, relation names under the bars, the legend outside the axes."""
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(np.arange(len(relations)))
    ax.set_xticklabels(relation_ticks(relations, labels), rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("Relation")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=legend_title, title_fontsize=8)


def prompt_types_figure(relation_means: pd.DataFrame, labels: Mapping[str, str] | None = None,
                        means: pd.DataFrame | None = None) -> Figure:
    """Table 4 per relation (the authors' `distant.pdf`): mean activation on T1/T2/T3, one panel per method."""
    methods = list(dict.fromkeys(relation_means["method"]))
    relations = list(dict.fromkeys(relation_means["relation"]))
    fig, axes = plt.subplots(len(methods), 1, figsize=(_width(len(relations)) + 2.6, 3.4 * len(methods) + 0.8),
                             dpi=110, squeeze=False)
    x = np.arange(len(relations))
    for ax, m in zip(axes[:, 0], methods):
        sub = relation_means[relation_means["method"] == m]
        for k, t in enumerate(("T1", "T2", "T3")):
            vals = sub[sub["type"] == t].set_index("relation").reindex(relations)["activation"].to_numpy()
            color, hatch, name = TYPE_STYLE[t]
            if means is not None and m in set(means["method"]):
                name += f"\n(mean {float(means[means['method'] == m][t].iloc[0]):.3f})"
            ax.bar(x + (k - 1) * 0.27, vals, width=0.26, color=color, hatch=hatch, edgecolor="black", lw=0.4,
                   label=name)
        _relation_axis(ax, relations, labels, "Average activation at [MASK]",
                       f"{METHOD_NAMES.get(m, m).capitalize()}: activation by prompt type", "prompt type")
    fig.tight_layout()
    return fig


def updating_figure(summary: pd.DataFrame) -> Figure:
    """Table 6 as bars: change and success rates, and the PPL changes, per neuron set."""
    methods = list(summary["method"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    width = 0.8 / max(1, len(methods))
    for k, m in enumerate(methods):
        row = summary[summary["method"] == m].iloc[0]
        off = (k - (len(methods) - 1) / 2) * width
        label = f"{METHOD_NAMES.get(m, m)} ({int(row['edits'])} edits)"
        b1 = a1.bar(np.arange(2) + off, [row.get("change_rate", np.nan), row.get("success_rate", np.nan)],
                    width=width * 0.95, color=METHOD_COLORS.get(m), label=label)
        b2 = a2.bar(np.arange(2) + off, [row.get("delta_intra_ppl", np.nan), row.get("delta_inter_ppl", np.nan)],
                    width=width * 0.95, color=METHOD_COLORS.get(m), label=label)
        a1.bar_label(b1, fmt="%.1f%%", fontsize=8)
        a2.bar_label(b2, fmt="%.3g", fontsize=8)
    a1.set_xticks(range(2))
    a1.set_xticklabels(["change rate ↑", "success rate ↑"])
    a1.set_ylabel("Share of edits (%)")
    a1.set_xlabel("Metric on the edited prompt")
    a1.set_title("Updating facts: effect on the edited prompt")
    a2.set_xticks(range(2))
    a2.set_xticklabels(["Δ intra-relation PPL ↓", "Δ inter-relation PPL ↓"])
    a2.set_ylabel("PPL after − PPL before")
    a2.set_xlabel("Facts not edited")
    a2.set_title("Updating facts: side effects")
    if a1.get_ylim()[1] <= 1.0:
        a1.set_ylim(0, 100)
    for ax in (a1, a2):
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(True, axis="y", alpha=0.3)
        _headroom(ax)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def erasing_figure(erase: pd.DataFrame, labels: Mapping[str, str] | None = None) -> Figure:
    """Table 5 as bars: PPL change (%) of the erased relation and of the others, per erased relation."""
    ok = erase[erase["status"] == "ok"]
    relations = list(dict.fromkeys(ok["relation"]))
    choices = list(dict.fromkeys(ok["neurons_from"]))
    fig, ax = plt.subplots(figsize=(_width(len(relations), per=0.9, minimum=8.0), 4.4), dpi=110)
    x = np.arange(len(relations))
    bars = [(c, col) for c in choices for col in ("ppl_change_pct", "other_ppl_change_pct")]
    width = 0.8 / max(1, len(bars))
    for k, (c, col) in enumerate(bars):
        sub = ok[ok["neurons_from"] == c].set_index("relation").reindex(relations)
        who = "erased relation" if col == "ppl_change_pct" else "other relations"
        base = METHOD_COLORS.get(c, "#333333")
        ax.bar(x + (k - (len(bars) - 1) / 2) * width, sub[col].to_numpy(), width=width * 0.95, color=base,
               alpha=1.0 if col == "ppl_change_pct" else 0.45, edgecolor="black", lw=0.4,
               label=f"{who}, {METHOD_NAMES.get(c, c)} erased")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(relation_ticks(relations, labels), rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("Erased relation")
    ax.set_ylabel("Perplexity change (%)")
    ax.set_title("Erasing a relation: perplexity change of that relation and of all others")
    ax.grid(True, axis="y", alpha=0.3)
    _headroom(ax, 0.4)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


def attribution_figure(result, top: int = 10, threshold: float = 0.2) -> Figure:
    """One prompt's attribution: every (layer, neuron) score relative to the maximum, top neurons circled.

    Single neurons are too thin to survive the image's down-sampling, so the top ones are drawn
    as markers on top, and a side panel shows each layer's largest score and coarse-set size.
    """
    scores = result.scores.detach().float().cpu().numpy()
    peak = float(np.abs(scores).max()) or 1.0
    n_layers, n_neurons = scores.shape
    fig, (ax, side) = plt.subplots(1, 2, figsize=(10.5, 1.6 + 0.32 * n_layers), dpi=110,
                                   gridspec_kw={"width_ratios": [5, 1.3]}, sharey=True)
    im = ax.imshow(scores / peak, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest",
                   extent=(-0.5, n_neurons - 0.5, n_layers - 0.5, -0.5))
    best = result.top(top)
    ax.scatter([n.index for n, _, _ in best], [n.layer for n, _, _ in best], s=60, facecolors="none",
               edgecolors="black", linewidths=1.2, label=f"top {len(best)}")
    for k, (n, _, _) in enumerate(best[:5]):  # alternate above / below so neighbours stay legible
        ax.annotate(str(n), (n.index, n.layer), xytext=(5, -10 if k % 2 else 5), textcoords="offset points",
                    fontsize=7)
    ax.set_xlabel("neuron index")
    ax.set_ylabel("layer")
    ax.set_yticks(range(n_layers))
    ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="score / max |score|")
    per_layer = scores.max(axis=1) / peak
    cutoff = threshold * scores.max()
    counts = (scores >= cutoff).sum(axis=1) if scores.max() > 0 else np.zeros(n_layers, dtype=int)
    side.barh(range(n_layers), per_layer, color="#d62728")
    for layer, c in enumerate(counts):
        if c:
            side.annotate(f"{int(c)}", (per_layer[layer], layer), xytext=(3, 0), textcoords="offset points",
                          va="center", fontsize=7)
    side.set_xlim(min(0.0, float(per_layer.min())), 1.25)
    side.set_xlabel(f"layer max; count >= {threshold:g} x max", fontsize=8)
    prompt = result.prompt if len(result.prompt) <= 70 else result.prompt[:69] + "…"
    how = f"{result.method}, {result.rule}, {result.steps} steps" if result.rule else result.method
    fig.suptitle(f"{prompt}  →  {result.answer}   (p = {result.probability:.3f}, {how})", fontsize=9)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def save_png(fig: Figure, path: Path) -> bytes:
    data = png_bytes(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def deletion_curve_figure(methods: pd.DataFrame, title: str = "") -> Figure:
    """Suppression (% change of the gold probability) against budget, one line per method; the
    variable-size rows (budget 0) as markers at their mean size."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method, rows in methods.groupby("method", sort=False):
        rows = rows.sort_values("budget")
        if (rows["budget"] > 0).any():
            ax.plot(rows["budget"], rows["suppress"], marker="o", label=method)
        else:
            ax.scatter(rows["neurons_per_fact"].clip(lower=0.5), rows["suppress"], marker="*", s=140, zorder=3,
                       label=f"{method} (mean size)")
    ax.set_xscale("log", base=2)
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xlabel("neurons suppressed per fact (budget)")
    ax.set_ylabel("change of P(answer) on own prompts (%)")
    ax.set_title(title or "Deletion curves: suppressing each method's top neurons")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
