"""`kneuron edit ...`: compute, inspect, apply and revert value-slot edits from the command line.

An edit is a file (`.kedit`, safetensors) holding new value slots and the slots they replace, so
it can be applied to a fresh copy of the model, saved into a new model directory, and reverted
from that directory later, each bit for bit.  The model files given are never written over.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kneuron.cli.options import FRACTION, NON_NEGATIVE, POSITIVE, SEED, ranged
from kneuron.cli.probe import load_model, parse_neurons
from kneuron.errors import KneuronError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
PROVENANCE = "kneuron_edits.json"

RUN = typer.Option(None, "--run", help="A discovery run: the model, the facts and their neurons come from it.")
MODEL = typer.Option(None, "--model", "-m", help="Hub name, local directory, or 'world' (default: the run's model).")
OUT = typer.Option(..., "--out", "-o", help="Edit file to write (.kedit).")
SAVE_MODEL = typer.Option(None, "--save-model", help="Also write the edited model (and tokenizer) to this directory.")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps.")


def _prediction_table(kn, prompts, answers, run) -> Table:
    """Top-1 and the answers' probabilities per prompt, before -> after (`run(fn)` evaluates fn edited)."""
    before = [(kn.predict(p, k=1)[0][0], [kn.probability(p, a) for a in answers]) for p in prompts]
    after = run(lambda: [(kn.predict(p, k=1)[0][0], [kn.probability(p, a) for a in answers]) for p in prompts])
    table = Table(title="before -> after")
    table.add_column("prompt")
    table.add_column("top-1", justify="right")
    for a in answers:
        table.add_column(f"P({escape(a)})", justify="right")
    for prompt, (t0, p0), (t1, p1) in zip(prompts, before, after):
        table.add_row(escape(prompt), f"{escape(repr(t0))} -> {escape(repr(t1))}",
                      *(f"{x:.3f} -> {y:.3f}" for x, y in zip(p0, p1)))
    return table


def _save_model(kn, edit, out_dir: Path, source: str) -> None:
    """Write the edited model beside its tokenizer, with the list of edits applied to it."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise KneuronError(f"--save-model: {out_dir} exists and is not empty; choose a new directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    kn.model.save_pretrained(out_dir)
    kn.tokenizer.save_pretrained(out_dir)
    history = []
    from kneuron.world import BUILTIN_MODELS

    src = Path(source) / PROVENANCE
    if source not in BUILTIN_MODELS and src.is_file():
        history = json.loads(src.read_text(encoding="utf-8"))
    history.append({"kind": edit.kind, "neurons": [[n.layer, n.index] for n in edit.neurons], "info": edit.info,
                    "applied_to": source})
    (out_dir / PROVENANCE).write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    console.print(f"{'reverted' if edit.kind.startswith('revert:') else 'edited'} model -> {out_dir}")


def _check_out(out: Path) -> None:
    if out.suffix != ".kedit":
        raise KneuronError(f"--out {out}: an edit file ends in .kedit")


@app.command()
def update(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="The new answer."),
    out: Path = OUT,
    run_dir: Path = RUN,
    subject: str = typer.Option(None, "--subject", help="(with --run) the fact's subject."),
    relation: str = typer.Option(None, "--relation", help="(with --run) the fact's relation, if the subject has several."),
    share: float = ranged(0.1, "--share", within=FRACTION, help="(with --run) skip neurons held by more than this "
                          "share of the relation's facts (paper code: 0.1)."),
    model: str = MODEL,
    neurons: str = typer.Option(None, "--neurons", help="(without --run) neurons to edit, e.g. 3:120,3:7."),
    original: str = typer.Option(None, "--from", help="(without --run) the answer to replace."),
    prompts: list[str] = typer.Option(None, "--prompt", help="Prompts to check before and after (repeatable; "
                                      "default with --run: the fact's prompts)."),
    lambda1: float = ranged(1.0, "--lambda1", within=NON_NEGATIVE, help="Weight of the removed answer's embedding."),
    lambda2: float = ranged(8.0, "--lambda2", within=NON_NEGATIVE, help="Weight of the added answer's embedding."),
    scaling: str = typer.Option("norm", help="norm (paper code: ‖v‖/‖E‖·λ) | raw (paper text)."),
    save_model: Path = SAVE_MODEL,
    device: str = DEVICE,
) -> None:
    """Rewrite one fact (spec 5.4): v <- v - λ1·E(old) + λ2·E(new) in its knowledge neurons' value slots."""
    from kneuron.edits import plan_update, select_update_neurons

    _check_out(out)
    prompts = list(prompts or [])
    source = {}
    if run_dir is not None:
        from kneuron.experiments.rundata import RunData

        if neurons is not None or original is not None:
            raise KneuronError("--neurons and --from are taken from the run; give them only without --run")
        if subject is None:
            raise KneuronError("--run needs --subject (the fact to update)")
        run = RunData.load(run_dir)
        i = run.find_fact(subject, relation)
        fact = run.facts.facts[i]
        sets = run.sets("kn")
        chosen = select_update_neurons(sets[i], [sets[j] for j in run.universe[fact.relation]], share)
        if not chosen:
            raise KneuronError(f"the fact {fact.relation}({subject}, {fact.object}) has no knowledge neurons to edit "
                               f"({len(sets[i])} found, {len(sets[i])} held by more than {share:.0%} of the relation)")
        original, model = fact.object, model or run.config.model
        prompts = prompts or list(fact.prompts)
        source = {"run": str(run_dir), "relation": fact.relation, "subject": subject, "share": share,
                  "fact_neurons": len(sets[i])}
    else:
        if neurons is None or original is None:
            raise KneuronError("give --run RUN_DIR --subject S, or --model M --neurons L:I,... --from ANSWER")
        if subject is not None or relation is not None:
            raise KneuronError("--subject and --relation need --run")
        chosen = parse_neurons(neurons)
        model = model or "world"
    kn = load_model(model, device, ctx)
    edit = plan_update(kn, chosen, original, to, lambda1=lambda1, lambda2=lambda2, scaling=scaling)
    edit.info.update({"model": model, **source})
    console.print(f"update {escape(original)} -> {escape(to)} in {len(edit)} value slots: "
                  + ", ".join(map(str, edit.neurons)), highlight=False)
    if prompts:
        console.print(_prediction_table(kn, prompts, [original, to], lambda fn: _with(edit, kn, fn)))
    edit.save(out)
    console.print(f"edit -> {out}")
    if save_model is not None:
        edit.apply(kn)
        _save_model(kn, edit, save_model, model)


def _with(edit, kn, fn, check_base: bool = True):
    """fn() evaluated with the edit applied; the model is restored afterwards, also on errors."""
    with edit.apply(kn, check_base=check_base):
        return fn()


@app.command()
def erase(
    ctx: typer.Context,
    run_dir: Path = typer.Option(..., "--run", help="A discovery run: the model and the relation's neurons come from it."),
    relation: str = typer.Option(..., "--relation", help="The relation to erase, e.g. P19."),
    out: Path = OUT,
    top_k: int = ranged(20, "--top-k", within=POSITIVE,
                        help="Most frequent neurons of the relation's facts (paper code: 20)."),
    replacement: str = typer.Option("zero", help="zero (paper code) | unk (the [UNK] embedding)."),
    model: str = MODEL,
    max_prompts: int = ranged(2000, "--max-prompts", within=POSITIVE,
                              help="Measure accuracy and PPL on at most this many prompts per group (seeded sample)."),
    seed: int = ranged(0, "--seed", within=SEED, help="Seed of the prompt sample (recorded in the edit file)."),
    save_model: Path = SAVE_MODEL,
    device: str = DEVICE,
) -> None:
    """Erase a relation (spec 5.5): overwrite the value slots of its facts' most frequent neurons."""
    import numpy as np

    from kneuron.edits import plan_erase, relation_neurons
    from kneuron.experiments.erasing import perplexity, score_prompts
    from kneuron.experiments.rundata import RunData

    _check_out(out)
    run = RunData.load(run_dir)
    if relation not in run.universe:
        raise KneuronError(f"relation {relation!r} is not in the run {run_dir} (it has {', '.join(run.relations)})")
    chosen = relation_neurons(run.relation_sets("kn")[relation], top_k)
    if not chosen:
        raise KneuronError(f"relation {relation} has no knowledge neurons in {run_dir}; nothing to erase")
    model = model or run.config.model
    kn = load_model(model, device, ctx)
    edit = plan_erase(kn, chosen, replacement)
    edit.info.update({"model": model, "run": str(run_dir), "relation": relation, "top_k": top_k, "seed": seed})
    console.print(f"erase {relation}: {len(edit)} value slots -> {replacement}: " + ", ".join(map(str, edit.neurons)),
                  highlight=False)
    groups = {}
    for name, fact_ids in ((relation, run.universe[relation]),
                           ("other relations", [i for r, idx in run.universe.items() if r != relation for i in idx])):
        pairs = [(p, run.facts.facts[i].object) for i in fact_ids for p in run.facts.facts[i].prompts]
        if len(pairs) > max_prompts:  # a seeded sample, the same before and after
            pick = np.random.default_rng(seed).choice(len(pairs), max_prompts, replace=False)
            pairs = [pairs[k] for k in sorted(pick)]
        groups[name] = pairs

    def measure():
        out = {}
        for name, pairs in groups.items():
            logp, correct = score_prompts(kn, [p for p, _ in pairs], [a for _, a in pairs])
            out[name] = (len(logp), 100.0 * correct.mean() if len(logp) else math.nan, perplexity(logp))
        return out

    before = measure()
    after = _with(edit, kn, measure)
    table = Table(title="before -> after")
    for col in ("prompts of", "n", "accuracy", "perplexity"):
        table.add_column(col, justify="left" if col == "prompts of" else "right")
    for name in groups:
        n, a0, p0 = before[name]
        _, a1, p1 = after[name]
        if n:
            table.add_row(name, str(n), f"{a0:.1f}% -> {a1:.1f}%", f"{p0:.2f} -> {p1:.2f} ({(p1 - p0) / p0:+.1%})")
    console.print(table)
    edit.save(out)
    console.print(f"edit -> {out}")
    if save_model is not None:
        edit.apply(kn)
        _save_model(kn, edit, save_model, model)


@app.command()
def show(path: Path = typer.Argument(..., help="An edit file (.kedit).")) -> None:
    """What an edit file holds: kind, neurons, the model shape it fits, settings."""
    from kneuron.edits import Edit

    edit = Edit.load(path)
    shape = edit.shape
    console.print(f"{edit.kind}: {len(edit)} value slots of a {shape.family} model with {shape.num_layers} layers x "
                  f"{shape.num_neurons} neurons, hidden size {shape.hidden_size}", highlight=False)
    console.print("neurons: " + ", ".join(map(str, edit.neurons)), highlight=False)
    console.print(f"revertible from a saved model: {'yes' if edit.base_values is not None else 'no (format 1)'}")
    info = {k: v for k, v in edit.info.items() if k != "lambdas"}
    for key, value in info.items():
        console.print(f"  {key}: {escape(json.dumps(value))}", highlight=False)


@app.command()
def apply(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="An edit file (.kedit)."),
    model: str = typer.Option(..., "--model", "-m", help="The model to edit: hub name, local directory, or 'world'."),
    save_model: Path = typer.Option(None, "--out", "-o", help="Write the edited model (and tokenizer) here."),
    revert: bool = typer.Option(False, "--revert", help="Undo the edit on a model that holds it (e.g. one saved by "
                                "--out), restoring the original slots bit for bit."),
    force: bool = typer.Option(False, "--force", help="Apply even if the slots differ from those the edit was made from."),
    prompts: list[str] = typer.Option(None, "--prompt", help="Prompts to check before and after (repeatable)."),
    answers: list[str] = typer.Option(None, "--answer", help="Answers whose probabilities to show (repeatable)."),
    device: str = DEVICE,
) -> None:
    """Apply (or revert) a saved edit to a model; show predictions and/or save the edited model."""
    from kneuron.edits import Edit

    edit = Edit.load(path)
    if revert:
        edit = edit.inverse()
    if save_model is None and not prompts:
        raise KneuronError("nothing to do: give --out DIR to save the edited model and/or --prompt to check it")
    kn = load_model(model, device, ctx)
    edit.check(kn, check_base=not force)
    console.print(f"{edit.kind}: {len(edit)} value slots", highlight=False)
    if prompts:
        shown = list(answers or [])
        if not shown and "original" in edit.info and "target" in edit.info:
            shown = [edit.info["original"], edit.info["target"]]
        console.print(_prediction_table(kn, prompts, shown, lambda fn: _with(edit, kn, fn, not force)))
    if save_model is not None:
        edit.apply(kn, check_base=not force)
        _save_model(kn, edit, save_model, model)
