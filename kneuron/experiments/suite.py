"""Every experiment of the paper on a finished discovery run, and the report that gathers them.

`run_named(name, kn, run, settings)` runs one experiment and returns an `Outcome` (its report
tables, figures, notes and row-level data); `run_suite` runs them all; `build_report` sets the
outcomes, the provenance and the comparison with the paper's numbers into a `Report`.
The CLI commands `kneuron experiment` and `kneuron reproduce` are thin layers over these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from kneuron.errors import KneuronError
from kneuron.experiments import paper
from kneuron.reports import figures as F

if TYPE_CHECKING:
    from kneuron.knowledge_model import KnowledgeModel

EXPERIMENTS = ("statistics", "suppression", "prompt-types", "update", "erase")
TITLES = {"statistics": "Statistics of the neurons (Table 2, Figure 3)",
          "suppression": "Suppressing and amplifying (Figures 4 and 5)",
          "prompt-types": "Activation by prompt type (Tables 3 and 4)",
          "update": "Updating facts (Table 6)",
          "erase": "Erasing relations (Table 5)"}


@dataclass
class ExperimentSettings:
    """Every setting of the experiments; the defaults are the paper's (its authors' code)."""

    seed: int = 42
    # statistics
    inter_partners: int = 100
    # suppression / amplification
    suppression_arms: tuple[str, ...] = ("kn", "baseline", "random")
    # prompt types
    bingrel: str | None = None
    escape: str = "paper"
    max_length: int = 512
    # updating
    update_arms: tuple[str, ...] = ("kn", "random")  # `kneuron.experiments.updating.ARMS`
    edits_per_relation: int = 10
    max_tries: int = 10000
    share: float = 0.1
    lambda1: float = 1.0
    lambda2: float = 8.0
    scaling: str = "norm"
    ppl_facts: int = 5
    # erasing
    erase_relations: list[str] | None = None
    top_k: int = 20
    replacement: str = "zero"
    erase_controls: tuple[str, ...] = ("random",)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Outcome:
    name: str
    title: str
    items: list[tuple] = field(default_factory=list)  # ("text", str) | ("table", name, df, caption) | ("figure", ...)
    data: dict[str, pd.DataFrame] = field(default_factory=dict)
    key: dict[str, pd.DataFrame] = field(default_factory=dict)  # frames the comparison table reads
    seconds: float = 0.0
    skipped: str = ""

    def text(self, s: str) -> None:
        self.items.append(("text", s))

    def table(self, name: str, df: pd.DataFrame, caption: str) -> None:
        self.items.append(("table", name, df, caption))

    def figure(self, name: str, fig, caption: str) -> None:
        self.items.append(("figure", name, F.png_bytes(fig), caption))


def _round(df: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return df.round(digits)


# -- the experiments ----------------------------------------------------------------------------------

def statistics(kn: KnowledgeModel, run, s: ExperimentSettings) -> Outcome:
    from kneuron.experiments.statistics import run_statistics

    out = Outcome("statistics", TITLES["statistics"])
    table2, per_rel, layers = run_statistics(run, seed=s.seed, num_layers=kn.num_layers)
    out.key["stats"] = table2
    out.text("Pooled over relations; facts without neurons count (spec 5.1).  Intra: all fact pairs within a "
             f"relation; inter: {s.inter_partners} random partners from other relations per fact "
             f"(`random.Random({s.seed})`).")
    out.table("table2_statistics", _round(table2), "Table 2: neurons per fact and overlaps between facts")
    out.figure("figure3_layers", F.layer_distribution_figure(layers),
               "Figure 3: share of the neurons in each layer (bars drawn symmetrically around 0, as in the paper)")
    out.table("layer_distribution", _round(layers), "Neurons per layer (1-based layers)")
    out.table("relation_statistics", _round(per_rel), "Per relation: facts, facts without neurons, neurons per "
              "fact, mean intra-relation overlap")
    return out


def suppression(kn: KnowledgeModel, run, s: ExperimentSettings) -> Outcome:
    from kneuron.experiments.activation_effects import (
        FACTORS,
        HELDOUT_FACTORS,
        heldout_ratios,
        method_means,
        prompt_effects,
        relation_ratios,
    )
    from kneuron.experiments.controls import method_sets

    out = Outcome("suppression", TITLES["suppression"])
    sets = method_sets(run.table, kn.num_layers, kn.num_neurons, s.seed)
    sets = {m: sets[m] for m in s.suppression_arms}
    effects = prompt_effects(kn, run.facts, sets, fact_indices=run.fact_indices)
    ratios = relation_ratios(effects)
    held = heldout_ratios(kn, getattr(run, "heldout", None), sets, fact_indices=run.fact_indices)
    if held is not None:
        ratios = ratios.merge(held, on=["method", "relation"], how="left")
    means = method_means(ratios, tuple(FACTORS) + (HELDOUT_FACTORS if held is not None else ()))
    out.key["effects"] = means
    out.data["suppression_prompts"] = effects
    labels = run.labels()
    out.text("Per relation: mean over all its prompts of (p_new − p_orig) divided by the mean of p_orig, in %; "
             "the headline is the unweighted mean over relations (spec 5.2).  Random neurons: as many as the "
             f"fact's knowledge neurons, uniform over the model (numpy seed {s.seed}).")
    if held is not None:
        out.text(f"Held out: the run was discovered with `--holdout {run.config.holdout}`, so the prompts that "
                 "chose the neurons are measured (suppress, amplify; in-sample) apart from "
                 f"{int(held.drop_duplicates('relation')['heldout_prompts'].sum())} held-out prompts that chose "
                 "nothing (suppress_heldout, amplify_heldout; facts with fewer than "
                 f"{run.config.holdout} + 3 prompts have none).")
    else:
        out.text("Held out: none; these effects are measured on the prompts that chose the neurons (discover "
                 "with `--holdout K` to measure them on prompts that chose nothing).")
    out.table("suppression_means", _round(means), "Mean change of the gold probability over relations (%)")
    out.figure("figure4_suppress", F.effects_figure(ratios, "suppress", labels, means),
               "Figure 4: suppressing the neurons (activation set to 0)")
    out.figure("figure5_amplify", F.effects_figure(ratios, "amplify", labels, means),
               "Figure 5: amplifying the neurons (activation doubled)")
    out.table("suppression_relations", _round(ratios), "Per relation and neuron set: change of the gold "
              "probability (%)")
    return out


def prompt_types(kn: KnowledgeModel, run, s: ExperimentSettings) -> Outcome:
    from kneuron.experiments.prompt_types import run_prompt_types
    from kneuron.experiments.rundata import load_bags, resolve_bingrel

    out = Outcome("prompt-types", TITLES["prompt-types"])
    if not kn.is_masked:
        out.skipped = "needs a masked language model (the prompts have [MASK] in the middle)"
        return out
    where = resolve_bingrel(run.config.data, s.bingrel)
    if where is None:
        out.skipped = f"no BINGREL sentences found for data {run.config.data!r} (give --bingrel DIR)"
        return out
    bags = load_bags(where)
    missing = [r for r in run.relations if r not in bags]
    if len(missing) == len(run.relations):
        out.skipped = f"{where} has no BINGREL file for any relation of the run"
        return out
    if missing:
        out.text(f"Not in `{where}`, so left out of this experiment: {', '.join(missing)}.")
    values, status, rel_means, means, triggers = run_prompt_types(kn, run, bags, seed=s.seed, escape=s.escape,
                                                                   max_length=s.max_length,
                                                                   relations=[r for r in run.relations if r in bags])
    out.key["prompt"] = means
    out.data["prompt_type_values"] = values
    out.data["prompt_type_facts"] = status
    counts = status.groupby(["method", "status"]).size().unstack(fill_value=0).reset_index()
    counts.columns.name = None
    out.text(f"Sentences from `{where}`.  T1: the tail masked in sentences with head and tail; T2: a random word "
             "masked in sentences with only the head; T3: random sentences with a random word masked (spec 5.3, "
             f"`random.Random({s.seed})`, escaping `{s.escape}`).  Value = activation at [MASK], averaged per "
             "neuron over a fact's sentences, pooled per relation, then the unweighted mean over relations.")
    out.table("table4_prompt_types", _round(means), "Table 4: mean activation of the neurons by prompt type")
    out.figure("figure_prompt_types", F.prompt_types_figure(rel_means, run.labels(), means),
               "Mean activation by prompt type, per relation (the authors' distant.pdf)")
    out.table("prompt_type_facts", counts, "Facts used and skipped (no_exmp: no T1 or no T2 sentence; no_kn: no "
              "neuron; no_mask: no usable [MASK] for some type)")
    out.table("table3_trigger_sentences", triggers, "Table 3: a fact's neurons (0-based layer.index) and the T1 "
              "sentences that activate them most and least (sum of their activations)")
    return out


def update(kn: KnowledgeModel, run, s: ExperimentSettings) -> Outcome:
    from kneuron.experiments.updating import run_updating, updating_summary

    out = Outcome("update", TITLES["update"])
    edits, attempts = run_updating(kn, run, arms=s.update_arms, seed=s.seed,
                                   edits_per_relation=s.edits_per_relation, max_tries=s.max_tries, share=s.share,
                                   lambda1=s.lambda1, lambda2=s.lambda2, scaling=s.scaling, ppl_facts=s.ppl_facts)
    summary = updating_summary(edits, s.update_arms)
    out.key["update"] = summary
    out.data["update_edits"] = edits
    out.text(f"Value-slot edit v ← v − λ1·E[t] + λ2·E[t′] with λ1 = {s.lambda1:g}, λ2 = {s.lambda2:g} "
             f"({s.scaling}-scaled), neurons shared by more than {100 * s.share:g}% of the relation's facts left out, "
             f"{s.edits_per_relation} edits per relation on facts the model answers correctly, "
             f"`random.Random({s.seed})` per neuron set (spec 5.4).  ΔPPL = exp(mean log-PPL after) − "
             f"exp(mean log-PPL before) over {s.ppl_facts} other facts of the relation (intra) and of other "
             "relations (inter).")
    out.table("table6_updating", _round(summary), "Table 6: updating facts")
    out.figure("figure_updating", F.updating_figure(summary), "Updating facts: rates and side effects")
    out.table("update_attempts", attempts, "Sampling per relation: tries, valid edits, and skips (no_kn: no "
              "neuron left after the 10% filter; incorrect_answer: the model's top-1 is not the gold object; "
              "multi_token: the original or new answer is several tokens, which one value-slot update cannot write)")
    return out


def erase(kn: KnowledgeModel, run, s: ExperimentSettings) -> Outcome:
    from kneuron.experiments.erasing import erasing_summary, run_erasing

    out = Outcome("erase", TITLES["erase"])
    table = run_erasing(kn, run, relations=s.erase_relations, top_k=s.top_k, replacement=s.replacement,
                        controls=s.erase_controls, seed=s.seed)
    summary = erasing_summary(table)
    out.key["erase"] = summary
    cols = ["relation", "label", "neurons_from", "neurons", "ppl_before", "ppl_after", "ppl_change_pct",
            "other_ppl_before", "other_ppl_after", "other_ppl_change_pct", "acc_before", "acc_after",
            "other_acc_before", "other_acc_after"]
    shown = table[[c for c in cols if c in table.columns]]
    out.data["erase_relations"] = table
    out.text(f"The value slots of each relation's {s.top_k} most frequent knowledge neurons set to "
             f"{'zero' if s.replacement == 'zero' else 'the [UNK] embedding'}; PPL = exp(mean −log p(gold)) over all "
             "prompts of the relation and of all other relations, before and after (spec 5.5).  `random`: as many "
             f"uniformly random neurons (seed {s.seed} + relation position), a control the paper does not have.")
    out.table("table5_erasing", _round(shown), "Table 5: perplexity before and after erasing a relation")
    out.table("erasing_means", _round(summary), "Mean over erased relations")
    if "status" in table and (table["status"] == "ok").any():
        out.figure("figure_erasing", F.erasing_figure(table, run.labels()), "Erasing relations: perplexity change")
    out.table("paper_table5", paper.erasing_table(), "The paper's Table 5 (bert-base-cased on PARAREL)")
    return out


RUNNERS: dict[str, Callable] = {"statistics": statistics, "suppression": suppression, "prompt-types": prompt_types,
                                "update": update, "erase": erase}


def run_named(name: str, kn: KnowledgeModel, run, settings: ExperimentSettings, log: Callable[[str], None] | None = None) -> Outcome:
    if name not in RUNNERS:
        raise KneuronError(f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}")
    t0 = time.perf_counter()
    if log:
        log(f"experiment {name} ...")
    outcome = RUNNERS[name](kn, run, settings)
    outcome.seconds = time.perf_counter() - t0
    if log:
        log(f"experiment {name}: " + (f"skipped ({outcome.skipped})" if outcome.skipped else f"{outcome.seconds:.1f} s"))
    return outcome


def run_suite(kn: KnowledgeModel, run, settings: ExperimentSettings, names: Sequence[str] = EXPERIMENTS,
              log: Callable[[str], None] | None = None) -> list[Outcome]:
    return [run_named(n, kn, run, settings, log) for n in names]


# -- the report ----------------------------------------------------------------------------------------

def comparison(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    key: dict[str, pd.DataFrame] = {}
    for o in outcomes:
        key.update(o.key)
    return paper.comparison_table(key.get("stats"), key.get("effects"), key.get("prompt"), key.get("update"),
                                  key.get("erase"))


def provenance(kn: KnowledgeModel, run, settings: ExperimentSettings, extra: dict | None = None) -> pd.DataFrame:
    d = run.describe()
    cfg = run.config
    hidden = kn.adapter.value_slots(kn.model, 0).shape[1 - kn.adapter.slot_axis]
    from kneuron.world import builtin_model_dir

    where = {spec: builtin_model_dir(spec, log=None) for spec in (cfg.model, cfg.data)}
    model_name = f"{cfg.model} ({where[cfg.model]})" if where.get(cfg.model) else cfg.model
    data_name = f"{cfg.data} ({where[cfg.data]})" if where.get(cfg.data) else cfg.data
    rows = [("model", f"{model_name} ({kn.adapter.family}, {kn.num_layers} layers, {kn.num_neurons} neurons per "
                      f"layer, hidden size {hidden}, {sum(p.numel() for p in kn.model.parameters()):,} parameters)"),
            ("data", f"{data_name}: {d['relations']} relations, {d['facts']} facts, {d['prompts']} prompts"
                     + (f" ({d['skipped_facts']} facts skipped: answer not a single token)" if d["skipped_facts"] else "")),
            ("discovery run", str(run.run_dir)),
            ("attribution", f"integrated gradients, m = {cfg.steps} ({cfg.rule}), {cfg.precision}"),
            ("selection", f"t = {cfg.threshold}·max (baseline {cfg.baseline_threshold}·max), p from {cfg.p_start} in "
                          f"±{cfg.p_step} steps, ≤ {cfg.max_tries} tries, neurons per fact in {list(cfg.count_range)}, floor "
                          f"{cfg.min_prompts} prompts" + (f", first {cfg.limit_facts} facts per relation"
                                                           if cfg.limit_facts else "")),
            ("seed", str(settings.seed)),
            ("device", str(kn.device)),
            ("kneuron", cfg.kneuron_version)]
    rows += list((extra or {}).items())
    return pd.DataFrame(rows, columns=["item", "value"])


def discovery_table(run) -> pd.DataFrame:
    rows = []
    for rel, s in run.summary.items():
        rows.append({"relation": rel, "label": run.label(rel), "facts": s["facts"], "skipped": s["skipped"],
                     "kn_p": s["kn"]["p"], "kn_per_fact": s["kn"]["neurons_per_fact"],
                     "baseline_p": s["baseline"]["p"], "baseline_per_fact": s["baseline"]["neurons_per_fact"]})
    return pd.DataFrame(rows)


def build_report(kn: KnowledgeModel, run, settings: ExperimentSettings, outcomes: Sequence[Outcome], extra: dict | None = None,
                 title: str = "Knowledge neurons: reproduction of Dai et al. (ACL 2022)"):
    """(Report, data frames) for `Report.write`."""
    from kneuron.reports import Report

    rep = Report(title)
    rep.section("Setup", "setup")
    rep.text(f"Our numbers come from **{run.config.model}** on **{run.config.data}**; the paper's from "
             f"**{paper.MODEL}** on **{paper.DATA}**.  Settings follow the authors' released code "
             "(spec `knowledge-neurons.md`); every random choice is seeded and the seeds are in `config.json`.")
    rep.table("provenance", provenance(kn, run, settings, extra), "Model, data and settings")
    defaults = ExperimentSettings(seed=settings.seed, bingrel=settings.bingrel).to_json()
    changed = {k: v for k, v in settings.to_json().items() if defaults.get(k) != v}
    rep.text("Settings that differ from the paper-faithful defaults: "
             + (", ".join(f"`{k} = {v}`" for k, v in changed.items()) if changed else "none") + ".")
    done = [o for o in outcomes if not o.skipped]
    if done:
        rep.section("Our numbers beside the paper's", "comparison")
        rep.text("`kn`: knowledge neurons; control: the activation baseline (statistics, suppression, prompt "
                 "types) or random neurons (updating, erasing).  Percentages are in %.  A dash: not run, or the "
                 "paper has no such number.")
        rep.table("comparison_with_paper", comparison(outcomes).round(4), "Headline numbers: ours and the paper's")
    data: dict[str, pd.DataFrame] = {}
    for o in outcomes:
        rep.section(o.title, o.name)
        if o.skipped:
            rep.text(f"Not run: {o.skipped}.")
            continue
        for item in o.items:
            if item[0] == "text":
                rep.text(item[1])
            elif item[0] == "table":
                rep.table(item[1], item[2], item[3])
            else:
                rep.figure(item[1], item[2], item[3])
        rep.text(f"Time: {o.seconds:.1f} s.")
        data.update(o.data)
    rep.section("Discovery per relation", "discovery")
    rep.table("discovery_relations", discovery_table(run).round(4), "Adapted sharing threshold p and neurons per "
              "fact, per relation and method")
    return rep, data
