"""`kneuron discover`: find the knowledge neurons of a dataset into a resumable run directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    LIMIT_FACTS,
    NON_NEGATIVE,
    POSITIVE,
    PRECISION,
    PROGRESS,
    RELATIONS,
    RULE,
    SPECIFIC_FRACTION,
    STEPS,
    data_option,
    holdout_option,
    model_option,
    ranged,
    seed_option,
    split_list,
)

console = Console()


@app.command()
def discover(
    model: str = model_option("world"),
    data: str = data_option("world"),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; an existing one is resumed)."),
    relations: str = RELATIONS,
    limit_facts: int = LIMIT_FACTS,
    steps: int = STEPS,
    rule: str = RULE,
    precision: str = PRECISION,
    seed: int = seed_option(0),
    device: str = DEVICE,
    tf32: bool = typer.Option(False, "--tf32/--no-tf32",
                              help="TF32 matmuls on CUDA (Ampere+): faster, ~1e-3 relative error; no effect on CPU."),
    backend: str = typer.Option("local", "--backend", help="local (this process) | ray (Ray workers)."),
    address: str = typer.Option(None, "--address",
                                help="(ray) existing cluster (auto, host:6379, ray://host:10001); "
                                     "default: a local cluster for this run."),
    workers: int = ranged(None, "--workers", within=POSITIVE, help="(ray) number of workers (default: as many as fit)."),
    worker_threads: int = ranged(1, "--worker-threads", within=POSITIVE,
                                 help="(ray) torch threads (and CPUs) per worker."),
    gpus_per_worker: float = ranged(None, "--gpus-per-worker", within=NON_NEGATIVE,
                                    help="(ray) GPUs per worker (default: 1 if the cluster has GPUs, else 0)."),
    facts_per_batch: int = ranged(8, "--facts-per-batch", within=POSITIVE,
                                  help="Facts per attribution call (and Ray task)."),
    progress: bool = PROGRESS,
    specific: str = typer.Option("none", "--specific",
                                 help="none (paper) | effect | other_relations: also write method kn_specific, the "
                                      "refined sets without generic neurons (a deviation; kneuron.selection.specific)."),
    specific_fraction: float = SPECIFIC_FRACTION,
    holdout: int = holdout_option(0),
) -> None:
    """Attribute every prompt, refine per relation, write RUN_DIR/neurons.parquet (resumable).

    With --backend ray the facts are spread over Ray workers, on a local cluster or an existing one (--address); the run directory and table are the same as with the local backend.
    """
    from kneuron.errors import KneuronError

    try:
        _discover(model, data, out, relations, limit_facts, steps, rule, precision, seed, device, tf32, backend,
                  address, workers, worker_threads, gpus_per_worker, facts_per_batch, progress, specific,
                  specific_fraction, holdout)
    except KneuronError as exc:
        from kneuron.cli import _state, err_console

        if _state["debug"]:
            raise
        # Printed here, escaped: messages hold brackets ("kneuron[ray]", "[MASK]") that are not markup.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


def _discover(model, data, out, relations, limit_facts, steps, rule, precision, seed, device, tf32, backend,
              address, workers, worker_threads, gpus_per_worker, facts_per_batch, progress, specific="none",
              specific_fraction=0.2, holdout=0) -> None:
    from kneuron.data import load_facts
    from kneuron.errors import KneuronError
    from kneuron.runs import DiscoveryConfig
    from kneuron.runs import discover as run_discovery
    from kneuron.runs.backends import BACKENDS, RayBackend

    backend = backend.lower()
    if backend not in BACKENDS:
        raise KneuronError(f"unknown --backend {backend!r}; use one of: {', '.join(BACKENDS)}")
    if backend == "local":
        given = [name for name, value in (("--address", address), ("--workers", workers),
                                          ("--gpus-per-worker", gpus_per_worker)) if value is not None]
        if given:
            raise KneuronError(f"{', '.join(given)} only apply to --backend ray")
    config = DiscoveryConfig(model=model, data=data, relations=split_list(relations), limit_facts=limit_facts,
                             steps=steps, rule=rule, precision=precision, seed=seed, tf32=tf32,
                             specific=specific, specific_fraction=specific_fraction, holdout=holdout)
    if backend == "ray":
        runner = RayBackend(address=address, workers=workers, threads_per_worker=worker_threads,
                            gpus_per_worker=gpus_per_worker, device=device)  # fails early without Ray
        facts = load_facts(data)
        kn = None  # each worker loads the model; this process only writes the run directory
    else:
        import kneuron

        facts = load_facts(data)
        kn = kneuron.load(model, device=device)
        runner = "local"
    result = run_discovery(kn, facts, out, config, progress=progress, facts_per_batch=facts_per_batch,
                           backend=runner)
    print_relations(result.relations, result.neurons)
    console.print(f"{len(result.neurons)} neuron rows -> {out / 'neurons.parquet'}"
                  + (f" (resumed {result.resumed_facts} finished facts)" if result.resumed_facts else ""))


def _num(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_relations(summary: dict, neurons=None) -> None:
    """Per relation: facts, p and set sizes (and the kn_specific sets' size when the run has them)."""
    specific = None
    if neurons is not None and neurons["method"].eq("kn_specific").any():
        specific = neurons[neurons.method == "kn_specific"].groupby("relation").size()
    columns = ["relation", "facts", "skipped", "KN p", "KN/fact", "baseline p", "baseline/fact"]
    columns += ["specific/fact"] if specific is not None else []
    table = Table(title="knowledge neurons per relation")
    for col in columns:
        table.add_column(col, justify="right" if col != "relation" else "left")
    for rel, s in summary.items():
        cells = [rel, str(s["facts"]), str(s["skipped"]),
                 *(_num(s[m][k]) for m in ("kn", "baseline") for k in ("p", "neurons_per_fact"))]
        if specific is not None:
            done = s["facts"] - s["skipped"]
            cells.append(_num(specific.get(rel, 0) / done if done else None))
        table.add_row(*cells)
    console.print(table)
    held = sum(s.get("heldout_prompts", 0) for s in summary.values())
    if held:
        console.print(f"{held} prompts held out of discovery (--holdout): the run records them for measuring")
    skipped = sum(s.get("skipped_prompts", 0) for s in summary.values())
    if skipped:
        console.print(f"{skipped} prompts skipped: their blank is not at the end, which a causal LM cannot continue")
