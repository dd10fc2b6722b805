"""`kneuron world ...`: build the offline fact world (and its model) and look at a built one."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kneuron.cli.options import WORLD_CAUSAL, WORLD_MULTILINGUAL, seed_option

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def metrics_table(meta: dict) -> Table:
    """Per-relation accuracy and calibration of the world model, plus an overall row."""
    m = meta.get("metrics", {})
    table = Table(box=box.SIMPLE_HEAD, title="fact-world model", title_justify="left", pad_edge=False)
    for col, just in [("rel", "left"), ("label", "left"), ("type", "left"), ("facts", "right"),
                      ("objs", "right"), ("train", "right"), ("p(gold)", "right"),
                      ("held-out", "right"), ("chance", "right")]:
        table.add_column(col, justify=just, no_wrap=col != "label")
    for rel, r in m.get("per_relation", {}).items():
        table.add_row(rel, escape(r.get("label", "")), r.get("type", ""), str(r.get("facts", "")),
                      str(r.get("objects", "")), _fmt(r.get("train_accuracy")),
                      _fmt(r.get("train_median_gold_prob"), pct=False), _fmt(r.get("held_out_accuracy")),
                      _fmt(r.get("chance")))
    table.add_section()
    counts = meta.get("counts", {})
    table.add_row("all", "", "", str(counts.get("facts", "")), "", _fmt(m.get("train_accuracy")),
                  _fmt(m.get("median_gold_prob"), pct=False), _fmt(m.get("held_out_accuracy")),
                  _fmt(m.get("held_out_chance")), style="bold")
    return table


def language_table(meta: dict) -> Table:
    """Per-language accuracy of a multilingual world's model (training and held-out templates)."""
    table = Table(box=box.SIMPLE_HEAD, title="per language", title_justify="left", pad_edge=False)
    for col in ("language", "train prompts", "train", "p(gold)", "held-out prompts", "held-out"):
        table.add_column(col, justify="left" if col == "language" else "right")
    for lang, r in meta["metrics"]["per_language"].items():
        table.add_row(lang, str(r.get("train_prompts")), _fmt(r.get("train_accuracy")),
                      _fmt(r.get("train_median_gold_prob"), pct=False), str(r.get("held_out_prompts")),
                      _fmt(r.get("held_out_accuracy")))
    return table


def print_world(path: Path, meta: dict) -> None:
    c = meta.get("counts", {})
    t = meta.get("timings", {})
    tc = meta.get("train_config", {})
    types = ", ".join(f"{n} {k}" for k, n in c.get("by_type", {}).items())
    console.print(f"fact world: {escape(str(path))}", highlight=False)
    console.print(
        f"  seed {meta.get('seed')}, {c.get('relations')} relations ({types}), {c.get('facts')} facts, "
        f"{c.get('prompts')} prompts, {c.get('th_sentences')} th + {c.get('h_sentences')} h sentences",
        highlight=False,
    )
    console.print(
        f"  model: {'Llama (causal, gated FFN)' if meta.get('model_kind') == 'causal' else 'BERT (masked)'}, "
        f"{tc.get('num_layers')} layers, hidden {tc.get('hidden_size')}, FFN {tc.get('intermediate_size')}, "
        f"vocab {meta.get('metrics', {}).get('vocab_size')}; trained in {t.get('train_s', 0):.0f} s "
        f"(build {t.get('total_s', 0):.0f} s)",
        highlight=False,
    )
    console.print(metrics_table(meta))
    if meta.get("metrics", {}).get("per_language"):
        console.print(language_table(meta))
    console.print("train: accuracy and median p(gold) on the training templates; held-out: accuracy on the "
                  "unseen paraphrase; chance = 1 / objs (distinct objects)", style="dim", highlight=False)


@app.command()
def build(
    out: Path = typer.Option(None, "--out", "-o", help="Directory to write (default: the user cache)."),
    seed: int = seed_option(0),
    force: bool = typer.Option(False, "--force", help="Rebuild the world even if a complete one is there."),
    causal: bool = WORLD_CAUSAL,
    multilingual: bool = WORLD_MULTILINGUAL,
) -> None:
    """Generate the fact world and train its model (about 2 minutes on a CPU)."""
    from kneuron.world import build_world, default_world_config, ensure_world, load_world_meta

    def log(msg: str) -> None:
        console.print(escape(msg), highlight=False)

    kind = "causal" if causal else "masked"
    if out is None and not force:
        path = ensure_world(seed, log=log, kind=kind, multilingual=multilingual)  # also refreshes old defaults
    else:
        path = build_world(out, seed=seed, force=force, log=log, kind=kind,
                           world_config=default_world_config(multilingual))
    print_world(path, load_world_meta(path))


@app.command()
def info(
    path: Path = typer.Argument(None, help="A built world directory (default: the cached seed-0 world; --causal "
                                "and --multilingual choose which)."),
    causal: bool = WORLD_CAUSAL,
    multilingual: bool = WORLD_MULTILINGUAL,
) -> None:
    """Counts and model metrics of a built world."""
    from kneuron.errors import DataError
    from kneuron.world import default_world_dir, is_world_dir, load_world_meta

    path = path if path is not None else default_world_dir(0, "causal" if causal else "masked", multilingual)
    if not is_world_dir(path):
        raise DataError(f"no fact world at {path} (build one with `kneuron world build`)")
    print_world(path, load_world_meta(path))
