"""`kneuron reproduce`: discovery, every experiment of the paper, and the report, in one command.

    kneuron reproduce --out repro                       # the built-in fact world, offline
    kneuron reproduce --model bert-base-cased --data pararel --out repro-bert

Discovery goes to OUT/run (resumable: an interrupted reproduce picks up where it stopped); then
statistics, suppression/amplification, prompt types, updating and erasing; then OUT/report.html,
OUT/report.md, OUT/tables/*.csv, OUT/figures/*.png, OUT/data/*.csv and OUT/config.json.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import typer
from rich.console import Console

from kneuron.cli import app
from kneuron.cli.experiment import (
    BINGREL,
    EDITS,
    ERASE_RELS,
    ESCAPE,
    SEED_OPTION,
    TRIES,
    set_threads,
    settings_from_options,
)
from kneuron.cli.options import (
    DEVICE,
    LAMBDA1,
    LAMBDA2,
    LIMIT_FACTS,
    PROGRESS,
    RELATIONS,
    REPLACEMENT,
    SCALING,
    SHARE,
    TOP_K,
    data_option,
    holdout_option,
    model_option,
    split_list,
)

console = Console()


@app.command()
def reproduce(
    model: str = model_option("world"),
    data: str = data_option("world"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (discovery resumes from OUT/run)."),
    relations: str = RELATIONS,
    limit_facts: int = LIMIT_FACTS,
    experiments: str = typer.Option(None, "--experiments",
                                    help="Comma-separated subset of: statistics,suppression,prompt-types,update,erase."),
    device: str = DEVICE,
    progress: bool = PROGRESS,
    holdout: int = holdout_option(0),
    seed: int = SEED_OPTION, bingrel: str = BINGREL, escape: str = ESCAPE, edits_per_relation: int = EDITS,
    max_tries: int = TRIES, share: float = SHARE, scaling: str = SCALING, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2,
    erase_relations: str = ERASE_RELS, top_k: int = TOP_K, replacement: str = REPLACEMENT,
    ctx: typer.Context = None,
) -> None:
    """Reproduce the paper: discover the neurons, run every experiment, write the report."""
    import torch

    import kneuron
    from kneuron.experiments.rundata import RunData, resolve_facts
    from kneuron.experiments.suite import EXPERIMENTS, build_report, run_suite
    from kneuron.reports import write_config
    from kneuron.runs import DiscoveryConfig, discover

    names = split_list(experiments) or list(EXPERIMENTS)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise kneuron.KneuronError(f"unknown experiment(s) {', '.join(bad)}; choose from {', '.join(EXPERIMENTS)}")
    settings = settings_from_options(seed, bingrel, escape, edits_per_relation, max_tries, share, scaling, lambda1,
                                     lambda2, erase_relations, top_k, replacement)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    facts = resolve_facts(data)
    kn = kneuron.load(model, device=device)
    n_threads = set_threads(kn, ctx)
    timings["load_s"] = time.perf_counter() - t0
    console.print(f"model: {kn!r}\ndata: {data}: {len(facts)} facts, {facts.num_prompts} prompts")

    t = time.perf_counter()
    config = DiscoveryConfig(model=model, data=data, relations=split_list(relations), limit_facts=limit_facts,
                             holdout=holdout)
    result = discover(kn, facts, out / "run", config, progress=progress)
    timings["discovery_s"] = time.perf_counter() - t
    console.print(f"discovery: {len(result.neurons)} neuron rows in {timings['discovery_s']:.0f} s"
                  + (f" (resumed {result.resumed_facts} facts)" if result.resumed_facts else ""))

    run = RunData.load(out / "run", facts=facts)
    outcomes = run_suite(kn, run, settings, names, log=console.print)
    for o in outcomes:
        timings[f"{o.name}_s"] = o.seconds
    t = time.perf_counter()
    total = time.perf_counter() - t0
    extra = {"time": f"{total:.0f} s in all ({timings['discovery_s']:.0f} s discovery" + "".join(
        f", {o.name} {o.seconds:.0f} s" for o in outcomes) + f"), {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"}
    report, frames = build_report(kn, run, settings, outcomes, extra)
    paths = report.write(out, frames)
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    write_config(out, {"command": "reproduce", "model": model, "data": data, "relations": split_list(relations),
                       "limit_facts": limit_facts, "experiments": names, "seed": seed,
                       "discovery": config.to_json(), "settings": settings.to_json(),
                       "skipped": {o.name: o.skipped for o in outcomes if o.skipped},
                       "timings": {k: round(v, 2) for k, v in timings.items()},
                       "kneuron_version": kneuron.__version__, "torch": torch.__version__,
                       "device": str(kn.device), "threads": n_threads})
    for o in outcomes:
        if o.skipped:
            console.print(f"[yellow]note:[/] {o.name} not run: {o.skipped}")
    console.print(f"report: {paths['html']} ({timings['total_s']:.0f} s)")
