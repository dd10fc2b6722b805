"""Numeric CLI options with their allowed range, checked while parsing and shown in --help.

    threshold: float = ranged(0.2, "--threshold", within=FRACTION, help="Coarse-set threshold.")

A value outside the range stops the command with one line naming the option and the value
(`error: --threshold must be in (0, 1], got 7.0`), before any model is loaded.
"""

from __future__ import annotations

import typer

from kneuron.ranges import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_REAL, SEED, Range

__all__ = ["FRACTION", "NON_NEGATIVE", "POSITIVE", "POSITIVE_REAL", "SEED", "ranged"]


def ranged(default, *param_decls: str, within: Range, help: str = "", **kwargs):
    """A typer.Option whose value must lie `within` the range (None, the option not given, passes)."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value):
        if ctx.resilient_parsing:  # shell completion: parse, do not judge
            return value
        name = max(param.opts, key=len) if param.opts else param.name
        return within.check(name, value)

    return typer.Option(default, *param_decls, help=f"{help} Range: {within.describe()}.".strip(), callback=check,
                        **kwargs)
