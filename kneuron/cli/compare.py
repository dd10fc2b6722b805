"""`kneuron compare`: which localization method holds up under causal tests (`kneuron.compare`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperCommand

from kneuron.cli import app
from kneuron.cli.options import (
    DEVICE,
    LIMIT_FACTS,
    NON_NEGATIVE,
    PROGRESS,
    RELATIONS,
    SPECIFIC_FRACTION,
    data_option,
    model_option,
    other_prompts_option,
    seed_option,
    split_list,
)
from kneuron.errors import KneuronError

console = Console()


def methods_help() -> str:
    """--methods' help: the registered localization methods, read when the help is shown."""
    from kneuron.compare.engine import REFINED_ROWS
    from kneuron.localization import method_names

    derived = " and ".join(REFINED_ROWS)
    return (f"Comma-separated localization methods (default: all): {', '.join(method_names())}. {derived} are "
            "also accepted: they are rows derived from ig (naming either scores ig, which gives all of ig's rows).")


class _CompareCommand(TyperCommand):
    """`kneuron compare`, whose --methods help lists the methods registered when the help is shown (a
    method registered after this module was imported included)."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.params:
            if param.name == "methods":
                param.help = methods_help()
        super().format_help(ctx, formatter)


@app.command("compare", cls=_CompareCommand)
def compare_cmd(
    ctx: typer.Context,
    model: str = model_option("world"),
    data: str = data_option(None, default_is="world, or the --run's facts"),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (an existing one is resumed)."),
    relations: str = RELATIONS,
    limit_facts: int = LIMIT_FACTS,
    prompts_per_fact: int = typer.Option(None, "--prompts-per-fact",
                                         help="A seeded sample of N selection prompts per fact (the held-out ones are "
                                              "drawn first)."),
    methods: str = typer.Option(None, "--methods", help="Comma-separated localization methods (default: all).",
                                show_default=False),  # the help is filled in from the registry (_CompareCommand)
    budgets: str = typer.Option("1,2,4,8,16,32", "--budgets", help="Comma-separated neurons per fact (integers >= 1)."),
    other_prompts: int = other_prompts_option(within=NON_NEGATIVE),
    specific_rule: str = typer.Option("effect", "--specific-rule",
                                      help="How row ig_specific drops generic neurons: effect | other_relations "
                                           "(a named deviation; see kneuron.selection.specific)."),
    specific_fraction: float = SPECIFIC_FRACTION,
    heldout: int = typer.Option(2, "--heldout",
                                help="Held-out prompts per fact: drawn (seeded) from each fact with at least K + 3 "
                                     "usable prompts, they choose nothing and give the suppress_heldout / "
                                     "amplify_heldout columns; 0 = none (every effect in-sample)."),
    tune_share: float = typer.Option(0.0, "--tune-share",
                                     help="Share of each relation's facts (seeded) on which rule effect's fraction is "
                                          "chosen among --specific-fractions (tuning.csv); every row of methods.csv is "
                                          "then measured on the other facts (split = test). 0 = no tuning."),
    specific_fractions: str = typer.Option("0.1,0.2,0.5", "--specific-fractions",
                                           help="With --tune-share: the fractions of rule effect to sweep on the tune "
                                                "facts (--specific-fraction is then not used)."),
    seed: int = seed_option(0),
    run: Path = typer.Option(None, "--run", help="A discovery run of the same --model whose IG scores to reuse; its "
                             "facts (data, relations, fact limit) are taken too, its model is not."),
    device: str = DEVICE,
    progress: bool = PROGRESS,
) -> None:
    """Score every neuron by each method, keep each fact's top-k, and test them causally: own-prompt
    suppress/amplify (in-sample, and on --heldout prompts per fact that chose nothing), other relations'
    collateral damage (on facts and answers that chose nothing), split-half consistency; writes
    methods.csv, neurons.csv, selection.json, config.json, deletion_curve.png and report.html to OUT
    (resumable).  With --tune-share, rule effect's fraction is chosen on tune facts (tuning.csv) and
    every row is reported on the remaining test facts."""
    import kneuron
    from kneuron.cli.experiment import set_threads
    from kneuron.compare import CompareConfig, check_budgets, check_methods, compare
    from kneuron.data import load_facts
    from kneuron.localization import method_names
    from kneuron.selection import check_specific_rule

    config = CompareConfig(model=model, data=data or "world", relations=split_list(relations), limit_facts=limit_facts,
                           methods=check_methods(method_names() if methods is None else split_list(methods) or []),
                           budgets=check_budgets(split_list(budgets) or []),
                           seed=seed, other_prompts=other_prompts, prompts_per_fact=prompts_per_fact,
                           specific_rule=check_specific_rule(specific_rule, specific_fraction),
                           specific_fraction=specific_fraction, heldout=heldout, tune_share=tune_share,
                           specific_fractions=_fractions(specific_fractions))
    rundata = None
    if run is not None:
        rundata = _load_run(run, config, data, relations, limit_facts)
    kn = kneuron.load(model, device=device)
    set_threads(kn, ctx)
    facts = None if rundata is not None else load_facts(config.data)
    say = (lambda text: console.print(f"[dim]{escape(text)}[/]")) if progress else None
    result = compare(kn, facts, out, config, progress=say, run=rundata)
    if result.heldout_note:
        console.print(f"[yellow]warning:[/] {escape(result.heldout_note)}")
    print_methods(result.methods)
    if result.tuning is not None:
        console.print(f"rule effect: fraction {result.specific_fraction:g} chosen on the tune facts "
                      f"(-> {out / 'tuning.csv'}); every row above is measured on the test facts")
    console.print(f"-> {out / 'methods.csv'}, {out / 'neurons.csv'}, {out / 'deletion_curve.png'}, "
                  f"{out / 'report.html'}" + (f" (resumed {result.resumed_facts} scored facts)"
                                              if result.resumed_facts else ""))


def _fractions(text: str) -> list[float]:
    out = []
    for t in split_list(text) or []:
        try:
            out.append(float(t))
        except ValueError:
            raise KneuronError(f"--specific-fractions must be numbers, got {t!r}") from None
    return out


def _load_run(run: Path, config, data, relations, limit_facts):
    """The discovery run to reuse; one line when it is of another model or other facts."""
    from kneuron.experiments.rundata import RunData
    from kneuron.runs import RunDir

    run_config = RunDir(run).config()
    if not _same_model(run_config.model, config.model):
        raise KneuronError(f"--run {run} was made with the model {run_config.model!r}, not {config.model!r}")
    for flag, given, theirs in (("--data", data, run_config.data), ("--relations", split_list(relations),
                                                                       run_config.relations),
                                ("--limit-facts", limit_facts, run_config.limit_facts)):
        if given is not None and given != theirs:
            raise KneuronError(f"{flag} {given!r} differs from the run's {theirs!r}; leave it out with --run")
    config.data, config.relations, config.limit_facts = run_config.data, run_config.relations, run_config.limit_facts
    config.run = str(run)
    return RunData.load(run)


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def print_methods(methods) -> None:
    table = Table(title="localization methods under causal tests (% change of P(answer))")
    cols = ["method", "budget", "suppress", "amplify", "suppress_heldout", "amplify_heldout",
            "other_relations_suppress", "consistency", "seconds_per_prompt", "neurons_per_fact"]
    heads = ["method", "k", "suppress", "amplify", "supp. held-out", "ampl. held-out", "other rel.", "consist.",
             "s/prompt", "n/fact"]
    if "split" in methods and (methods["split"] != "all").any():
        table.caption = "rows measured on the test facts (split = test)"
    for c, head in zip(cols, heads):
        table.add_column(head, justify="left" if c == "method" else "right", no_wrap=c == "method")
    for row in methods.itertuples(index=False):
        d = row._asdict()
        table.add_row(*[str(d[c]) if c in ("method", "budget") else f"{d[c]:.3g}" for c in cols])
    console.print(table)
