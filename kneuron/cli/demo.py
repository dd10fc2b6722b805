"""`kneuron demo`: the whole method on the built-in fact world, in a few minutes, offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kneuron.cli import app
from kneuron.cli.options import POSITIVE, SEED, ranged

console = Console()


@app.command()
def demo(
    ctx: typer.Context,
    out: Path = typer.Option(Path("kneuron-demo"), "--out", "-o", help="Where results go."),
    seed: int = ranged(0, "--seed", within=SEED, help="Seed of the world and of the random control."),
    limit_facts: int = ranged(None, "--limit-facts", within=POSITIVE, help="Only the first N facts per relation."),
    causal: bool = typer.Option(False, "--causal", help="Use the world's Llama-shaped decoder instead of its BERT."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Discover the fact world's knowledge neurons, then suppress and amplify them."""
    import kneuron
    from kneuron.cli.discover import print_relations
    from kneuron.cli.experiment import set_threads
    from kneuron.experiments import method_means, prompt_effects, relation_ratios
    from kneuron.experiments.controls import method_sets
    from kneuron.experiments.rundata import RunData
    from kneuron.runs import DiscoveryConfig, discover
    from kneuron.world import ensure_world, load_world_facts

    start = time.perf_counter()
    world = ensure_world(seed=seed, log=console.print, kind="causal" if causal else "masked")
    kn = kneuron.load(str(world))
    set_threads(kn, ctx)
    facts = load_world_facts(world)
    console.print(f"model: {kn!r}\nfacts: {len(facts)} facts, {facts.num_prompts} prompts, "
                  f"{len(facts.by_relation())} relations")
    config = DiscoveryConfig(model=str(world), data=str(world / "facts.jsonl"), limit_facts=limit_facts, seed=seed)
    result = discover(kn, facts, out / "run", config, progress=progress)
    print_relations(result.relations)
    chosen = RunData.load(out / "run", facts).facts  # the prompts discovery used (a causal LM skips some)
    sets = method_sets(result.neurons, kn.num_layers, kn.num_neurons, seed)
    effects = prompt_effects(kn, chosen, sets)
    ratios = relation_ratios(effects)
    means = method_means(ratios)
    out.mkdir(parents=True, exist_ok=True)
    effects.to_csv(out / "effects.csv", index=False)
    ratios.to_csv(out / "ratios.csv", index=False)
    summary = {m: {k: float(v) for k, v in row.items() if k != "method"}
               for m, row in zip(means["method"], means.to_dict("records"))}
    (out / "summary.json").write_text(json.dumps({"world": str(world), "mean_change_percent": summary,
                                                  "seconds": time.perf_counter() - start}, indent=2))
    print_effects(ratios, means)
    console.print(f"results in {out}/ (run/, effects.csv, ratios.csv, summary.json); "
                  f"{time.perf_counter() - start:.0f} s")


def print_effects(ratios, means) -> None:
    table = Table(title="change of the gold probability, % (ratio of means per relation; mean = over relations)")
    table.add_column("relation")
    cols = [(m, e) for e in ("suppress", "amplify") for m in ("kn", "baseline", "random")]
    for m, e in cols:
        table.add_column(f"{e} {m}", justify="right")
    pivot = {(r["method"], r["relation"]): r for r in ratios.to_dict("records")}
    for rel in dict.fromkeys(ratios["relation"]):
        table.add_row(rel, *[f"{pivot[(m, rel)][e]:+.1f}" if (m, rel) in pivot else "-" for m, e in cols])
    mean = {r["method"]: r for r in means.to_dict("records")}
    table.add_row("[bold]mean", *[f"[bold]{mean[m][e]:+.1f}" if m in mean else "-" for m, e in cols])
    console.print(table)
