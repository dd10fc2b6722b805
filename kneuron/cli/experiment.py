"""`kneuron experiment NAME RUN_DIR`: one of the paper's experiments on a finished discovery run.

Attributions are not recomputed: the neurons come from RUN_DIR/neurons.parquet, and the model and
data from RUN_DIR/config.json.  Output: OUT/report.md, OUT/report.html, OUT/tables/*.csv,
OUT/figures/*.png, OUT/data/*.csv and OUT/config.json (settings and seeds).
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    LAMBDA1,
    LAMBDA2,
    POSITIVE,
    REPLACEMENT,
    SCALING,
    SHARE,
    TOP_K,
    ranged,
    seed_option,
    split_list,
)

console = Console()


def settings_from_options(seed, bingrel, escape, edits_per_relation, max_tries, share, scaling, lambda1, lambda2,
                          erase_relations, top_k, replacement):
    from kneuron.errors import KneuronError
    from kneuron.experiments.suite import ExperimentSettings

    for name, value, allowed in (("--escape", escape, ("paper", "full")), ("--scaling", scaling, ("norm", "raw")),
                                 ("--replacement", replacement, ("zero", "unk"))):
        if value not in allowed:
            raise KneuronError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return ExperimentSettings(seed=seed, bingrel=bingrel, escape=escape, edits_per_relation=edits_per_relation,
                              max_tries=max_tries, share=share, scaling=scaling, lambda1=lambda1, lambda2=lambda2,
                              erase_relations=split_list(erase_relations), top_k=top_k, replacement=replacement)


def set_threads(kn, ctx: typer.Context | None = None) -> int:
    """CPU threads for torch: the root `kneuron --threads N` if given, else one for small models.

    Small matrices (hidden size <= 256, e.g. the fact world) gain nothing from more threads, and on
    a busy machine OpenMP threads waiting for each other slow tiny models down by orders of magnitude.
    """
    import torch

    root = ctx.find_root() if ctx is not None else None
    explicit = root.params.get("threads") if root is not None else None
    if kn.device.type != "cpu" or explicit is not None:
        return torch.get_num_threads()
    hidden = kn.adapter.value_slots(kn.model, 0).shape[1 - kn.adapter.slot_axis]
    if hidden <= 256:
        torch.set_num_threads(1)
    return torch.get_num_threads()


# Options shared with `kneuron reproduce` alone (typer needs them spelled out per command); those shared with
# `kneuron edit` as well (SHARE, SCALING, LAMBDA1, LAMBDA2, TOP_K, REPLACEMENT) come from kneuron.cli.options.
SEED_OPTION = seed_option(42)  # the authors' seed
BINGREL = typer.Option(None, "--bingrel", help="BINGREL folder for prompt types (default: the data's own).")
ESCAPE = typer.Option("paper", "--escape", help="Entity regex escaping for T1/T2: paper (only ( ) $ .) | full.")
EDITS = ranged(10, "--edits-per-relation", within=POSITIVE, help="Valid edits per relation (updating).")
# `kneuron data counterfact --max-tries` (facts checked with the model) is its own.
TRIES = ranged(10000, "--max-tries", within=POSITIVE,
               help="Updating: random draws of a fact and a new answer per relation at most, while collecting "
                    "--edits-per-relation valid edits.")
ERASE_RELS = typer.Option(None, "--erase-relations",
                          help="Relations to erase (default: P19,P27,P106,P937 if present, else all).")


@app.command()
def experiment(
    name: str = typer.Argument(..., help="statistics | suppression | prompt-types | update | erase"),
    run_dir: Path = typer.Argument(..., help="A finished discovery run (from `kneuron discover` or `reproduce`)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default RUN_DIR/experiments/NAME)."),
    device: str = DEVICE,
    seed: int = SEED_OPTION, bingrel: str = BINGREL, escape: str = ESCAPE, edits_per_relation: int = EDITS,
    max_tries: int = TRIES, share: float = SHARE, scaling: str = SCALING, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2,
    erase_relations: str = ERASE_RELS, top_k: int = TOP_K, replacement: str = REPLACEMENT,
    ctx: typer.Context = None,
) -> None:
    """Run one experiment of the paper on a discovery run, without recomputing attributions."""
    import kneuron
    from kneuron.errors import KneuronError
    from kneuron.experiments.rundata import RunData
    from kneuron.experiments.suite import EXPERIMENTS, build_report, run_named
    from kneuron.reports import write_config

    if name not in EXPERIMENTS:
        raise KneuronError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    settings = settings_from_options(seed, bingrel, escape, edits_per_relation, max_tries, share, scaling, lambda1,
                                     lambda2, erase_relations, top_k, replacement)
    start = time.perf_counter()
    run = RunData.load(run_dir)
    kn = kneuron.load(run.config.model, device=device)
    n_threads = set_threads(kn, ctx)
    out = out or Path(run_dir) / "experiments" / name
    outcome = run_named(name, kn, run, settings, log=console.print)
    if outcome.skipped:
        raise KneuronError(f"experiment {name} not run: {outcome.skipped}")
    report, data = build_report(kn, run, settings, [outcome], title=f"Knowledge neurons: {outcome.title}")
    paths = report.write(out, data)
    write_config(out, {"command": "experiment", "experiment": name, "run_dir": str(run_dir),
                       "model": run.config.model, "data": run.config.data, "seed": seed,
                       "settings": settings.to_json(), "seconds": round(time.perf_counter() - start, 2),
                       "threads": n_threads, "kneuron_version": kneuron.__version__})
    console.print(f"{name}: {outcome.seconds:.1f} s -> {paths['html']}")
