"""The `kneuron` command: a thin layer over the public API.

Each command group lives in its own module and exposes a `typer.Typer` named `app`.  `main()`
turns any `KneuronError`, and any usage error of click's (a bad or out-of-range option value, see
`kneuron.cli.options`), into one line on stderr and a non-zero exit code; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from kneuron.cli.options import POSITIVE, ranged
from kneuron.errors import KneuronError

app = typer.Typer(
    name="kneuron",
    help="Find, test and edit the knowledge neurons of transformer language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    threads: int = ranged(None, "--threads", within=POSITIVE, help="CPU threads for torch (default: torch's choice)."),
) -> None:
    _state["debug"] = debug
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _register() -> None:
    import importlib

    for name, help_text in [("data", "Inspect and fetch datasets."),
                            ("world", "Build the offline fact world and its model."),
                            ("models", "Real pretrained models: list the catalogue, fetch one."),
                            ("edit", "Edit value slots: update a fact, erase a relation, apply saved edits.")]:
        app.add_typer(importlib.import_module(f"kneuron.cli.{name}").app, name=name, help=help_text)
    # Modules that register their own commands on `app` when imported.
    for name in ["probe", "discover", "demo", "reproduce", "experiment", "compare", "multilingual", "explore"]:
        importlib.import_module(f"kneuron.cli.{name}")


def main(argv: list[str] | None = None) -> int:
    _register()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = app(args=argv, standalone_mode=False)  # typer returns the exit code of a Ctrl-C (130) or typer.Exit
    except KneuronError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as exc:  # typer/click exits
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors and the like
        # typer vendors its own click (typer._click), so match click's classes by name, not identity.
        kinds = {c.__name__ for c in type(exc).__mro__}
        if "ClickException" in kinds:  # a bad or out-of-range option value, a missing argument: one line
            ctx = getattr(exc, "ctx", None)
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            err_console.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(hint)}",
                              highlight=False, soft_wrap=True)
            return exc.exit_code
        if "Abort" in kinds:
            return 1
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}  (run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
