"""`kneuron explore RUN_DIR`: one self-contained HTML page to look at a run's knowledge neurons."""

from __future__ import annotations

from pathlib import Path

import typer

from kneuron.cli import app


@app.command()
def explore(
    run_dir: Path = typer.Argument(..., help="A finished discovery run directory."),
    out: Path = typer.Option(None, "--out", help="Where to write the page (default RUN_DIR/explorer.html)."),
    model: str = typer.Option(None, "--model", help="Model to compute activations with (default: the run's)."),
    open_: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
) -> None:
    """Write an offline explorer page: relations, facts, neurons, search. Computes missing data once."""
    from kneuron.explorer import build_explorer

    path = build_explorer(run_dir, out=out, model=model, log=lambda m: typer.echo(m, err=True))
    typer.echo(str(path))
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
