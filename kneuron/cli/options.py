"""The CLI's shared options, declared once here, and numeric options with their allowed range.

    threshold: float = ranged(0.2, "--threshold", within=FRACTION, help="Coarse-set threshold.")

A value outside the range stops the command with one line naming the option and the value
(`error: --threshold must be in (0, 1], got 7.0`), before any model is loaded.

Every option that several commands take with the same meaning has one declaration here, and so one
help text: `model_option(default)` (--model/-m), `DEVICE` (--device), `STEPS` (--steps),
`seed_option(default)` (--seed), `RULE` (--rule), and below them the options on facts (--data,
--relations, --limit-facts, ...), on neuron selection (--threshold, -p, --min-prompts, ...), on
interactions and on edits.  A factory (`seed_option`, `holdout_option`, ...) serves an option whose
default differs between commands; the help is the same.  A help may end in a note the declaration
adds: " Default: ..." (what a None default stands for) and " Range: ..." (from `ranged`).

A flag that means different things in different commands (--out, --top, --max-tries, ...) is
declared by each command, with a help saying what it means there; tests/test_cli_options.py lists
those.  `split_list` reads every comma-separated list option.  `--threads` belongs to the root
command (`kneuron --threads N ...`, in `kneuron.cli`) and to no other.
"""

from __future__ import annotations

import typer

from kneuron.data import SPECS_HELP
from kneuron.edits import update as _update
from kneuron.ranges import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_REAL, SEED, Range
from kneuron.selection.config import DEFAULT as _SELECTION
from kneuron.selection.specific import SPECIFIC_FRACTION as _SPECIFIC_FRACTION

__all__ = ["DATA_HELP", "DEVICE", "DEVICE_HELP", "FRACTION", "INTERACTION_TOP", "JSON_OUT", "LAMBDA1", "LAMBDA2",
           "LIMIT_FACTS", "MARGIN", "MAX_SCALE", "MODEL_HELP", "NON_NEGATIVE", "NULL_BINS", "NULL_REPEATS",
           "PER_RELATION", "POSITIVE", "POSITIVE_REAL", "PRECISION", "PROGRESS", "RATIO", "REFINE_MIN_PROMPTS",
           "REFINE_P", "RELATIONS", "RELATIONS_HELP", "REPLACEMENT", "RULE", "RULE_HELP", "RUN_MODEL_NOTE",
           "SCALING", "SEED", "SEED_HELP", "SELECTIVITY", "SHARE", "SPECIFIC_FRACTION", "STEPS", "STEPS_HELP",
           "THRESHOLD", "TOP_K", "WORLD_CAUSAL", "WORLD_MULTILINGUAL", "data_option", "holdout_option",
           "model_option", "other_prompts_option", "ranged", "run_option", "seed_option", "split_list"]


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


# --- Facts: which ones, how many. ---

DATA_HELP = f"Facts: {SPECS_HELP}."


def data_option(default: str | None = "world", *, default_is: str | None = None):
    """--data/-d with the one help text (DATA_HELP).  With `default` None, `default_is` says what the
    command then reads (" Default: ..."), as RUN_MODEL_NOTE does for --model.

    `kneuron multilingual --data` is its own: it takes facts in several languages only.
    """
    return typer.Option(default, "--data", "-d", help=DATA_HELP + (f" Default: {default_is}." if default_is else ""))


# `kneuron data download --relations` (which BINGREL files to fetch) is its own.
RELATIONS_HELP = "Comma-separated relation ids to keep, e.g. P19,P36 (default: all)."
RELATIONS = typer.Option(None, "--relations", "-r", help=RELATIONS_HELP)

LIMIT_FACTS = ranged(None, "--limit-facts", within=POSITIVE, help="Only the first N facts of each relation.")

# A file of facts or cases drawn from a fact set (data sample, data counterfact).
PER_RELATION = ranged(..., "--per-relation", "-n", within=POSITIVE,
                      help="How many facts of each relation the output file keeps (a seeded draw among the usable "
                           "ones).")

PROGRESS = typer.Option(True, "--progress/--no-progress", help="Show progress while the command runs.")

HOLDOUT_HELP = ("Hold K prompts of each fact (with at least K + 3 usable ones) out of discovery, seeded; the run "
                "records them, and the effects measured on the run are also reported on them (suppress_heldout / "
                "amplify_heldout). 0: none (the paper: every prompt in discovery, effects in-sample).")


def holdout_option(default: int = 0):
    """--holdout with the one help text; the default differs (0 for discover and reproduce, 2 for demo)."""
    return ranged(default, "--holdout", within=NON_NEGATIVE, help=HOLDOUT_HELP)


# --- A fact's neurons: IG scores -> coarse sets -> refined set (kneuron.selection). ---

THRESHOLD = ranged(_SELECTION.threshold, "--threshold", within=FRACTION,
                   help="Coarse-set threshold, relative to each prompt's maximum score.")
REFINE_P = ranged(_SELECTION.p_start, "-p", within=FRACTION,
                  help="Refinement: share of a fact's prompts (in each language, for facts in several languages) "
                       "that must hold a neuron.")
# `kneuron data sample --min-prompts` (drop facts with fewer usable prompts) is its own.
REFINE_MIN_PROMPTS = ranged(_SELECTION.min_prompts, "--min-prompts", within=POSITIVE,
                            help="Refinement: ...and at least this many of those prompts (paper code: 3).")
PRECISION = typer.Option("fp32", "--precision", help="fp32, or bf16 autocast (opt-in).")
SPECIFIC_FRACTION = ranged(_SPECIFIC_FRACTION, "--specific-fraction", within=NON_NEGATIVE,
                           help="Rule effect of dropping generic neurons (kneuron.selection.specific): keep a neuron "
                                "when its collateral damage is at most this fraction of its own effect.")


def other_prompts_option(*, within: Range):
    """--other-prompts with the one help text; the range differs (compare takes 0: no collateral measured)."""
    return ranged(10, "--other-prompts", within=within,
                  help="Prompts of other relations per fact on which its neurons are suppressed (collateral damage).")


JSON_OUT = typer.Option(None, "--json", help="Also write the whole result (settings, neurons and every effect) to this "
                                             "JSON file.")

# --- Interactions of a fact's neurons (kneuron interactions, kneuron multilingual --interactions). ---

# `kneuron attribute --top` (how many neurons to list) is its own.
INTERACTION_TOP = ranged(20, "--top", within=Range(2, integer=True),  # interactions need a pair
                         help="Interactions: how many of a fact's top neurons by integrated gradients to study (per "
                              "language, for facts in several languages).")
NULL_REPEATS = ranged(20, "--null-repeats", within=Range(0, integer=True),
                      help="Random matched sets for the null of the interaction counts (degenerate pairs, greedy set): "
                           "each neuron matched by layer and activation quantile bin at the blank; each set costs as "
                           "much as the observed pairs and greedy search; 0: no null.")
NULL_BINS = ranged(10, "--null-bins", within=POSITIVE,
                   help="Activation quantile bins per layer for the null's matching (halved where a bin has too few "
                        "neurons).")

# --- Edits: the paper's update and erase rules, kneuron's fitted edit (kneuron.edits). ---


def run_option(default=None):
    """--run of the commands that take the model, the facts and their neurons from a discovery run (edit
    update: optional; edit erase: required, `...`).  `kneuron compare --run` is its own."""
    return typer.Option(default, "--run",
                        help="A discovery run: the model, the facts and their knowledge neurons come from it.")


SHARE = ranged(0.1, "--share", within=FRACTION,
               help="Updating from a discovery run: neurons held by more than this share of the relation's facts are "
                    "not edited (paper code: 0.1).")
LAMBDA1 = ranged(1.0, "--lambda1", within=NON_NEGATIVE,
                 help="The paper's update rule (not a fitted edit): λ1, the weight of the removed (original) answer's "
                      "embedding.")
LAMBDA2 = ranged(8.0, "--lambda2", within=NON_NEGATIVE,
                 help="The paper's update rule (not a fitted edit): λ2, the weight of the added (target) answer's "
                      "embedding.")
SCALING = typer.Option("norm", "--scaling", help="The paper's update rule (not a fitted edit): λ1 and λ2 scaled by "
                                                 "norm (paper code: ‖v‖/‖E‖·λ) | raw (paper text).")
TOP_K = ranged(20, "--top-k", within=POSITIVE,
               help="Erasing: how many of the relation's most frequent knowledge neurons are erased (paper code: 20).")
REPLACEMENT = typer.Option("zero", "--replacement",
                           help="Erasing: the erased value slots become zero (paper code) | unk (the [UNK] embedding).")
RATIO = ranged(1.0, "--ratio", within=POSITIVE_REAL,
               help="Fitted edit: λ2/λ1, the weight of the added answer against the removed one.")
MARGIN = ranged(_update.FIT_MARGIN, "--margin", within=POSITIVE_REAL,
                help="Fitted edit: multiply the fitted strength by this (below 1: the new answer beats the old one but "
                     "may not be top-1; 1 makes it top-1 on every prompt; the default was chosen on the benchmark's "
                     "tune split).")
MAX_SCALE = ranged(_update.MAX_SCALE, "--max-scale", within=POSITIVE_REAL,
                   help="Fitted edit: the strongest strength tried; an edit that needs more is declined (not "
                        "applied).")
SELECTIVITY = ranged(_update.SELECTIVITY, "--selectivity", within=POSITIVE_REAL,
                     help="A neuron firing on prompts of other subjects of the relation at more than this share of its "
                          "activation on the fact is not edited.")

# --- The built-in fact world (kneuron.world). ---

WORLD_CAUSAL = typer.Option(False, "--causal",
                            help="The fact world's Llama-shaped decoder (the model 'world-causal') instead of its BERT.")
WORLD_MULTILINGUAL = typer.Option(False, "--multilingual",
                                  help="The multilingual fact world: its facts in English and two invented languages "
                                       "('world-multilingual[-causal]').")
