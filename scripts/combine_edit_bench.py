"""Put the editors of several edit-benchmark runs side by side, on the cases they all measured.

    python scripts/combine_edit_bench.py OUT RUN[:OLD=NEW,...] RUN ... [--cpu NAME]
    python scripts/combine_edit_bench.py OUT RUN RUN ... --pool [--cpu NAME]

Each RUN is a finished `kneuron edit bench` folder (its cases.csv).  The unedited rows come from
the first RUN; the other runs give their editors, renamed with OLD=NEW where two runs measured the
same editor under different settings.  Only the cases that every editor measured are kept, so every
row of the summary is on the same cases.  The runs' measurement settings (generation length,
perplexity sentences, bootstrap, seed) must agree.  Writes cases.csv, methods.csv, methods.png and
report.md (`kneuron.experiments.edit_bench.write_outputs`), and entropy.csv: the per-case
distribution of the generation-entropy ratio, which the summary's ratio of means hides.

`--pool` stacks runs of other cases instead (a tune-split run and a test-split run, say): each run
keeps its own unedited rows, a case is named by its cases file and id, and a case measured by two
runs is refused.  The summary gains an `all` split over every case beside each run's own split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from kneuron.experiments.edit_bench import summarize, write_outputs
from kneuron.reports.report import markdown_table

MEASUREMENT = ("generation_tokens", "ppl_sentences", "bootstrap", "seed")


def _as_list(cases) -> list[str]:
    return [] if cases is None else [cases] if isinstance(cases, str) else list(cases)


def load_run(spec: str, first: bool, pool: bool = False) -> tuple[Path, pd.DataFrame, dict]:
    name, _, renames = spec.partition(":")
    run = Path(name)
    for needed in ("cases.csv", "config.json"):
        if not (run / needed).exists():
            raise SystemExit(f"{run}: no {needed} (a finished `kneuron edit bench` folder, or one this script wrote)")
    cases = pd.read_csv(run / "cases.csv")
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    if pool:
        if not config.get("pool"):  # a pooled folder's cases are named already
            cases["case_id"] = [f"{config.get('cases', run.name)}:{c}" for c in cases["case_id"]]
    elif not first:
        cases = cases[cases["method"] != "unedited"]
    for pair in filter(None, renames.split(",")):
        old, _, new = pair.partition("=")
        if old not in set(cases["method"]):
            raise SystemExit(f"{run}: no editor {old!r} to rename (it has {sorted(set(cases['method']))})")
        cases = cases.replace({"method": {old: new}})
    return run, cases, config


def entropy_table(frame: pd.DataFrame) -> pd.DataFrame:
    base = frame[frame["method"] == "unedited"].set_index("case_id")["entropy"]
    rows = []
    for method, g in frame.groupby("method", sort=False):
        ratio = g.set_index("case_id")["entropy"] / base
        rows.append({"method": method, "cases": len(ratio),
                     "ratio_of_means": float(g["entropy"].sum() / base[g["case_id"]].sum()),
                     "median": ratio.median(), "q25": ratio.quantile(0.25), "q75": ratio.quantile(0.75),
                     "within_5pct": float(((ratio - 1).abs() <= 0.05).mean()),
                     "below_0.95": float((ratio < 0.95).mean()), "below_0.5": float((ratio < 0.5).mean())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", help="RUN[:OLD=NEW,...]; the first gives the unedited rows")
    ap.add_argument("--cpu", default="see each run's report")
    ap.add_argument("--pool", action="store_true", help="stack runs of other cases (each with its unedited rows)")
    args = ap.parse_args()
    loaded = [load_run(spec, i == 0, args.pool) for i, spec in enumerate(args.runs)]
    first = loaded[0][2]
    for run, _, config in loaded:
        if any(config.get(k) != first.get(k) for k in MEASUREMENT):
            raise SystemExit(f"{run}: its measurement settings differ from {loaded[0][0]}'s ({', '.join(MEASUREMENT)})")
    frame = pd.concat([cases for _, cases, _ in loaded], ignore_index=True)
    if frame.duplicated(["case_id", "method"]).any():
        dup = frame[frame.duplicated(["case_id", "method"])]
        if args.pool:
            raise SystemExit(f"cases measured by two runs: {sorted(dup['case_id'].unique())[:5]}")
        raise SystemExit(f"editors measured by two runs: {sorted(dup['method'].unique())} (rename one with RUN:OLD=NEW)")
    methods = list(dict.fromkeys(frame["method"]))
    complete = frame.groupby("case_id")["method"].nunique()
    done = sorted(complete[complete == len(methods)].index)
    frame = frame[frame["case_id"].isin(done)]
    summarized = pd.concat([frame, frame.assign(split="all")], ignore_index=True) if args.pool else frame
    table = summarize(summarized, reps=int(first.get("bootstrap", 1000)), seed=int(first.get("seed", 0)))
    runs = ", ".join(f"`{run.name}`" for run, _, _ in loaded)
    how = ("stacked (each with its own unedited rows; split `all` is every case)" if args.pool
           else "side by side, unedited rows from the first")
    header = (f"# Edit benchmark: {first.get('model', '?')}, {len(done)} cases measured by every editor\n\n"
              f"Command: `python scripts/combine_edit_bench.py {args.out.name} {' '.join(args.runs)}"
              f"{' --pool' if args.pool else ''}` (from `results/edit/`): the runs {runs} {how}; each run's "
              f"command, config and time are in its folder.  \nCPU: {args.cpu}.")
    args.out.mkdir(parents=True, exist_ok=True)
    write_outputs(args.out, frame, table, header)
    # the measurement settings and where the rows came from, so that this folder can be combined again
    files = sorted({f for _, _, config in loaded for f in _as_list(config.get("cases"))})
    combined = {"model": first.get("model"), "cases": files[0] if len(files) == 1 else files,
                **{k: first.get(k) for k in MEASUREMENT},
                "combined_from": [run.name for run, _, _ in loaded], "pool": bool(args.pool)}
    (args.out / "config.json").write_text(json.dumps(combined, indent=2) + "\n", encoding="utf-8")
    entropy = entropy_table(frame)
    entropy.to_csv(args.out / "entropy.csv", index=False)
    with open(args.out / "report.md", "a", encoding="utf-8") as f:
        f.write("\n## Generation entropy per case (edited / unedited, same case)\n\n"
                + markdown_table(entropy, cell=lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)) + "\n")
    cols = ["method", "cases", "S", "S_lo", "S_hi", "ES", "PS", "NS", "NS_same", "others_kept", "gen_new",
            "entropy_rel", "ppl_rel"]
    print(table[[c for c in cols if c in table]].round(3).to_string())
    print(entropy.round(3).to_string())


if __name__ == "__main__":
    main()
