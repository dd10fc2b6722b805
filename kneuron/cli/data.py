"""`kneuron data ...`: look at a fact set before spending GPU time on it, and fetch the datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from kneuron.cli.options import (
    DEVICE,
    PER_RELATION,
    POSITIVE,
    RELATIONS,
    data_option,
    model_option,
    ranged,
    seed_option,
    split_list,
)
from kneuron.data import SPECS_HELP, FactSet, load_facts, single_token_coverage
from kneuron.data.download import DATASETS, DEFAULT_BASE_URL, RemoteFile, download
from kneuron.errors import DataError, ModelError
from kneuron.ranges import Range

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _load_tokenizer(model: str):
    """Only the tokenizer: coverage needs no weights, and this keeps `stats --model` fast."""
    from kneuron.models.sources import resolve_model

    model = resolve_model(model)  # the built-in fact world, a catalogue name, a .gguf: as everywhere else
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelError(f"cannot load the tokenizer of {model!r}: {first[:300]}") from None


def _per_fact(prompts: int, facts: int, uniform: bool) -> str:
    if uniform:
        return f"{prompts // facts:,}"
    return f"{prompts / facts:.2f}" if facts else "-"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def stats_table(facts: FactSet, coverage: dict | None = None) -> Table:
    # Compact borders and two-line headers keep eight columns readable in an 80-column terminal.
    table = Table(title=f"Facts in {facts.source or 'the data'}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("relation", no_wrap=True)
    table.add_column("label", overflow="fold", min_width=10)
    table.add_column("type", no_wrap=True)
    for header in ("prompts\n/fact", "facts", "prompts"):
        table.add_column(header, justify="right", no_wrap=True)
    if coverage is not None:
        for header in ("1-token\nfacts", "1-token\n%"):
            table.add_column(header, justify="right", no_wrap=True)
    groups = facts.by_relation()
    for rel, group in groups.items():
        meta = facts.relations.get(rel)
        n_prompts = sum(len(f.prompts) for f in group)
        uniform = len({len(f.prompts) for f in group}) == 1
        row = [
            rel,
            meta.label if meta else "",
            meta.type if meta else "",
            _per_fact(n_prompts, len(group), uniform),
            f"{len(group):,}",
            f"{n_prompts:,}",
        ]
        if coverage is not None:
            c = coverage["relations"][rel]
            row += [f"{c['single_token_facts']:,}", _pct(c["single_token_facts"], c["facts"])]
        table.add_row(*row)
    total = [
        "total",
        _plural(len(groups), "relation"),
        "",
        _per_fact(facts.num_prompts, len(facts), False),
        f"{len(facts):,}",
        f"{facts.num_prompts:,}",
    ]
    if coverage is not None:
        t = coverage["total"]
        total += [f"{t['single_token_facts']:,}", _pct(t["single_token_facts"], t["facts"])]
    table.add_section()
    table.add_row(*total, style="bold")
    return table


@app.command()
def stats(
    spec: str = typer.Argument(..., help=f"Facts to describe: {SPECS_HELP}."),
    model: str | None = model_option(None, of_run=False),
    relations: str | None = RELATIONS,
) -> None:
    """Relations, facts and prompts of a fact set; with --model, also how many facts have an object that
    is one token for that model's tokenizer (single-token coverage)."""
    facts = load_facts(spec, relations=split_list(relations))
    coverage = single_token_coverage(facts, _load_tokenizer(model)) if model else None
    console = Console()
    console.print(stats_table(facts, coverage))
    n_rel = len(facts.by_relation())
    console.print(
        f"Total: {_plural(n_rel, 'relation')}, {_plural(len(facts), 'fact')}, "
        f"{_plural(facts.num_prompts, 'prompt')}",
        soft_wrap=True,
        highlight=False,
    )
    if coverage is not None:
        t = coverage["total"]
        console.print(
            f"Single-token objects for {model}: {t['single_token_facts']:,} of {_plural(t['facts'], 'fact')} "
            f"({_pct(t['single_token_facts'], t['facts'])}), {t['single_token_prompts']:,} of "
            f"{_plural(t['prompts'], 'prompt')} ({_pct(t['single_token_prompts'], t['prompts'])})",
            soft_wrap=True,
            highlight=False,
        )


@app.command("download")
def download_cmd(
    dataset: str = typer.Argument(..., help=f"Which dataset: {' or '.join(DATASETS)}."),
    dest: Path | None = typer.Option(
        None, "--dest", help="Destination folder (default: <cache>/data/<dataset>, where loaders look)."
    ),
    base_url: str = typer.Option(
        DEFAULT_BASE_URL, "--base-url", help="Mirror replacing https://raw.githubusercontent.com."
    ),
    relations: str | None = typer.Option(
        None, "--relations", "-r", help="bingrel only: comma-separated ids of the relations whose files to fetch "
        "(default: all 34)."
    ),
) -> None:
    """Fetch a dataset from the authors' GitHub repositories and verify every file."""
    console = Console()
    counts = {"downloaded": 0, "present": 0}

    def report(entry: RemoteFile, status: str) -> None:
        counts[status] += 1
        if status == "downloaded":
            console.print(f"downloaded {entry.local_path}", highlight=False)

    rels = split_list(relations)
    if rels and dataset != "bingrel":
        raise DataError("--relations applies to bingrel only")
    target = download(dataset, dest, base_url=base_url, relations=rels, on_file=report)
    console.print(
        f"{dataset}: {_plural(sum(counts.values()), 'file')} verified in {target} "
        f"({counts['downloaded']:,} downloaded, {counts['present']:,} already present)",
        soft_wrap=True,
        highlight=False,
    )
    if dataset == "pararel":
        console.print(f"inspect it with: kneuron data stats {target}", soft_wrap=True, highlight=False)


def _model_objective(model: str) -> str:
    """'masked' or 'causal', from the model's config alone (no weights)."""
    from kneuron.models.adapters import adapter_for_type
    from kneuron.models.sources import resolve_model
    from kneuron.models.structural import objective_for_config

    model = resolve_model(model)
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
    except Exception as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ModelError(f"cannot load the config of {model!r}: {first[:300]}") from None
    adapter = adapter_for_type(config.model_type)
    objective = adapter.objective if adapter is not None else objective_for_config(config)
    if objective is None:
        raise ModelError(f"{model!r} is neither a masked nor a causal language model "
                         f"({', '.join(config.architectures or [config.model_type])})")
    return objective


@app.command("sample")
def sample_cmd(
    spec: str = typer.Argument(..., help=f"Facts to sample from: {SPECS_HELP}."),
    model: str = model_option(...),
    out: Path = typer.Option(..., "--out", "-o", help="The sample, as a facts .jsonl file."),
    per_relation: int = PER_RELATION,
    seed: int = seed_option(0),
    relations: str | None = RELATIONS,
    min_prompts: int = ranged(1, "--min-prompts", within=POSITIVE,
                              help="Drop facts left with fewer prompts usable with MODEL (not the refinement's "
                                   "minimum)."),
) -> None:
    """A seeded sample of N facts per relation that MODEL can be scored on (one-token objects;
    for a decoder, only the prompts that end at the blank)."""
    from kneuron.data.jsonl import save_facts_jsonl
    from kneuron.data.sampling import sample_facts

    if out.suffix != ".jsonl":
        raise DataError(f"--out must name a .jsonl file, got {out}")
    facts = load_facts(spec, relations=split_list(relations))
    causal = _model_objective(model) == "causal"
    sample, reports = sample_facts(facts, per_relation, seed, tokenizer=_load_tokenizer(model), causal=causal,
                                   min_prompts=min_prompts)
    if not len(sample):
        raise DataError(f"no fact of {spec} is usable with {model} (one-token object"
                        f"{', prompts ending at the blank' if causal else ''}, >= {min_prompts} prompts)")
    header = [f"kneuron data sample {spec} --model {model} --per-relation {per_relation} --seed {seed}"
              + (f" --relations {relations}" if relations else "") + f" --min-prompts {min_prompts}",
              f"{len(sample)} facts, {sample.num_prompts} prompts; "
              + ("causal LM: prompts ending at the blank only" if causal else "masked LM: all prompts"),
              "relation: facts, eligible, sampled, usable prompts per fact"]
    header += [f"  {r.relation}: {r.facts}, {r.eligible}, {r.sampled}, {r.prompts_per_fact}" for r in reports]
    save_facts_jsonl(sample, out, header=header)
    table = Table(title=f"sample of {spec} for {model}", box=box.SIMPLE)
    for col in ("relation", "facts", "eligible", "sampled", "prompts/fact"):
        table.add_column(col, justify="left" if col == "relation" else "right")
    for r in reports:
        table.add_row(r.relation, f"{r.facts:,}", f"{r.eligible:,}", str(r.sampled), str(r.prompts_per_fact))
    console = Console()
    console.print(table)
    console.print(f"wrote {out}: {_plural(len(sample), 'fact')}, {_plural(sample.num_prompts, 'prompt')} "
                  f"from {_plural(len(reports), 'relation')}", soft_wrap=True, highlight=False)


def _drop_table(reports, title: str) -> Table:
    # Two-line headers and one space between columns keep ten columns in an 80-column terminal;
    # the legend is printed below.
    from kneuron.data.counterfact import REASONS, shown_reasons

    columns = shown_reasons(reports)
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("relation", no_wrap=True)
    for header in ("facts", *(REASONS[k].header for k in columns), "not\ntried", "kept", "tune/\ntest"):
        table.add_column(header, justify="right", no_wrap=True)
    for r in reports:
        table.add_row(r.relation, f"{r.facts:,}", *(f"{getattr(r, k):,}" for k in columns),
                      f"{r.unexamined:,}", f"{r.kept:,}", f"{r.tune}/{r.test}")
    table.add_section()
    table.add_row("total", f"{sum(r.facts for r in reports):,}",
                  *(f"{sum(getattr(r, k) for r in reports):,}" for k in columns),
                  f"{sum(r.unexamined for r in reports):,}", f"{sum(r.kept for r in reports):,}",
                  f"{sum(r.tune for r in reports)}/{sum(r.test for r in reports)}", style="bold")
    return table


@app.command("counterfact")
def counterfact_cmd(
    model: str = model_option(...),
    out: Path = typer.Option(..., "--out", "-o", help="The cases, as a .jsonl file."),
    per_relation: int = PER_RELATION,
    seed: int = seed_option(0),
    data: str = data_option("pararel"),
    relations: str | None = RELATIONS,
    paraphrases: int = ranged(2, "--paraphrases", within=POSITIVE,
                              help="Usable templates per case held out as paraphrases (never given to the editor)."),
    neighbours: int = ranged(5, "--neighbours", within=POSITIVE,
                             help="Neighbour prompts per case (same relation, other subjects, answered correctly)."),
    others: int = ranged(5, "--others", within=POSITIVE,
                         help="Prompts of other relations' facts per case (answered correctly)."),
    tune_share: float = ranged(0.5, "--tune-share", within=Range(0, 1, low_open=True, high_open=True),
                               help="Share of each relation's cases in the 'tune' split (the rest: 'test')."),
    max_tries: int = ranged(None, "--max-tries", within=POSITIVE,
                            help="Facts of each relation checked with the model at most (default: 20 x "
                                 "--per-relation)."),
    exclude: list[Path] = typer.Option(None, "--exclude", help="A cases file whose facts (relation and subject, any "
                                       "split) never become cases here: more cases, disjoint from those already "
                                       "measured. Repeatable."),
    device: str = DEVICE,
) -> None:
    """A seeded CounterFact-style editing benchmark for MODEL: facts it answers top-1, each with a
    counterfactual target, paraphrases, neighbours, other relations' facts and generation prompts."""
    import kneuron
    from kneuron.data.counterfact import (
        REASONS,
        build_cases,
        cases_header,
        excluded_facts,
        model_checks,
        save_cases,
    )

    if out.suffix != ".jsonl":
        raise DataError(f"--out must name a .jsonl file, got {out}")
    skip = excluded_facts(exclude or [])
    facts = load_facts(data, relations=split_list(relations))
    kn = kneuron.load(model, device=device)
    causal = not kn.is_masked
    console = Console()
    with console.status("checking facts with the model ...") as status:
        cases, reports = build_cases(facts, per_relation, seed, **model_checks(kn), paraphrases=paraphrases,
                                     neighbours=neighbours, others=others, tune_share=tune_share,
                                     max_tries=max_tries, exclude=skip,
                                     log=lambda msg: status.update(f"checking facts with the model: {msg}"))
    model_name = Path(model).name if Path(model).expanduser().exists() else model  # no absolute paths in the file
    data_name = Path(facts.source).name if facts.source else Path(data.removeprefix("pararel:")).name
    # the excluded column makes eleven: wider than 80 columns, and a log is 80 wide; cut nothing
    Console(width=max(console.width, 100) if exclude else console.width).print(
        _drop_table(reports, f"CounterFact-style cases from {data_name} for {model_name}"))
    legend = ("dropped: " + ", ".join(r.label for k, r in REASONS.items() if k != "excluded")
              + ("; excluded: a case of an --exclude file" if exclude else "")
              + "; not tried: the relation had its cases or --max-tries was reached")
    console.print(legend, soft_wrap=True, highlight=False, style="dim")
    if not cases:
        raise DataError(f"no case of {data_name} survived for {model_name} (see the table); nothing written")
    settings = {"model": model_name, "data": data_name, "relations": relations, "per-relation": per_relation,
                "seed": seed, "paraphrases": paraphrases, "neighbours": neighbours, "others": others,
                "tune-share": tune_share, "max-tries": max_tries or 20 * per_relation,
                "exclude": " --exclude ".join(p.name for p in exclude) if exclude else None}
    kind = ("causal LM: only prompts ending at the blank are usable" if causal
            else "masked LM: every prompt is usable")
    save_cases(cases, out, header=cases_header(settings, cases, reports, notes=[kind]))
    tune = sum(c.split == "tune" for c in cases)
    console.print(f"wrote {out}: {_plural(len(cases), 'case')} ({tune} tune, {len(cases) - tune} test) from "
                  f"{_plural(sum(r.kept > 0 for r in reports), 'relation')}", soft_wrap=True, highlight=False)
