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

from kneuron.cli.options import (
    DEVICE,
    LAMBDA1,
    LAMBDA2,
    MARGIN,
    MAX_SCALE,
    POSITIVE,
    POSITIVE_REAL,
    RATIO,
    REPLACEMENT,
    SCALING,
    SELECTIVITY,
    SHARE,
    STEPS,
    TOP_K,
    model_option,
    ranged,
    run_option,
    seed_option,
    split_list,
)
from kneuron.cli.probe import load_model, parse_neurons
from kneuron.data.facts import MASK
from kneuron.edits.subject import DEFAULT_CLAMP_NORM as SUBJECT_CLAMP_NORM
from kneuron.edits.subject import DEFAULT_CONTEXT_FIT as SUBJECT_CONTEXT_FIT
from kneuron.edits.subject import DEFAULT_COUNT as SUBJECT_COUNT
from kneuron.edits.subject import DEFAULT_STEPS as SUBJECT_STEPS
from kneuron.errors import KneuronError
from kneuron.selection.config import DEFAULT as SELECTION

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
PROVENANCE = "kneuron_edits.json"

MODEL = model_option(None)  # default: the run's model
OUT = typer.Option(..., "--out", "-o", help="Edit file to write (.kedit).")
SAVE_MODEL = typer.Option(None, "--save-model", help="Also write the edited model (and tokenizer) to this directory.")
TO = typer.Option(..., "--to", help="The new answer.")
GENERATE = ranged(None, "--generate", within=POSITIVE, help="Also print this many tokens of the first --prompt's "
                  "greedy continuation before and after the edit, with their n-gram entropy (causal LMs): what the "
                  "model says, beside the teacher-forced probabilities.")
CHECKS = typer.Option(None, "--check", help="'PROMPT=ANSWER' to check before and after, e.g. another subject of the "
                      "relation (repeatable).")
SUBJECT = typer.Option(None, "--subject", help="The fact's subject: `edit subject` (required): as written in the "
                       "prompts; `edit update`: with --run, the run's fact to update; without --run, the subject as "
                       "written in the prompts, making it the subject-neuron edit (`edit subject` at its defaults).")
PROMPTS = typer.Option(None, "--prompt", help="A prompt of the fact (repeatable); the edit is fitted to these.  "
                       "`edit update` finds the fact's neurons on them (with --run or --neurons: the prompts to "
                       "check; default with --run: the fact's); `edit subject` (required): each holds the subject.")
FROM = typer.Option(None, "--from", help="The answer to replace (`edit update --run`: taken from the run; `edit "
                    "subject`: default the model's answer to the first prompt).")


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


def _context_fit_option(flag: str, prefix: str = ""):
    """MU > 0 (the change fitted to every context's key with penalty MU) or `none` (inserted exactly
    at their mean key); parsed to a float or None."""

    def parse(ctx: typer.Context, param: typer.CallbackParam, value):
        if ctx.resilient_parsing or value is None:
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            mu = float(value)
        except ValueError:
            mu = math.nan
        if not (mu > 0 and math.isfinite(mu)):
            raise KneuronError(f"{flag} must be a number > 0 or 'none', got {value!r}")
        return mu

    default = "none" if SUBJECT_CONTEXT_FIT is None else f"{SUBJECT_CONTEXT_FIT:g}"
    return typer.Option(default, flag, metavar="MU|none", callback=parse,
                        help=f"{prefix}{'f' if prefix else 'F'}it the change to every context's key (each prompt after each prefix) with "
                        "penalty MU (smaller: closer fit, less local); 'none': insert it exactly at their mean key, "
                        "as ROME does.")


def _clamp_norm_option(flag: str, prefix: str = ""):
    return ranged(SUBJECT_CLAMP_NORM, flag, within=POSITIVE_REAL,
                  help=f"{prefix}{'b' if prefix else 'B'}ound on the change of ROME's value v*, times the hidden "
                  "state's norm (ROME's clamp_norm_factor). Smaller: a weaker edit, generations closer to the model's.")


# `edit update`'s options that belong to the edit at the blank's knowledge neurons, not to the subject edit.
ANSWER_EDIT_OPTIONS = ("relation", "share", "neurons", "fit", "ratio", "margin", "contrast", "selectivity", "max_scale",
                       "lambda1", "lambda2", "scaling", "direction", "embedding", "paper", "steps")


def _refuse_given(ctx: typer.Context, names, why: str) -> None:
    """One line naming the options given on the command line that `why` leaves without effect."""
    # typer vendors its own click, so the source is matched by name (DEFAULT: not given).
    given = [p for p in ctx.command.params if p.name in names
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") != "DEFAULT"]
    if given:
        flags = ", ".join(max(p.opts, key=len) for p in given)
        raise KneuronError(f"{why}: {flags} {'has' if len(given) == 1 else 'have'} no effect there "
                           "(use `edit subject` for its own options)")


def _parse_checks(checks: list[str] | None) -> list[tuple[str, str]]:
    out = []
    for item in checks or []:
        prompt, sep, answer = item.rpartition("=")
        if not sep or not prompt.strip() or not answer.strip():
            raise KneuronError(f"--check {item!r}: write PROMPT=ANSWER")
        out.append((prompt, answer.strip()))
    return out


def _check_table(kn, checks: list[tuple[str, str]], original: str, target: str, run) -> Table:
    """--check prompts: top-1 and P(expected answer), P(old), P(new), before -> after."""
    def measure():
        rows = []
        for prompt, answer in checks:
            rows.append((kn.predict(prompt, k=1)[0][0], [kn.probability(prompt, a) for a in (answer, original, target)]))
        return rows

    before, after = measure(), run(measure)
    table = Table(title="checks: before -> after")
    for col in ("prompt", "expected", "top-1", "P(expected)", f"P({escape(original)})", f"P({escape(target)})"):
        table.add_column(col, justify="left" if col in ("prompt", "expected") else "right")
    for (prompt, answer), (t0, p0), (t1, p1) in zip(checks, before, after):
        table.add_row(escape(prompt), escape(answer), f"{escape(repr(t0))} -> {escape(repr(t1))}",
                      *(f"{x:.3f} -> {y:.3f}" for x, y in zip(p0, p1)))
    return table


@app.command()
def update(
    ctx: typer.Context,
    to: str = TO,
    out: Path = OUT,
    original: str = FROM,
    prompts: list[str] = PROMPTS,
    checks: list[str] = CHECKS,
    run_dir: Path = run_option(None),
    subject: str = SUBJECT,
    relation: str = typer.Option(None, "--relation", help="(with --run) the relation of the fact to update, if "
                                 "--subject is the subject of facts of several relations."),
    share: float = SHARE,
    model: str = MODEL,
    neurons: str = typer.Option(None, "--neurons", help="Neurons to edit, e.g. 3:120,3:7 (default: found from --prompt)."),
    fit: bool = typer.Option(True, "--fit/--no-fit", help="Scale the edit to the smallest strength that makes the new "
                             "answer top-1 on the prompts, times --margin (kneuron's default); --no-fit uses "
                             "--lambda1/--lambda2 as given."),
    ratio: float = RATIO,
    margin: float = MARGIN,
    contrast: list[str] = typer.Option(None, "--contrast", help="A prompt of ANOTHER subject of the relation "
                                       "(repeatable): neurons firing for it at more than --selectivity of the "
                                       "fact's strength are not edited."),
    selectivity: float = SELECTIVITY,
    max_scale: float = MAX_SCALE,
    lambda1: float = LAMBDA1,
    lambda2: float = LAMBDA2,
    scaling: str = SCALING,
    direction: str = typer.Option("auto", help="auto (signed on gated MLPs, paper elsewhere) | signed (each slot's "
                                  "change times the sign of its neuron's mean activation) | paper (the literal rule)."),
    embedding: str = typer.Option("output", help="output (the unembedding rows the head reads) | input (the paper's E)."),
    paper: bool = typer.Option(False, "--paper", help="The paper's rule exactly: --no-fit --direction paper "
                               "--embedding input, λ1 = 1, λ2 = 8 norm-scaled unless given."),
    steps: int = STEPS,
    generate: int = GENERATE,
    save_model: Path = SAVE_MODEL,
    device: str = DEVICE,
) -> None:
    """Rewrite one fact: v <- v - s·λ1·E(old) + s·λ2·E(new) in its knowledge neurons' value slots.

    Three forms: --model M --from OLD --prompt P [--prompt P ...] finds the fact's neurons on the
    prompts, then edits; --neurons L:I,... names them; --run RUN --subject S takes them from a
    discovery run.  s is the sign of each neuron's mean activation over the prompts.  A fourth,
    --subject S without --run, is `edit subject` at its defaults: the subject-neuron edit, far
    more specific on the benchmark (docs/results/editing.md).
    """
    import time

    from kneuron.edits import fit_update, plan_update, select_update_neurons
    from kneuron.edits.update import DIRECTIONS, EMBEDDINGS, SCALINGS

    if subject is not None and run_dir is None:
        _refuse_given(ctx, ANSWER_EDIT_OPTIONS, "--subject without --run is the subject-neuron edit")
        return _subject_edit(ctx, model or "world", device, subject, to, prompts, original, checks, out, save_model,
                             count=SUBJECT_COUNT, value_steps=SUBJECT_STEPS, context_fit=SUBJECT_CONTEXT_FIT,
                             clamp_norm=SUBJECT_CLAMP_NORM, layer=None, seed=0, generate=generate)
    _check_out(out)
    for name, value, allowed in (("--direction", direction, DIRECTIONS), ("--embedding", embedding, EMBEDDINGS),
                                 ("--scaling", scaling, SCALINGS)):
        if value not in allowed:
            raise KneuronError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    if paper:
        fit, direction, embedding = False, "paper", "input"
    if original is not None and original.strip() == to.strip():
        raise KneuronError(f"--from and --to are the same answer ({to!r}); nothing to update")
    checks_ = _parse_checks(checks)
    prompts = list(prompts or [])
    source: dict = {}
    chosen = None
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
        fact_prompts = list(fact.prompts)
        prompts = prompts or fact_prompts
        source = {"run": str(run_dir), "relation": fact.relation, "subject": subject, "share": share,
                  "fact_neurons": len(sets[i])}
    else:
        if relation is not None:
            raise KneuronError("--relation needs --run (it picks --subject's fact from the run)")
        if original is None:
            raise KneuronError("give --model M --from OLD --prompt P (neurons found on the prompts), "
                               "--neurons L:I,... --from OLD, or --run RUN_DIR --subject S")
        if neurons is not None:
            chosen = parse_neurons(neurons)
        elif not prompts:
            raise KneuronError("--from without --neurons needs --prompt (the fact's prompts, to find its neurons)")
        fact_prompts = prompts
        model = model or "world"
    if (fit or direction != "paper") and not fact_prompts:
        raise KneuronError("--fit and --direction auto/signed read the fact's prompts: give --prompt (or --paper)")
    kn = load_model(model, device, ctx)
    _check_generate(kn, generate, fact_prompts)
    for p in fact_prompts + [c for c, _ in checks_]:
        kn.encode(p)  # a prompt without a blank fails here, before any work
    kn.answer_id(original), kn.answer_id(to)
    started = time.perf_counter()
    if chosen is None:
        found = kn.find_neurons(fact_prompts, original, min_prompts=min(SELECTION.min_prompts, len(fact_prompts)),
                                steps=steps)
        if not found:
            raise KneuronError(f"no knowledge neurons found for {original!r} on the {len(fact_prompts)} prompts "
                               "(try more paraphrases of the fact); nothing written")
        chosen = found
        source["found_on"] = len(fact_prompts)
        console.print(f"found {len(chosen)} knowledge neurons in {time.perf_counter() - started:.1f} s", highlight=False)
    if contrast:
        from kneuron.edits import selective_neurons

        for p in contrast:
            kn.encode(p)
        kept = selective_neurons(kn, chosen, fact_prompts, list(contrast), selectivity)
        console.print(f"{len(kept)} of {len(chosen)} neurons fire for the {len(contrast)} contrast prompts at most "
                      f"{selectivity:g} times as much as for this fact; only those are edited", highlight=False)
        chosen = kept
        source.update({"contrast": list(contrast), "selectivity": selectivity})
    if fit:
        edit = fit_update(kn, chosen, original, to, fact_prompts, direction=direction, embedding=embedding,
                          ratio=ratio, margin=margin, max_scale=max_scale)
        if not edit.info["reached"]:
            raise KneuronError(f"the {len(chosen)} neurons cannot make {to!r} the top answer on every prompt within "
                               f"strength {max_scale:g} (--max-scale); a stronger edit wrecks the model, so nothing "
                               "was written")
    else:
        edit = plan_update(kn, chosen, original, to, prompts=fact_prompts if direction != "paper" else None,
                           direction=direction, embedding=embedding, lambda1=lambda1, lambda2=lambda2,
                           scaling=scaling)
    edit.info.update({"model": model, **source})
    how = f"fitted strength {edit.info['scale']:.3g}" if fit else f"λ1 {lambda1:g}, λ2 {lambda2:g} ({scaling})"
    console.print(f"update {escape(original)} -> {escape(to)} in {len(edit)} value slots ({edit.info['direction']}, {embedding} "
                  f"embeddings, {how}): " + ", ".join(map(str, edit.neurons)), highlight=False)
    if prompts:
        console.print(_prediction_table(kn, prompts, [original, to], lambda fn: _with(edit, kn, fn)))
    if fit and margin < 1:
        new_id = kn.answer_id(to)
        top = _with(edit, kn, lambda: kn.blank_logits(fact_prompts).argmax(-1))
        won = int((top == new_id).sum())
        if won < len(fact_prompts):
            console.print(f"{to!r} is the top answer on {won} of the {len(fact_prompts)} prompts: margin {margin:g} is "
                          "the benchmark's most specific edit; --margin 1 makes it the top answer on every prompt",
                          highlight=False)
    _finish(kn, edit, checks_, original, to, out, started, save_model, model, generate, fact_prompts)


@app.command("subject")
def subject_update(
    ctx: typer.Context,
    subject: str = SUBJECT,
    to: str = TO,
    prompts: list[str] = PROMPTS,
    out: Path = OUT,
    model: str = model_option(...),
    original: str = FROM,
    count: int = ranged(SUBJECT_COUNT, "--count", within=POSITIVE, help="How many of the subject's neurons are "
                        "edited (the layer's width: ROME itself)."),
    value_steps: int = ranged(SUBJECT_STEPS, "--value-steps", within=POSITIVE, help="Optimisation passes for "
                              "ROME's value v* (it stops early once P(new) reaches 0.99)."),
    context_fit: str = _context_fit_option("--context-fit"),
    clamp_norm: float = _clamp_norm_option("--clamp-norm"),
    layer: int = typer.Option(None, "--layer", help="The layer edited (default: ROME's heuristic, round(0.35 x "
                              "layers))."),
    checks: list[str] = CHECKS,
    seed: int = seed_option(0),
    generate: int = GENERATE,
    save_model: Path = SAVE_MODEL,
    device: str = DEVICE,
) -> None:
    """Rewrite one fact through the value slots of the subject's own neurons (kneuron's subject-neuron edit).

    ROME's key (the neurons' coefficients at the subject's last token) and value are computed on the
    prompts; the --count neurons carrying most of the key take the change.  Knowledge neurons found at
    the blank carry the answer, so `edit update` rewrites every subject with that answer; this edit
    acts where the subject is read.
    """
    _subject_edit(ctx, model, device, subject, to, prompts, original, checks, out, save_model, count=count,
                  value_steps=value_steps, context_fit=context_fit, clamp_norm=clamp_norm, layer=layer, seed=seed,
                  generate=generate)


def _subject_edit(ctx, model: str, device: str, subject: str, to: str, prompts, original, checks, out: Path,
                  save_model, *, count: int, value_steps: int, context_fit, clamp_norm: float, layer, seed: int,
                  generate: int | None = None) -> None:
    """The subject-neuron edit from the command line: `edit subject`, and `edit update --subject` without --run."""
    import time

    from kneuron.edits.subject import plan_subject_update

    _check_out(out)
    if not subject or not prompts:
        raise KneuronError("the subject edit needs --subject S and at least one --prompt holding it")
    checks_ = _parse_checks(checks)
    kn = load_model(model, device, ctx)
    _check_generate(kn, generate, prompts)
    for p in list(prompts) + [c for c, _ in checks_]:
        kn.encode(p)  # a prompt without a blank fails here, before any work
        if p in prompts and subject not in p:
            raise KneuronError(f"--prompt {p!r} does not contain the subject {subject!r}")
    kn.answer_id(to)
    if original is None:
        original = kn.predict(prompts[0], k=1)[0][0].strip()
    kn.answer_id(original)
    if original.strip() == to.strip():
        raise KneuronError(f"--from and --to are the same answer ({to!r}); nothing to update")
    started = time.perf_counter()
    edit = plan_subject_update(kn, subject, list(prompts), to, count=count, steps=value_steps,
                               context_fit=context_fit, clamp_norm=clamp_norm, layer=layer, seed=seed)
    edit.info.update({"model": model, "original": original, "target": to})
    console.print(f"update {escape(subject)}: {escape(original)} -> {escape(to)} in {len(edit)} value slots of layer "
                  f"{edit.info['layer']} (the subject's neurons carry {edit.info['key_share']:.0%} of its key; "
                  f"{time.perf_counter() - started:.1f} s): " + ", ".join(map(str, edit.neurons[:12]))
                  + (" ..." if len(edit) > 12 else ""), highlight=False)
    console.print(_prediction_table(kn, prompts, [original, to], lambda fn: _with(edit, kn, fn)))
    _finish(kn, edit, checks_, original, to, out, started, save_model, model, generate, prompts)


def _check_generate(kn, generate: int | None, prompts) -> None:
    if generate is not None and kn.is_masked:
        raise KneuronError(f"--generate needs a causal LM; {kn.name or 'the model'} is a masked LM")
    if generate is not None and not prompts:
        raise KneuronError("--generate continues the first --prompt: give one")


def _generations(kn, edit, prompt: str, tokens: int) -> list[tuple[str, str, float]]:
    """(when, text, n-gram entropy) of the prompt's greedy continuation before and after the edit."""
    from kneuron.experiments.edit_bench import ngram_entropy

    rows = []
    for when, ids in (("before", kn.generate(prompt, tokens)),
                      ("after", _with(edit, kn, lambda: kn.generate(prompt, tokens)))):
        rows.append((when, prompt.replace(MASK, "").rstrip() + kn.tokenizer.decode(ids), ngram_entropy(ids)))
    return rows


def _generation_table(kn, edit, prompt: str, tokens: int) -> Table:
    show = Table(title=f"greedy continuation, {tokens} tokens: before -> after (entropy: the bench's n-gram entropy)")
    for col in ("", "text", "entropy"):
        show.add_column(col, justify="right" if col == "entropy" else "left")
    for when, text, entropy in _generations(kn, edit, prompt, tokens):
        show.add_row(when, escape(repr(text)), f"{entropy:.2f}")
    return show


def _finish(kn, edit, checks, original: str, to: str, out: Path, started: float, save_model, model: str,
            generate: int | None = None, prompts=()) -> None:
    """The --check table, the --generate table, the edit file, and with --save-model the edited model."""
    import time

    if checks:
        console.print(_check_table(kn, checks, original, to, lambda fn: _with(edit, kn, fn)))
    if generate is not None:
        console.print(_generation_table(kn, edit, prompts[0], generate))
    edit.save(out)
    console.print(f"edit -> {out} ({time.perf_counter() - started:.1f} s)")
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
    run_dir: Path = run_option(...),
    relation: str = typer.Option(..., "--relation", help="The relation to erase, e.g. P19."),
    out: Path = OUT,
    top_k: int = TOP_K,
    replacement: str = REPLACEMENT,
    model: str = MODEL,
    max_prompts: int = ranged(2000, "--max-prompts", within=POSITIVE,
                              help="Measure accuracy and PPL on at most this many prompts per group (seeded sample)."),
    seed: int = seed_option(0),
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
    signs = None
    if replacement == "unk":  # orient E[UNK] by each neuron's sign over the relation's prompts (a zero needs none)
        from kneuron.edits import neuron_signs

        own = [p for i in run.universe[relation] for p in run.facts.facts[i].prompts][:32]
        signs = neuron_signs(kn, chosen, own)
    edit = plan_erase(kn, chosen, replacement, signs=signs)
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
    model: str = model_option(...),
    save_model: Path = typer.Option(None, "--out", "-o", help="Directory to write the edited model (and tokenizer) "
                                    "to (what edit update and erase call --save-model)."),
    revert: bool = typer.Option(False, "--revert", help="Undo the edit on a model that holds it (e.g. one saved by "
                                "--out), restoring the original slots bit for bit."),
    force: bool = typer.Option(False, "--force", help="Apply even if the model's slots differ from those the edit "
                               "was made from."),
    prompts: list[str] = typer.Option(None, "--prompt", help="A prompt to check before and after (repeatable); "
                                      "nothing is fitted to it."),
    answers: list[str] = typer.Option(None, "--answer", help="An answer whose probability to show on the --prompt "
                                      "prompts (repeatable; default: the edit's old and new answers)."),
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


@app.command()
def bench(
    ctx: typer.Context,
    cases_path: Path = typer.Option(..., "--cases", help="Cases from `kneuron data counterfact` (JSONL)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Output directory (journaled: a rerun resumes)."),
    model: str = model_option(...),
    methods: str = typer.Option("kn,kn_paper,kn_specific,random,rome", "--methods",
                                help="Comma-separated editors: kn (kneuron's fitted, signed edit), kn_paper (the "
                                "paper's literal rule), kn_specific (kn on effect-specific neurons), random (kn's "
                                "count and strength on random neurons), rome (rank-one model editing), kn_subject "
                                "(ROME's insertion in the value slots of the subject's --subject-count neurons), "
                                "subject_random (kn_subject's k*, v* through as many random neurons of the layer)."),
    split: str = typer.Option("all", "--split", help="tune | test | all: which cases to run."),
    exclude_tuned: Path = typer.Option(None, "--exclude-tuned", help="Leave out the cases whose relation and subject "
                                       "are tune cases of this cases file (the facts that chose the defaults), so a "
                                       "larger case file reports on facts that chose nothing."),
    limit: int = ranged(None, "--limit", within=POSITIVE, help="At most this many cases (in file order)."),
    sample: int = ranged(None, "--sample", within=POSITIVE, help="A seeded sample of this many cases, spread over "
                         "the relations in turn (after --split)."),
    ratio: float = RATIO,
    margin: float = MARGIN,
    max_scale: float = MAX_SCALE,
    selectivity: float = SELECTIVITY,
    rome_layer: int = typer.Option(None, "--rome-layer", help="rome and kn_subject: the layer edited (default: "
                                   "ROME's heuristic)."),
    subject_count: int = ranged(SUBJECT_COUNT, "--subject-count", within=POSITIVE,
                                help="kn_subject: how many of the subject's neurons it edits."),
    subject_steps: int = ranged(SUBJECT_STEPS, "--subject-steps", within=POSITIVE,
                                help="kn_subject: optimisation passes for ROME's value v*."),
    subject_context_fit: str = _context_fit_option("--subject-context-fit", "kn_subject and subject_random: "),
    subject_clamp_norm: float = _clamp_norm_option("--subject-clamp-norm", "kn_subject and subject_random: "),
    seed: int = seed_option(0),
    steps: int = STEPS,
    generation_tokens: int = ranged(50, "--generation-tokens", within=POSITIVE,
                                    help="Length of the greedy generations (fluency)."),
    shard: str = typer.Option(None, "--shard", help="K/N: measure only cases K, K+N, ... (N processes or machines "
                              "share one --out; the last to finish writes the tables)."),
    device: str = DEVICE,
) -> None:
    """CounterFact-style scores of each editor on MODEL, the model the cases were made for: ES, PS, NS, S,
    magnitudes, fluency, bootstrap intervals."""
    import platform
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kneuron.data.counterfact import load_cases
    from kneuron.experiments.edit_bench import (
        BenchConfig,
        check_methods,
        parse_shard,
        run_bench,
        select_cases,
        summarize,
        write_outputs,
    )

    chosen = check_methods(split_list(methods) or [])
    shard_kn = parse_shard(shard)
    every = load_cases(cases_path)
    tuned = load_cases(exclude_tuned) if exclude_tuned is not None else []
    cases = select_cases(every, split=split, tuned=tuned, seed=seed)
    if exclude_tuned is not None:
        before = len(select_cases(every, split=split))
        console.print(f"--exclude-tuned: left out {before - len(cases)} of {before} cases, facts tuned on in "
                      f"{escape(exclude_tuned.name)}", highlight=False)
    cases = select_cases(cases, sample=sample, seed=seed, limit=limit)
    if not cases:
        raise KneuronError(f"{cases_path}: no cases{'' if split == 'all' else ' in the ' + split + ' split'}")
    config = BenchConfig(model=model, cases=cases_path.name, methods=chosen, split=split, limit=limit, sample=sample,
                         seed=seed, exclude_tuned=exclude_tuned.name if exclude_tuned is not None else None,
                         steps=steps, ratio=ratio, margin=margin, max_scale=max_scale, selectivity=selectivity,
                         rome_layer=rome_layer, subject_count=subject_count, subject_steps=subject_steps,
                         subject_context_fit=subject_context_fit, subject_clamp_norm=subject_clamp_norm,
                         generation_tokens=generation_tokens)
    kn = load_model(model, device, ctx)
    started = time.perf_counter()
    with Progress(TextColumn("edit bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("cases", total=len(cases))
        frame = run_bench(kn, cases, config, out_dir,
                          progress=lambda done, total: bar.update(task, completed=done, total=total),
                          log=lambda m: console.print(m, highlight=False), shard=shard_kn)
    if frame is None:
        console.print(f"shard {shard}: its cases are measured; other shards' cases are not yet. The last shard to "
                      "finish writes the tables (or run the command again without --shard).", highlight=False)
        return
    table = summarize(frame, reps=config.bootstrap, seed=seed)
    from kneuron.machine import cpu_name

    cpu = cpu_name()
    header = (f"# Edit benchmark: {escape(model)}, {len(cases)} cases from {cases_path.name} (split {split})\n\n"
              f"Command: `kneuron edit bench --model {model} --cases {cases_path.name} --methods {','.join(chosen)} "
              f"--split {split}" + (f" --exclude-tuned {exclude_tuned.name}" if exclude_tuned else "")
              + (f" --limit {limit}" if limit else "") + (f" --sample {sample}" if sample else "")
              + (f" --subject-count {subject_count} --subject-steps {subject_steps}"
                 + (f" --subject-context-fit {subject_context_fit:g}" if subject_context_fit is not None else "")
                 + (f" --subject-clamp-norm {subject_clamp_norm:g}" if subject_clamp_norm != SUBJECT_CLAMP_NORM else "")
                 if {"kn_subject", "subject_random"} & set(chosen) else "")
              + f" --ratio {ratio:g} --margin {margin:g} "
              f"--seed {seed}`  \nCPU: {cpu}; torch threads {__import__('torch').get_num_threads()}; "
              f"{platform.python_version()}; {time.perf_counter() - started:.0f} s this run.")
    paths = write_outputs(out_dir, frame, table, header)
    show = Table(title=f"edit bench ({len(cases)} cases); every column and interval in report.md")
    cols = {"split": "split", "method": "method", "edited": "edited", "S": "S", "ES": "ES", "PS": "PS", "NS": "NS",
            "success": "top1", "others_kept": "kept", "ppl_rel": "ppl x"}
    if table["split"].nunique() == 1:
        del cols["split"]
    for col, head in cols.items():
        show.add_column(head, justify="left" if col in ("split", "method") else "right", no_wrap=True,
                        min_width=len(head) if col in ("split", "method") else 4)
    for _, r in table.iterrows():
        show.add_row(*(str(r[c]) if c in ("split", "method") else
                       ("-" if c not in r or r[c] != r[c] else f"{r[c]:.2f}" if abs(r[c]) < 1e4 else f"{r[c]:.1e}")
                       for c in cols))
    console.print(show)
    console.print("-> " + ", ".join(str(p) for p in paths), highlight=False)
