"""Feedback for slow one-time work (fetching, converting): notes and transient progress lines on stderr.

stdout stays for results; these go beside them on stderr and vanish when the work is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


def log_to_stderr(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False, soft_wrap=True, markup=False)


@contextlib.contextmanager
def progress_bar(show: bool, text: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A byte bar when `total` is known, else a spinner with the elapsed time; yields `advance(n)`."""
    if not show:
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()] if total is None else \
        [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(text, total=total)
        yield lambda n: bar.advance(task, n)
