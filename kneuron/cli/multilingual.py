"""`kneuron multilingual` (knowledge neurons across languages) and `kneuron interactions` (how a
fact's neurons work together): thin layers over `kneuron.experiments.multilingual` / `.interactions`."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    FRACTION,
    INTERACTION_TOP,
    JSON_OUT,
    LIMIT_FACTS,
    NULL_BINS,
    NULL_REPEATS,
    REFINE_MIN_PROMPTS,
    REFINE_P,
    RELATIONS,
    SEED,
    STEPS,
    THRESHOLD,
    model_option,
    ranged,
    seed_option,
    split_list,
)
from kneuron.cli.probe import MODEL, load_model, parse_neurons
from kneuron.errors import KneuronError

console = Console()
MARKER = "multilingual.json"  # config of a finished output directory; an existing one may be replaced


def _pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:+.1f}%"


def _write_dir(out: Path, write) -> None:
    """Build the output in a temporary sibling and rename it into place: never half-written."""
    out = out.expanduser().absolute()
    if out.exists() and not (out / MARKER).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise KneuronError(f"{out} exists and is not a `kneuron multilingual` output; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _null_line(what: str, c: dict | None) -> str:
    """`observed vs null mean [95% interval], p` of one `compare_to_null` result."""
    if not c:
        return f"{what}: no null"

    def show(x):
        return "not reached" if x is None else f"{x:g}"

    mean = "none reached" if c["null_mean"] is None else f"{c['null_mean']:g}"
    share = c.get("null_defined")
    reached = f" (over the {share:.0%} of draws reached)" if share is not None and 0 < share < 1 else ""
    return escape(f"{what}: observed {show(c['observed'])}; null mean {mean}{reached}, 95% interval "
                  f"[{show(c['null_low'])}, {show(c['null_high'])}], one-sided p = {c['p_value']:.3g}")


def _matrix_table(title: str, frame) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("suppressed \\ measured")
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *(_pct(v) for v in row))
    return table


@app.command()
def multilingual(
    ctx: typer.Context,
    data: str = typer.Option("world-multilingual", "--data", "-d",
                             help="Facts in several languages (only those): a JSONL file (prompts as a language "
                                  "map), 'world-multilingual', or 'real-multilingual' (the shipped capitals)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (tables, figures, report)."),
    model: str = model_option("world-multilingual"),
    shared: str = typer.Option("pooled", help="Definition of `shared`: pooled (default) | intersection (AMIG)."),
    relations: str = RELATIONS,
    languages: str = typer.Option(None, help="Comma-separated languages to keep (at least two)."),
    limit_facts: int = LIMIT_FACTS,
    threshold: float = THRESHOLD,
    p: float = REFINE_P,
    min_prompts: int = REFINE_MIN_PROMPTS,
    seed: int = seed_option(0),
    with_interactions: bool = typer.Option(False, "--interactions", help="Also study each fact's top --top neurons "
                                           "per language: pairs, degenerate pairs, greedy set (no extra attribution); "
                                           "the null (--null-repeats) is seeded from --seed, per fact and language."),
    top: int = INTERACTION_TOP,
    null_repeats: int = NULL_REPEATS,
    null_bins: int = NULL_BINS,
    steps: int = STEPS,
    device: str = DEVICE,
) -> None:
    """Per-language, shared and language-specific knowledge neurons, and the cross-lingual effect matrix."""
    from kneuron.data import load_facts
    from kneuron.data.facts import group_languages
    from kneuron.experiments.multilingual import SHARED_METHODS, fact_interactions, run_multilingual
    from kneuron.reports.multilingual import (
        add_interactions_section,
        add_multilingual_section,
        interactions_pairs,
    )
    from kneuron.reports.report import Report
    from kneuron.runs.store import write_json_atomic

    if shared not in SHARED_METHODS:
        raise KneuronError(f"--shared must be one of {', '.join(SHARED_METHODS)}, got {shared!r}")
    keep_rel = split_list(relations)
    facts = group_languages(load_facts(data, keep_rel).facts)
    if languages:
        wanted = split_list(languages) or []
        for f in facts:
            f.prompts = {lang: ps for lang, ps in f.prompts.items() if lang in wanted}
            f.answers = {lang: a for lang, a in f.answers.items() if lang in wanted}
    facts = [f for f in facts if len(f.prompts) >= 2]
    if not facts:
        raise KneuronError(f"no fact of {data!r} has prompts in two or more languages"
                           + (f" among {languages}" if languages else ""))
    if limit_facts is not None:
        seen: dict[str, int] = {}
        facts = [f for f in facts if (seen.__setitem__(f.relation, seen.get(f.relation, 0) + 1) or seen[f.relation]) <= limit_facts]
    kn = load_model(model, device, ctx)
    console.print(f"{len(facts)} facts in {', '.join(dict.fromkeys(x for f in facts for x in f.prompts))}; "
                  f"model {escape(kn.name)}", highlight=False)
    t0 = time.perf_counter()

    def progress(i, fact, row):
        what = row["skipped"] and f"skipped: {row['skipped']}" or \
            ", ".join(f"{k.removeprefix('neurons_')} {v}" for k, v in row.items() if k.startswith("neurons_")) + \
            f"; shared {row.get('shared_' + shared, 0)}"
        console.print(f"[{i + 1}/{len(facts)}] {escape(fact.subject)} ({fact.relation}): {escape(what)}  "
                      f"({time.perf_counter() - t0:.0f} s)", highlight=False)

    run = run_multilingual(kn, facts, shared=shared, seed=seed, progress=progress, threshold=threshold, p=p,
                           min_prompts=min_prompts, steps=steps)
    if len(run.effects):
        console.print(_matrix_table("knowledge neurons: change of mean gold probability", run.matrix("kn")))
        console.print(_matrix_table("random neurons, same counts", run.matrix("random")))
        if (run.effects["control"] == "kn@other").any():
            console.print(_matrix_table("knowledge neurons measured on another fact", run.matrix("kn@other")))
    def studied_one(done, total, label, res):
        null = (res.null or {}).get("degenerate_pairs") or {}
        against = f" (null mean {null['null_mean']:.1f})" if null.get("null_mean") is not None else ""
        count = len(res.degenerate_pairs())
        console.print(escape(f"[interactions {done}/{total}] {label}:") + f" {count} degenerate pairs{against}, "
                      f"greedy set {res.greedy.get('size') or 'not reached'}  ({time.perf_counter() - t0:.0f} s)",
                      highlight=False)

    studied = fact_interactions(kn, run, top=top, seed=seed, null_repeats=null_repeats, null_bins=null_bins,
                                progress=studied_one) if with_interactions else []
    if studied:
        from kneuron.reports.multilingual import interactions_null_totals, interactions_summary

        summary = interactions_summary(studied)
        console.print(f"interactions: {int(summary['degenerate_pairs'].sum())} degenerate pairs over {len(summary)} "
                      f"(fact, language); greedy set reached in {int(summary['greedy_set_size'].notna().sum())}")
        totals = {row["statistic"]: row for row in interactions_null_totals(studied).to_dict(orient="records")}
        if null_repeats:
            drawn = sum(bool((res.null or {}).get("available")) for _, res in studied)
            console.print(f"null: {null_repeats} matched random sets per (fact, language); drawn in {drawn} of "
                          f"{len(studied)}")
            console.print(_null_line("  degenerate pairs, all facts", totals.get("degenerate_pairs")), highlight=False)
            console.print(_null_line("  greedy set reached (facts)", totals.get("greedy_reached")), highlight=False)
    config = {"command": "multilingual", "model": model, "data": data, "relations": keep_rel, "languages": languages,
              "limit_facts": limit_facts, "interactions": with_interactions, "top": top,
              "null_repeats": null_repeats if with_interactions else None, "null_bins": null_bins,
              "null_seeds": "derived_seed(seed, 'interactions', fact, language)", "device": str(kn.device),
              "seconds": round(time.perf_counter() - t0, 1), **run.settings}

    def write(tmp: Path) -> None:
        report = Report(f"Multilingual knowledge neurons: {kn.name}")
        add_multilingual_section(report, run)
        data = {"sets": run.sets, "effects": run.effects, "facts": run.facts}
        if studied:
            add_interactions_section(report, studied)
            data["interactions"] = interactions_pairs(studied)
        report.write(tmp, data=data)
        write_json_atomic(tmp / MARKER, config)

    _write_dir(out, write)
    console.print(f"-> {out}/report.html, tables/, figures/cross_lingual.png, data/")


@app.command()
def interactions(
    ctx: typer.Context,
    answer: str = typer.Argument(..., help="The fact's answer (object)."),
    prompts: list[str] = typer.Argument(..., help="Paraphrased prompts of the fact, each with a blank."),
    model: str = MODEL,
    neurons: str = typer.Option(None, "--neurons", help="Neurons whose interactions to study, e.g. 3:120,L3.7 "
                                "(default: the top --top by integrated gradients)."),
    top: int = INTERACTION_TOP,
    keep_alone: float = ranged(0.8, "--keep-alone", within=FRACTION,
                               help="Degenerate pair: each alone keeps >= this share."),
    drop_joint: float = ranged(0.75, "--drop-joint", within=FRACTION,
                               help="Degenerate pair: both together keep < this share."),
    remove: float = ranged(0.5, "--remove", within=FRACTION, help="Greedy set: joint suppression keeps < this share."),
    null_repeats: int = NULL_REPEATS,
    null_seed: int = ranged(0, "--null-seed", within=SEED, help="Seed of the null's random neurons."),
    null_bins: int = NULL_BINS,
    steps: int = STEPS,
    json_out: Path = JSON_OUT,
    figure: Path = typer.Option(None, "--figure", help="Write the heatmap of the pairs' interactions (PNG) here."),
    device: str = DEVICE,
) -> None:
    """Single and pair suppression effects of a fact's neurons, their interactions, degenerate pairs, a
    greedy decisive set, and both counts against random neurons at matched activation levels."""
    from kneuron.reports.figures import save_png
    from kneuron.reports.multilingual import interaction_figure
    from kneuron.runs.store import write_json_atomic

    kn = load_model(model, device, ctx)
    chosen = parse_neurons(neurons) if neurons else None
    res = kn.neuron_interactions(list(prompts), answer, chosen, top=top, steps=steps, keep_alone=keep_alone,
                                 drop_joint=drop_joint, remove=remove, null_repeats=null_repeats,
                                 null_seed=null_seed, null_bins=null_bins)
    console.print(f"{len(res.neurons)} neurons, {len(res.pair)} pairs over {len(res.prompts)} prompts; "
                  f"mean P({escape(answer)}) = {res.p:.4f}", highlight=False)
    single = res.single_effects()
    table = res.table().sort_values("interaction")
    show = Table(title="most negative interactions (joint effect - sum of single effects)", title_justify="left")
    for col in ("a", "b", "alone a", "alone b", "both", "interaction", "degenerate"):
        show.add_column(col, justify="left" if col in ("a", "b") else "right")
    for row in table.head(10).to_dict(orient="records"):
        show.add_row(row["a"], row["b"], _pct(row["effect_a"]), _pct(row["effect_b"]), _pct(row["effect_ab"]),
                     _pct(row["interaction"]), "yes" if row["degenerate"] else "")
    console.print(show)
    strongest = min(single, key=single.get)
    console.print(f"strongest single neuron: {strongest} ({_pct(single[strongest])}); degenerate pairs "
                  f"(alone >= {keep_alone:.0%}, both < {drop_joint:.0%}): {int(table['degenerate'].sum())}")
    g = res.greedy
    if g.get("reached"):
        console.print(f"greedy set (not necessarily the smallest): {g['size']} individually dispensable neurons "
                      f"together keep {g['kept']:.1%} of the gold probability: {', '.join(g['neurons'])}")
    else:
        console.print(f"greedy: the greedy search over the {g.get('pool', 0)} individually dispensable neurons "
                      f"never brings the gold probability below {remove:.0%} (all of them keep "
                      f"{g.get('kept', 1.0):.1%})")
    null = res.null
    if null.get("available"):
        console.print(f"null: {null['repeats']} random sets, each neuron matched by layer and activation bin at "
                      f"the blank ({null['bins']} bins per layer), seed {null['seed']}")
        console.print(_null_line("  degenerate pairs", null["degenerate_pairs"]), highlight=False)
        if "greedy_size" in null:
            console.print(_null_line("  greedy set size", null["greedy_size"]), highlight=False)
    elif null:
        console.print(f"null: not drawn ({escape(null.get('reason', ''))})", highlight=False)
    if json_out is not None:
        write_json_atomic(json_out, res.to_dict())
        console.print(f"-> {json_out}")
    if figure is not None:
        save_png(interaction_figure(res), figure)
        console.print(f"figure -> {figure}")
