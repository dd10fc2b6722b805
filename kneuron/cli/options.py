"""The CLI's shared options, declared once here, and numeric options with their allowed range.

    threshold: float = ranged(0.2, "--threshold", within=FRACTION, help="Coarse-set threshold.")

A value outside the range stops the command with one line naming the option and the value
(`error: --threshold must be in (0, 1], got 7.0`), before any model is loaded.

Options that many commands take have one declaration, and so one help text, each:
`model_option(default)` (--model/-m), `DEVICE` (--device), `STEPS` (--steps), `seed_option(default)`
(--seed); `split_list` reads every comma-separated list option.  `--threads` belongs to the root
command (`kneuron --threads N ...`, in `kneuron.cli`) and to no other.
"""

from __future__ import annotations

import typer

from kneuron.ranges import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_REAL, SEED, Range

__all__ = ["DEVICE", "DEVICE_HELP", "FRACTION", "MODEL_HELP", "NON_NEGATIVE", "POSITIVE", "POSITIVE_REAL",
           "RUN_MODEL_NOTE", "SEED", "SEED_HELP", "STEPS", "STEPS_HELP", "model_option", "ranged",
           "seed_option", "split_list"]


def ranged(default, *param_decls: str, within: Range, help: str = "", **kwargs):
    """A typer.Option whose value must lie `within` the range (None, the option not given, passes)."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value):
        if ctx.resilient_parsing:  # shell completion: parse, do not judge
            return value
        name = max(param.opts, key=len) if param.opts else param.name
        return within.check(name, value)

    return typer.Option(default, *param_decls, help=f"{help} Range: {within.describe()}.".strip(), callback=check,
                        **kwargs)


# --- Options shared by many commands: one declaration, one help text each. ---

# What `kneuron.load` (kneuron.models.sources.resolve_model) accepts; the built-in worlds are
# kneuron.world.BUILTIN_MODELS.
MODEL_HELP = ("Hub name, local directory, .gguf file, catalogue name (kneuron models list) or a built-in world "
              "(world, world-causal, world-multilingual, world-multilingual-causal).")
# The only addition to MODEL_HELP: for commands that read a discovery run, --model left out is the run's model.
RUN_MODEL_NOTE = " Default: the run's model."


def model_option(default: str | None = "world", *, of_run: bool | None = None):
    """--model/-m with the one help text (MODEL_HELP).

    `default`: "world", "world-multilingual", ... ; `...` (required); or None.  None means "the
    run's model" (help + RUN_MODEL_NOTE) unless `of_run=False`, for an optional model that is
    not a run's (the command's docstring says what giving one adds).
    """
    note = RUN_MODEL_NOTE if (default is None if of_run is None else of_run) else ""
    return typer.Option(default, "--model", "-m", help=MODEL_HELP + note)


# What kneuron.models.loading.resolve_device accepts.
DEVICE_HELP = "auto (CUDA if available, else MPS, else CPU) | cpu | cuda | cuda:N | mps."
DEVICE = typer.Option("auto", "--device", help=DEVICE_HELP)

STEPS_HELP = "Integration points m of integrated gradients (when neurons are found)."
STEPS = ranged(20, "--steps", within=POSITIVE, help=STEPS_HELP)

SEED_HELP = "Seed of every random choice of the command (the same seed gives the same result)."


def seed_option(default: int = 0):
    """--seed with the one help text; the default differs (0, or the paper's 42 for its experiments)."""
    return ranged(default, "--seed", within=SEED, help=SEED_HELP)


def split_list(text: str | None) -> list[str] | None:
    """A comma-separated option value as a list: items stripped, empty ones dropped.

    None when nothing is listed (None, "" or " , "), so that a caller reads "not given" and
    "given empty" alike: " a, ,b ," -> ["a", "b"].
    """
    items = [t.strip() for t in (text or "").split(",")]
    return [t for t in items if t] or None


def _rule_help() -> str:
    from kneuron.attribution.paths import INTEGRATION_RULES

    return (f"Integration rule of integrated gradients: {' | '.join(INTEGRATION_RULES)} "
            "(riemann_left: the paper's code; riemann_right: the paper's equation).")


# IG's integration rule (kneuron.attribution.paths); not a localization method (kneuron.localization).
RULE_HELP = _rule_help()
RULE = typer.Option("riemann_left", "--rule", help=RULE_HELP)
