"""`kneuron explore RUN_DIR`: one offline HTML page (plus chunk files for a large run) to look at a run's knowledge neurons."""

from __future__ import annotations

from pathlib import Path

import typer

from kneuron.cli import app
from kneuron.cli.options import model_option, ranged
from kneuron.ranges import Range


@app.command()
def explore(
    run_dir: Path = typer.Argument(..., help="A finished discovery run directory."),
    out: Path = typer.Option(None, "--out", help="Where to write the page (default RUN_DIR/explorer.html)."),
    model: str = model_option(None),
    open_: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    max_page_mb: float = ranged(40.0, "--max-page-mb", within=Range(low=0, low_open=True),
                                help="Views beyond this many MB go to OUT_files/chunk-K.js beside the page, "
                                "loaded on demand."),
    heatmaps: str = typer.Option("auto", "--heatmaps", help="full: every neuron's score per prompt (recomputed "
                                 "once with the run's settings and cached); coarse: the stored coarse sets only; "
                                 "auto: full for runs of at most 2,000 prompts."),
) -> None:
    """Write an offline explorer page: relations, facts, neurons, search. Computes missing data once
    (activations with --model, by default the run's model)."""
    from kneuron.explorer import build_explorer

    path = build_explorer(run_dir, out=out, model=model, log=lambda m: typer.echo(m, err=True),
                          max_page_bytes=int(max_page_mb * (1 << 20)), heatmaps=heatmaps)
    typer.echo(str(path))
    if open_:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
