"""Choose the default knowledge-neuron edit on the TUNE split of a CounterFact-style case file.

    python benchmarks/tune_edit.py --model smollm2-135m --cases cases.jsonl --out results/edit/tune-smollm2

For each tune case: the refined neurons (found once), filtered at each selectivity
(`selective_neurons` against other tune cases of the relation; "none" keeps them all), then
`fit_update` at each ratio (λ2/λ1), and each margin applied to the fitted strength.  Every variant is applied, scored on ES / PS / NS /
others kept (no generation: fluency is checked on the test split), and reverted.  The journal
(`tune.jsonl`) makes a rerun resume.  The summary prints S per (ratio, margin) and the choice:
the highest S whose others-kept is at least 0.9 (ties: the smaller margin).  The test split is
never read.

    python benchmarks/tune_edit.py --editor subject --counts 8,16,32,64,128 --model M --cases C --out DIR

`--editor subject` tunes the subject-neuron edit (`kneuron.edits.subject`) instead: ROME's k*, v*
are computed once per case and per `--steps` (the v* optimisation's passes) from the case's edit
prompts, then inserted through each count of the subject's neurons, through as many random neurons
of the same layer (row `random`, seeded per case), and through every neuron of the layer (ROME with
the same prompts), at each `--context-fits` value (`none`: the exact insertion at the mean key; the
whole layer only there), at each of `--layers` (default: ROME's depth rule).  The choice: the
highest S (to 0.01) whose others-kept is at least 0.9 (and, with `--fluency`, whose entropy_x is
at least 0.95, the fluency goal); ties go to the fewest neurons, the fewest
steps, the largest context_fit (the exact insertion first), then the layer nearest ROME's rule,
then the clamp nearest ROME's 4.  `--clamp-norms` tries v*'s norm bounds (ROME's clamp_norm_factor:
delta at most that many times the norm of W k*); `--fluency` also generates (50 greedy tokens from
each of the case's generation beginnings, as the bench's `entropy_generation`) and reports
`entropy_x`, the edited over the unedited entropy as a ratio of means; its rows are journaled apart.
Rows journaled without steps, context_fit, layer or clamp ran at 20, none, ROME's layer and 4.

`--shard K/N` tunes only cases K, K+N, ... (after --sample and --limit), so that N processes share
one --out and its journal; the last to finish writes the table.  `--skip-run DIR` (an `edit bench`
folder of the same cases file) leaves out the cases that run measures, rebuilt from its config.json,
before `--sample`: a tune on the cases a measurement never reads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import kneuron
from kneuron.data.counterfact import load_cases, sample_cases
from kneuron.edits import fit_update, plan_update, selective_neurons
from kneuron.errors import KneuronError
from kneuron.experiments.edit_bench import (
    BenchConfig,
    Editors,
    Measure,
    harmonic,
    measured_cases,
    ngram_entropy,
    parse_shard,
    shard_indices,
)
from kneuron.machine import cpu_name
from kneuron.reports.report import markdown_table
from kneuron.runs.store import FactLog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cases", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ratios", default="1")
    ap.add_argument("--selectivities", default="none,1,0.5,0.25")
    ap.add_argument("--margins", default="1,1.25,1.5,2,3")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--sample", type=int, default=None, help="a seeded sample, round robin over relations")
    ap.add_argument("--skip-run", type=Path, action="append", default=[],
                    help="an edit bench run (folder) of the same cases file: its cases are left out before --sample, "
                         "so that a tune and a measurement share no case (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--editor", choices=("kn", "subject"), default="kn")
    ap.add_argument("--counts", default="8,16,32,64,128", help="--editor subject: the neuron counts tried")
    ap.add_argument("--steps", default="20", help="--editor subject: the v* optimisation steps tried")
    ap.add_argument("--layers", default="default", help="--editor subject: the layers tried (default: ROME's depth "
                    "rule, round(0.35 x layers))")
    ap.add_argument("--context-fits", default="none", help="--editor subject: the context_fit values tried "
                    "(none: the exact insertion at the mean key)")
    ap.add_argument("--clamp-norms", default="4", help="--editor subject: v*'s norm bounds tried (ROME: 4)")
    ap.add_argument("--fluency", action="store_true", help="--editor subject: also measure generation entropy")
    ap.add_argument("--shard", default=None, help="K/N: only cases K, K+N, ...; the last shard writes the table")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ratios = [float(x) for x in args.ratios.split(",")]
    margins = [float(x) for x in args.margins.split(",")]
    sels = [None if x == "none" else float(x) for x in args.selectivities.split(",")]
    cases = [c for c in load_cases(args.cases) if c.split == "tune"]
    if args.skip_run:
        measured = set()
        for run in args.skip_run:
            try:
                measured |= {c.case_id for c in measured_cases(run)}
            except KneuronError as e:
                raise SystemExit(str(e)) from None
            named = json.loads((run / "config.json").read_text(encoding="utf-8"))["cases"]
            if named != args.cases.name:
                raise SystemExit(f"--skip-run {run.name}: it measured {named}, not {args.cases.name}")
        cases = [c for c in cases if c.case_id not in measured]
    if args.sample:
        cases = sample_cases(cases, args.sample, seed=0)
    cases = cases[: args.limit]
    try:
        shard = parse_shard(args.shard)
    except KneuronError as e:
        raise SystemExit(str(e)) from None
    mine = [cases[k] for k in shard_indices(len(cases), shard)]
    args.out.mkdir(parents=True, exist_ok=True)
    kn = kneuron.load(args.model, device="cpu")
    measure = Measure(kn, [], 50)
    journal = FactLog(args.out / "tune.jsonl", key="key")
    if args.editor == "subject":
        return _tune_subject(kn, cases, mine, measure, journal, args)
    editors = Editors(kn, BenchConfig(model=args.model, cases=args.cases.name), cases)
    started = time.perf_counter()

    def case_keys(case):
        return [f"{case.case_id}:{sel}:{r}:{m}" for sel in sels for r in ratios for m in margins]

    for k, case in enumerate(mine):
        keys = case_keys(case)
        if all(key in journal for key in keys):
            continue
        t = time.perf_counter()
        refined = editors.neurons(case)
        contrast = editors.contrast(case)
        base = _light(measure, case, None)
        for sel in sels:
            neurons = refined if sel is None else selective_neurons(kn, refined, case.prompts, contrast, sel)
            for r in ratios:
                fitted = fit_update(kn, neurons, case.target_true, case.target_new, case.prompts, ratio=r,
                                    margin=1.0) if neurons else None
                for m in margins:
                    key = f"{case.case_id}:{sel}:{r}:{m}"
                    if key in journal:
                        continue
                    row = {"key": key, "case_id": case.case_id, "relation": case.relation,
                           "selectivity": "none" if sel is None else sel, "ratio": r, "margin": m,
                           "neurons": len(neurons), "refined": len(refined), "contrast": len(contrast)}
                    if fitted is None:
                        row.update({**{x: base[x] for x in ("ES", "PS", "NS", "success")}, "others_kept": 1.0,
                                    "edited": 0})
                    else:
                        s = min(fitted.info["scale"] * m, fitted.info["max_scale"])
                        edit = plan_update(kn, neurons, case.target_true, case.target_new,
                                           signs=fitted.info["signs"], lambda1=s, lambda2=r * s)
                        with edit.apply(kn):
                            row.update(_light(measure, case, base))
                        row.update({"edited": 1, "scale": s, "reached": fitted.info["reached"]})
                    journal.append(row)
        print(f"case {k + 1}/{len(mine)} ({case.relation}, {case.subject}): {len(refined)} neurons, "
              f"{time.perf_counter() - t:.1f} s", flush=True)
    journal.close()
    journal = _every_shard_done(args, [key for c in cases for key in case_keys(c)])
    if journal is None:
        return
    frame = pd.DataFrame(list(journal.records.values()))
    rows = []
    frame["selectivity"] = frame["selectivity"].astype(str)
    for (sel, r, m), g in frame.groupby(["selectivity", "ratio", "margin"]):
        es, ps, ns, kept = (float(g[x].mean()) for x in ("ES", "PS", "NS", "others_kept"))
        rows.append({"selectivity": sel, "ratio": r, "margin": m, "cases": len(g), "neurons": float(g["neurons"].mean()), "S": harmonic([es, ps, ns]), "ES": es, "PS": ps,
                     "NS": ns, "others_kept": kept, "success": float(g["success"].mean()),
                     "edited": float(g["edited"].mean())})
    table = pd.DataFrame(rows).sort_values(["selectivity", "ratio", "margin"])
    ok = table[table["others_kept"] >= 0.9]
    pick = (ok if len(ok) else table).sort_values(["S", "margin"], ascending=[False, True]).iloc[0]
    cpu = cpu_name()
    text = [f"# Tuning the default knowledge-neuron edit: {args.model}, {table['cases'].max()} tune cases",
            "", f"Command: `python benchmarks/tune_edit.py --model {args.model} --cases {args.cases.name} "
            f"--selectivities {args.selectivities} --ratios {args.ratios} --margins {args.margins}"
            + _skips(args) + (f" --sample {args.sample}" if args.sample else "") + "`  ", f"CPU: {cpu}; torch threads "
            f"{torch.get_num_threads()}; {time.perf_counter() - started:.0f} s this run.", "",
            _markdown(table), "",
            f"Choice (highest S with others kept >= 0.9): selectivity {pick['selectivity']}, ratio {pick['ratio']:g}, "
            f"margin {pick['margin']:g}."]
    (args.out / "tune.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    choice = {"selectivity": pick["selectivity"], "ratio": float(pick["ratio"]), "margin": float(pick["margin"])}
    (args.out / "choice.json").write_text(json.dumps(choice) + "\n", encoding="utf-8")
    print("\n".join(text))


def _tune_subject(kn, cases, mine, measure: Measure, journal: FactLog, args) -> None:
    """Each count of subject neurons, the same count of random neurons of the layer, and the whole
    layer (at the exact insertion), for each steps and context_fit."""
    import random

    from kneuron.edits import compute_rome
    from kneuron.edits.rome import default_layer
    from kneuron.edits.subject import subject_edit

    counts = sorted({int(x) for x in args.counts.split(",")} | {kn.num_neurons})
    all_steps = sorted({int(x) for x in args.steps.split(",")})
    fits = [None if x == "none" else float(x) for x in args.context_fits.split(",")]
    layers = [None if x == "default" else int(x) for x in args.layers.split(",")]
    clamps = sorted({float(x) for x in args.clamp_norms.split(",")})
    default = default_layer(kn)
    started = time.perf_counter()
    variants = [(rank, n, fit) for fit in fits for n in counts
                for rank in (("subject", "random") if n < kn.num_neurons else ("layer",) if fit is None else ())]
    settings = [(s, x, c) for s in all_steps for x in layers for c in clamps]

    def keys_for(case, steps, layer, clamp):
        return {v: _subject_key(case.case_id, v[0], v[1], steps, v[2], layer, clamp, args.fluency) for v in variants}

    for k, case in enumerate(mine):
        t = time.perf_counter()
        base = None
        for steps, layer, clamp in settings:
            keys = keys_for(case, steps, layer, clamp)
            if all(key in journal for key in keys.values()):
                continue
            base = base or _light(measure, case, None, args.fluency)
            update = compute_rome(kn, case.subject, list(case.prompts), case.target_new, seed=0, steps=steps,
                                  layer=layer, clamp_norm=clamp)
            for (rank, n, fit), key in keys.items():
                if key in journal:
                    continue
                pick = None
                if rank == "random":
                    pick = random.Random(f"0:{case.case_id}:random:{n}").sample(range(kn.num_neurons), n)
                edit = subject_edit(kn, update, n, neurons=pick, context_fit=fit)
                with edit.apply(kn):
                    row = _light(measure, case, base, args.fluency)
                row.update({"clamp_norm": update.info["clamp_norm"], "fluency": bool(args.fluency)})
                row.update({"key": key, "case_id": case.case_id, "relation": case.relation, "rank": rank, "count": n,
                            "steps": steps, "context_fit": "none" if fit is None else fit,
                            "steps_run": update.info["steps_run"], "p_new_optimised": update.info["p_new_optimised"],
                            "layer": update.layer, "key_share": edit.info["key_share"],
                            "reach_min": edit.info.get("context_reach_min")})
                journal.append(row)
        if base is not None:
            print(f"case {k + 1}/{len(mine)} ({case.relation}, {case.subject}): {time.perf_counter() - t:.1f} s",
                  flush=True)
    journal.close()
    journal = _every_shard_done(args, [key for c in cases for setting in settings
                                       for key in keys_for(c, *setting).values()])
    if journal is None:
        return
    frame = pd.DataFrame(list(journal.records.values()))
    frame["steps"] = frame["steps"].fillna(20).astype(int) if "steps" in frame else 20  # journaled before --steps
    frame["context_fit"] = frame["context_fit"].fillna("none").astype(str) if "context_fit" in frame else "none"
    frame["clamp_norm"] = frame["clamp_norm"].fillna(4.0).astype(float) if "clamp_norm" in frame else 4.0
    frame["fluency"] = frame["fluency"].fillna(False).astype(bool) if "fluency" in frame else False
    frame = frame[frame["steps"].isin(all_steps) & frame["count"].isin(counts)
                  & frame["context_fit"].isin([str("none" if f is None else f) for f in fits])
                  & frame["layer"].isin([default if x is None else x for x in layers])
                  & frame["clamp_norm"].isin(clamps) & (frame["fluency"] == bool(args.fluency))]
    rows = []
    for (layer, steps, clamp, fit, rank, n), g in frame.groupby(["layer", "steps", "clamp_norm", "context_fit", "rank",
                                                                  "count"]):
        es, ps, ns, kept = (float(g[x].mean()) for x in ("ES", "PS", "NS", "others_kept"))
        rows.append({"layer": int(layer), "steps": int(steps), "clamp_norm": float(clamp), "context_fit": fit,
                     "neurons": rank, "count": int(n), "cases": len(g),
                     "key_share": float(g["key_share"].mean()), "S": harmonic([es, ps, ns]), "ES": es, "PS": ps,
                     "NS": ns, "others_kept": kept, "success": float(g["success"].mean())})
        if args.fluency and "entropy_generation_base" in g:  # a ratio of means: one looping generation does not dominate
            rows[-1]["entropy_x"] = float(g["entropy_generation"].sum() / g["entropy_generation_base"].sum())
    table = pd.DataFrame(rows)
    table = table.assign(_mu=table["context_fit"].map(_mu)).sort_values(["layer", "steps", "clamp_norm", "_mu", "neurons",
                                                                          "count"])
    table = table.drop(columns="_mu")
    pick = choose_subject(table, default)
    text = [f"# Tuning the subject-neuron edit: {args.model}, {table['cases'].max()} tune cases", "",
            f"Command: `python benchmarks/tune_edit.py --editor subject --counts {args.counts} --steps {args.steps} "
            f"--context-fits {args.context_fits} " + (f"--layers {args.layers} " if args.layers != "default" else "")
            + (f"--clamp-norms {args.clamp_norms} " if args.clamp_norms != "4" else "")
            + ("--fluency " if args.fluency else "")
            + f"--model {args.model} --cases {args.cases.name}" + _skips(args)
            + (f" --sample {args.sample}" if args.sample else "")
            + "`  ",
            f"CPU: {cpu_name()}; torch threads {torch.get_num_threads()}; {time.perf_counter() - started:.0f} s this run.",
            "", _markdown(table), "",
            "Choice (highest S to 0.01 with others kept >= 0.9"
            + (f" and entropy_x >= {MIN_ENTROPY_X}" if "entropy_x" in table else "")
            + ", then the fewest neurons, then the fewest steps, "
            f"then the largest context_fit, the exact insertion first, then the layer nearest ROME's rule, {default}, "
            f"then the clamp nearest 4): {int(pick['count'])} subject neurons, {int(pick['steps'])} steps, context_fit "
            f"{pick['context_fit']}, layer {int(pick['layer'])}, clamp_norm {pick['clamp_norm']:g}."]
    (args.out / "tune.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    choice = {"count": int(pick["count"]), "steps": int(pick["steps"]), "layer": int(pick["layer"]),
              "clamp_norm": float(pick["clamp_norm"]),
              "context_fit": None if pick["context_fit"] == "none" else float(pick["context_fit"])}
    (args.out / "choice.json").write_text(json.dumps(choice) + "\n", encoding="utf-8")
    print("\n".join(text))


MIN_ENTROPY_X = 0.95  # the fluency goal: generation entropy within 5% of the unedited model's


def choose_subject(table: pd.DataFrame, default_layer: int) -> pd.Series:
    """The chosen row of a subject-edit table: the highest S (to 0.01) among the subject rows that keep
    other relations' answers (>= 0.9) and, when fluency was measured, keep the generation entropy
    (entropy_x >= MIN_ENTROPY_X); a constraint that no row meets is dropped, fluency first.  Ties: the
    fewest neurons, the fewest steps, the most local fit, the layer nearest ROME's rule, the clamp
    nearest ROME's 4."""
    subject = table[table["neurons"] == "subject"]
    fluent = subject["entropy_x"] >= MIN_ENTROPY_X if "entropy_x" in subject else True
    kept = subject["others_kept"] >= 0.9
    for ok in (subject[kept & fluent], subject[kept], subject):
        if len(ok):
            break
    return ok.assign(S2=ok["S"].round(2), mu=ok["context_fit"].map(_mu), moved=(ok["layer"] - default_layer).abs(),
                     clamped=(ok["clamp_norm"] - 4.0).abs()).sort_values(
        ["S2", "count", "steps", "mu", "moved", "clamped"], ascending=[False, True, True, False, True, True]).iloc[0]


def _skips(args) -> str:
    return "".join(f" --skip-run {run.name}" for run in args.skip_run)


def _every_shard_done(args, keys) -> FactLog | None:
    """The journal read again (other shards append to it), or None while a key is missing."""
    journal = FactLog(args.out / "tune.jsonl", key="key")
    if all(key in journal for key in keys):
        return journal
    print(f"shard {args.shard}: done; other shards' cases are not yet, so the last one writes the table", flush=True)
    return None


def _mu(fit: str) -> float:
    """A journaled context_fit as a number; the exact insertion ("none") is the most local, infinite."""
    return math.inf if fit == "none" else float(fit)


def _subject_key(case_id, rank: str, count: int, steps: int, fit: float | None = None, layer: int | None = None,
                 clamp: float = 4.0, fluency: bool = False) -> str:
    """Journal key; the defaults (20 steps, no context fit, ROME's layer, clamp 4, no fluency) keep
    the key written before those options existed, so those rows resume."""
    return (f"{case_id}:{rank}:{count}" + ("" if steps == 20 else f":s{steps}")
            + ("" if fit is None else f":c{fit:g}") + ("" if layer is None else f":L{layer}")
            + ("" if clamp == 4.0 else f":C{clamp:g}") + (":F" if fluency else ""))


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, cell=lambda v: f"{v:.3f}" if isinstance(v, float) else str(v), right=True)


def _light(measure: Measure, case, base: dict | None, fluency: bool = False) -> dict:
    """ES, PS, NS, success and others kept; with `fluency` the mean n-gram entropy of the greedy
    generations from the case's beginnings (and the unedited one's, from `base`)."""
    kn = measure.kn
    new, true = kn.answer_id(case.target_new), kn.answer_id(case.target_true)
    e, p = measure.probs(case.prompts), measure.probs(case.paraphrases)
    n = measure.probs([x.prompt for x in case.neighbours])
    o = measure.probs([x.prompt for x in case.others])
    ans = [kn.answer_id(x.answer) for x in case.neighbours]
    row = {"ES": float((e[:, new] > e[:, true]).double().mean()),
           "PS": float((p[:, new] > p[:, true]).double().mean()),
           "NS": float(np.mean([float(n[i, a] > n[i, new]) for i, a in enumerate(ans)])),
           "success": float((e.argmax(-1) == new).double().mean()), "_top": o.argmax(-1).tolist()}
    row["others_kept"] = 1.0 if base is None else float(np.mean([a == b for a, b in zip(row["_top"], base["_top"])]))
    if fluency and case.generation:
        row["entropy_generation"] = float(np.mean([ngram_entropy(measure.generate(t)) for t in case.generation]))
        if base is not None:
            row["entropy_generation_base"] = base["entropy_generation"]
    if base is not None:
        row.pop("_top")
    return row


if __name__ == "__main__":
    main()
