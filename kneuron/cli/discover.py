"""`kneuron discover`: find the knowledge neurons of a dataset into a resumable run directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from kneuron.cli import app

console = Console()


def _relations(value: str | None) -> list[str] | None:
    return [r.strip() for r in value.split(",") if r.strip()] if value else None


@app.command()
def discover(
    model: str = typer.Option("world", "--model", "-m", help="Hub name, local directory, or 'world'."),
    data: str = typer.Option("world", "--data", "-d", help="'world', 'pararel:DIR' (or DIR), or FILE.jsonl."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created; an existing one is resumed)."),
    relations: str = typer.Option(None, "--relations", "-r", help="Comma-separated relation ids, e.g. P19,P36."),
    limit_facts: int = typer.Option(None, "--limit-facts", help="Only the first N facts of each relation."),
    steps: int = typer.Option(20, help="Integration points m."),
    method: str = typer.Option("riemann_left", help="riemann_left (paper code) | riemann_right | gauss_legendre."),
    precision: str = typer.Option("fp32", help="fp32, or bf16 autocast (opt-in)."),
    seed: int = typer.Option(0, help="Seed for every random choice (recorded in config.json)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Attribute every prompt, refine per relation, write RUN_DIR/neurons.parquet (resumable)."""
    import kneuron
    from kneuron.data import load_facts
    from kneuron.runs import DiscoveryConfig
    from kneuron.runs import discover as run_discovery

    config = DiscoveryConfig(model=model, data=data, relations=_relations(relations), limit_facts=limit_facts,
                             steps=steps, method=method, precision=precision, seed=seed)
    facts = load_facts(data)
    kn = kneuron.load(model, device=device)
    result = run_discovery(kn, facts, out, config, progress=progress)
    print_relations(result.relations)
    console.print(f"{len(result.neurons)} neuron rows -> {out / 'neurons.parquet'}"
                  + (f" (resumed {result.resumed_facts} finished facts)" if result.resumed_facts else ""))


def print_relations(summary: dict) -> None:
    table = Table(title="knowledge neurons per relation")
    for col in ("relation", "facts", "skipped", "KN p", "KN/fact", "baseline p", "baseline/fact"):
        table.add_column(col, justify="right" if col != "relation" else "left")
    for rel, s in summary.items():
        table.add_row(rel, str(s["facts"]), str(s["skipped"]), f"{s['kn']['p']:.2f}",
                      f"{s['kn']['neurons_per_fact']:.2f}", f"{s['baseline']['p']:.2f}",
                      f"{s['baseline']['neurons_per_fact']:.2f}")
    console.print(table)
