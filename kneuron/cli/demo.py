"""`kneuron demo`: the whole method in a few minutes, on the built-in fact world or on a real model.

With a real model (`--model smollm2-135m`) the facts are the 21 real facts shipped with kneuron
(`--data real`).  Beside the paper's own-prompt effects it prints the collateral effect on other
relations' prompts, so that generic neurons show as such, and, with `--holdout K` (default 2),
the same effects on K prompts per fact that discovery never saw (facts with at least K + 3 prompts).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    LIMIT_FACTS,
    POSITIVE,
    PROGRESS,
    WORLD_CAUSAL,
    data_option,
    holdout_option,
    model_option,
    other_prompts_option,
    seed_option,
)
from kneuron.errors import KneuronError

console = Console()


@app.command()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("kneuron-demo"), "--out", "-o", help="Where results go."),
    model: str = model_option("world"),
    data: str = data_option(None, default_is="the world's facts for the model world, else 'real'"),
    seed: int = seed_option(0),
    limit_facts: int = LIMIT_FACTS,
    causal: bool = WORLD_CAUSAL,
    other_prompts: int = other_prompts_option(within=POSITIVE),
    holdout: int = holdout_option(2),
    device: str = DEVICE,
    progress: bool = PROGRESS,
) -> None:
    """Discover knowledge neurons, then suppress and amplify them against the baseline and random neurons."""
    import kneuron
    from kneuron.cli.discover import print_relations
    from kneuron.cli.experiment import set_threads
    from kneuron.data import load_facts
    from kneuron.experiments import method_means, other_fact_effects, prompt_effects, relation_ratios
    from kneuron.experiments.activation_effects import HELDOUT_FACTORS, heldout_ratios
    from kneuron.experiments.controls import method_sets
    from kneuron.experiments.rundata import RunData
    from kneuron.runs import DiscoveryConfig, discover
    from kneuron.world import ensure_world, load_world_facts

    start = time.perf_counter()
    if model == "world":
        world = ensure_world(seed=seed, log=console.print, kind="causal" if causal else "masked")
        model_name = str(world)
        kn = kneuron.load(model_name, device=device)
        data_name = str(world / "facts.jsonl") if data is None else data
        facts = load_world_facts(world) if data is None else load_facts(data)
    else:
        if causal:
            raise KneuronError("--causal selects the world's decoder; leave it out with --model")
        model_name = model
        kn = kneuron.load(model, device=device)
        data_name = data or "real"
        facts = load_facts(data_name)
    set_threads(kn, ctx)
    console.print(f"model: {kn!r}\nfacts: {len(facts)} facts, {facts.num_prompts} prompts, "
                  f"{len(facts.by_relation())} relations")
    config = DiscoveryConfig(model=model_name, data=data_name, limit_facts=limit_facts, seed=seed, holdout=holdout)
    result = discover(kn, facts, out / "run", config, progress=progress)
    print_relations(result.relations)
    rundata = RunData.load(out / "run", facts)
    chosen = rundata.facts  # the prompts discovery used (a causal LM skips some, --holdout keeps some apart)
    sets = method_sets(result.neurons, kn.num_layers, kn.num_neurons, seed)
    done = rundata.fact_indices  # the facts discovery did not skip (an answer of several tokens, say)
    effects = prompt_effects(kn, chosen, sets, fact_indices=done)
    ratios = relation_ratios(effects)
    held = heldout_ratios(kn, rundata.heldout, sets, fact_indices=done)
    if held is not None:
        ratios = ratios.merge(held, on=["method", "relation"], how="left")
    elif holdout:
        console.print(f"[yellow]warning:[/] no fact has {holdout} + 3 prompts: no held-out prompt, every effect "
                      "below is measured on the prompts that chose the neurons")
    others = other_fact_effects(kn, chosen, sets, seed=seed, prompts_per_fact=other_prompts, fact_indices=done)
    other_ratios = relation_ratios(others, factors=("other",)) if len(others) else None
    if other_ratios is not None:
        ratios = ratios.merge(other_ratios[["method", "relation", "other"]], on=["method", "relation"], how="left")
    means = method_means(ratios, factors=("suppress", "amplify") + (HELDOUT_FACTORS if held is not None else ())
                         + (("other",) if other_ratios is not None else ()))
    out.mkdir(parents=True, exist_ok=True)
    effects.to_csv(out / "effects.csv", index=False)
    others.to_csv(out / "other_effects.csv", index=False)
    ratios.to_csv(out / "ratios.csv", index=False)
    summary = {m: {k: float(v) for k, v in row.items() if k != "method"}
               for m, row in zip(means["method"], means.to_dict("records"))}
    (out / "summary.json").write_text(json.dumps({"model": model_name, "data": data_name,
                                                  "mean_change_percent": summary, "seed": seed,
                                                  "other_prompts_per_fact": other_prompts,
                                                  "holdout": holdout, "heldout_prompts": int(
                                                      held.drop_duplicates("relation")["heldout_prompts"].sum())
                                                  if held is not None else 0,
                                                  "seconds": time.perf_counter() - start}, indent=2))
    print_effects(ratios, means)
    console.print(f"results in {out}/ (run/, effects.csv, other_effects.csv, ratios.csv, summary.json); "
                  f"{time.perf_counter() - start:.0f} s")


def print_effects(ratios, means) -> None:
    """One row per relation; each cell is knowledge neurons / activation baseline / random neurons.

    Two tables, so that each fits 80 columns: on the prompts that chose the neurons (and others'
    prompts), then on the held-out prompts when the run has them."""
    methods = ("kn", "baseline", "random")
    heads = {"other": "suppress others", "suppress_heldout": "suppress", "amplify_heldout": "amplify"}
    pivot = {(r["method"], r["relation"]): r for r in ratios.to_dict("records")}
    mean = {r["method"]: r for r in means.to_dict("records")}

    def cell(rows, e):
        return "/".join(f"{rows[m][e]:+.1f}" if m in rows else "-" for m in methods)

    groups = [("change of the gold probability, % (kn / baseline / random)",
               tuple(e for e in ("suppress", "amplify", "other") if e in ratios.columns),
               "ratio of means per relation; mean = over relations; 'others': a fact's neurons suppressed on "
               "prompts of other relations"),
              ("on the held-out prompts (chose nothing), % (kn / baseline / random)",
               tuple(e for e in ("suppress_heldout", "amplify_heldout") if e in ratios.columns), "")]
    for title, effects, caption in groups:
        if not effects:
            continue
        table = Table(title=title, caption=caption or None)
        table.add_column("relation", no_wrap=True)
        for e in effects:
            table.add_column(heads.get(e, e), justify="right", no_wrap=True)
        for rel in dict.fromkeys(ratios["relation"]):
            rows = {m: pivot[(m, rel)] for m in methods if (m, rel) in pivot}
            table.add_row(rel, *[cell(rows, e) for e in effects])
        table.add_row("[bold]mean", *[f"[bold]{cell(mean, e)}" for e in effects])
        console.print(table)
