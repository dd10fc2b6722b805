"""Commands on one prompt or one fact: `kneuron predict`, `kneuron attribute`, `kneuron neurons`.

The quick loop before a dataset run: what does the model say, which neurons carry the answer,
and does switching them off matter?
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    JSON_OUT,
    NON_NEGATIVE,
    POSITIVE,
    PRECISION,
    REFINE_MIN_PROMPTS,
    REFINE_P,
    RULE,
    STEPS,
    THRESHOLD,
    model_option,
    ranged,
    seed_option,
    split_list,
)
from kneuron.errors import KneuronError

console = Console()

MODEL = model_option("world")
MULTI = typer.Option(None, "--multi-token/--single-token",
                     help="Score answers of several tokens (default: causal LMs yes, masked LMs no, as in the paper).")

_NEURON = re.compile(r"^L?(\d+)[:.](\d+)$")


def parse_neurons(text: str) -> list[tuple[int, int]]:
    """'3:120,L3.7' -> [(3, 120), (3, 7)]; one line naming the bad item otherwise."""
    out = []
    for item in split_list(text) or []:
        m = _NEURON.match(item)
        if not m:
            raise KneuronError(f"bad neuron {item!r}: write LAYER:INDEX (e.g. 3:120) or L3.120")
        out.append((int(m.group(1)), int(m.group(2))))
    if not out:
        raise KneuronError("no neurons given")
    return out


def parse_layers(text: str | None) -> list[int] | None:
    items = split_list(text)
    if items is None:
        return None
    try:
        return [int(t) for t in items]
    except ValueError:
        raise KneuronError(f"--layers must be comma-separated integers, got {text!r}") from None


def load_model(model: str, device: str, ctx: typer.Context | None = None, multi_token: bool | None = None):
    import kneuron
    from kneuron.cli.experiment import set_threads

    kn = kneuron.load(model, device=device, multi_token=multi_token)
    set_threads(kn, ctx)
    return kn


@app.command()
def predict(
    ctx: typer.Context,
    prompt: str = typer.Argument(..., help="A prompt with a blank ([MASK] for masked LMs; the end for causal LMs)."),
    model: str = MODEL,
    k: int = ranged(5, "-k", within=POSITIVE, help="How many tokens to show."),
    answer: str = typer.Option(None, "--answer", "-a", help="Also print this one answer's probability."),
    device: str = DEVICE,
) -> None:
    """The model's top-k fillers for the blank (e.g. to check an edited model)."""
    kn = load_model(model, device, ctx)
    table = Table(title=escape(prompt))
    table.add_column("rank", justify="right")
    table.add_column("token")
    table.add_column("probability", justify="right")
    for rank, (token, prob) in enumerate(kn.predict(prompt, k=k), 1):
        table.add_row(str(rank), escape(repr(token)), f"{prob:.4f}")  # quoted: a leading space shows
    console.print(table)
    if answer is not None:
        console.print(f"P({escape(answer)}) = {kn.probability(prompt, answer):.4f}")


@app.command()
def attribute(
    ctx: typer.Context,
    prompt: str = typer.Argument(None, help="A prompt with a blank."),
    answer: str = typer.Argument(None, help="The gold answer."),
    model: str = MODEL,
    top: int = ranged(10, "--top", within=POSITIVE, help="How many of the top-scoring neurons to list."),
    threshold: float = THRESHOLD,
    steps: int = STEPS,
    rule: str = RULE,
    layers: str = typer.Option(None, help="Only these layers, e.g. 9,10,11 (default all)."),
    precision: str = PRECISION,
    save: Path = typer.Option(None, "--save", help="Write the result (safetensors) for later use."),
    load: Path = typer.Option(None, "--load", help="Show a saved result instead of computing one."),
    figure: Path = typer.Option(None, "--figure", help="Write a figure of every layer's scores (PNG) here."),
    multi_token: bool = MULTI,
    device: str = DEVICE,
) -> None:
    """Integrated-gradients scores of every neuron for one prompt: the top neurons and the coarse set."""
    from kneuron.attribution import AttributionResult

    if load is not None:
        if prompt is not None:
            raise KneuronError("give either PROMPT ANSWER or --load FILE, not both")
        result = AttributionResult.load(load)
    else:
        if prompt is None or answer is None:
            raise KneuronError("give PROMPT and ANSWER (or --load FILE)")
        kn = load_model(model, device, ctx, multi_token)
        result = kn.attribute(prompt, answer, steps=steps, rule=rule, layers=parse_layers(layers),
                              precision=precision)
    delta = result.max_abs_delta()
    console.print(f"{escape(result.prompt)} -> {escape(result.answer)}: p = {result.probability:.4f}"
                  + (f", max |convergence delta| = {delta:.2e}" if delta is not None else "")
                  + f" ({result.method}" + (f", {result.rule}, {result.steps} steps" if result.rule else "")
                  + f"{', ' + result.model if result.model else ''})",
                  highlight=False)
    table = Table(title=f"top {top} neurons")
    for col in ("rank", "neuron", "layer", "index", "score", "score / max", "activation"):
        table.add_column(col, justify="left" if col == "neuron" else "right")
    peak = float(result.scores.max())
    for rank, (n, score, act) in enumerate(result.top(top), 1):
        table.add_row(str(rank), str(n), str(n.layer), str(n.index), f"{score:.4g}",
                      f"{score / peak:.3f}" if peak > 0 else "-", f"{act:.4g}")
    console.print(table)
    coarse = result.coarse(threshold)
    console.print(f"coarse set (score >= {threshold} x max): {len(coarse)} neurons"
                  + (": " + ", ".join(map(str, coarse[:20])) + (" ..." if len(coarse) > 20 else "") if coarse else ""))
    if save is not None:
        result.save(save)
        console.print(f"saved -> {save}")
    if figure is not None:
        from kneuron.reports.figures import attribution_figure, save_png

        save_png(attribution_figure(result, top=top, threshold=threshold), figure)
        console.print(f"figure -> {figure}")


@app.command()
def neurons(
    ctx: typer.Context,
    answer: str = typer.Argument(..., help="The fact's answer (object)."),
    prompts: list[str] = typer.Argument(None, help="Paraphrased prompts of the fact, each with a blank."),
    prompts_file: Path = typer.Option(None, "--prompts-file", help="One prompt per line (instead of PROMPTS)."),
    model: str = MODEL,
    threshold: float = THRESHOLD,
    p: float = REFINE_P,
    min_prompts: int = REFINE_MIN_PROMPTS,
    factor: float = ranged(2.0, "--factor", within=NON_NEGATIVE, help="Amplification factor."),
    seed: int = seed_option(0),
    steps: int = STEPS,
    rule: str = RULE,
    json_out: Path = JSON_OUT,
    multi_token: bool = MULTI,
    device: str = DEVICE,
) -> None:
    """One fact's knowledge neurons from its paraphrases, and what suppressing / amplifying them does."""
    prompts = list(prompts or [])
    if prompts_file is not None:
        if prompts:
            raise KneuronError("give PROMPTS or --prompts-file, not both")
        if not prompts_file.is_file():
            raise KneuronError(f"prompts file not found: {prompts_file}")
        prompts = [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise KneuronError("no prompts: give them after ANSWER or with --prompts-file")
    kn = load_model(model, device, ctx, multi_token)
    probe = kn.probe_fact(prompts, answer, threshold=threshold, p=p, min_prompts=min_prompts, steps=steps,
                          rule=rule, seed=seed, factor=factor)
    shared = probe.shared_by()
    found = probe.neurons["kn"]
    console.print(f"{len(found)} knowledge neurons for {escape(answer)} over {len(prompts)} prompts "
                  f"(kept when shared by >= max({p} x {len(prompts)}, {min_prompts}) prompts)", highlight=False)
    if found:
        console.print(", ".join(f"{n} ({shared[n]}/{len(prompts)})" for n in found), highlight=False)
    table = Table(title="mean gold probability, relative change")
    for col in ("neurons", "count", "suppress (x0)", f"amplify (x{factor:g})"):
        table.add_column(col, justify="left" if col == "neurons" else "right")
    names = {"kn": "knowledge neurons", "baseline": "activation baseline", "random": "random (same count)"}
    for row in probe.summary().to_dict(orient="records"):
        table.add_row(names[row["method"]], str(row["neurons"]), f"{row['suppress_change']:+.1%}",
                      f"{row['amplify_change']:+.1%}")
    console.print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(probe.to_dict(), indent=2) + "\n", encoding="utf-8")
        console.print(f"-> {json_out}")
