"""Two `kneuron edit bench` runs of the same cases, compared case by case for each editor.

    python scripts/paired_edit_runs.py RUN_A RUN_B [--methods M,...] [--columns C,...] [--out FILE]

Two settings of one editor (RUN_A at one bound, RUN_B at another) are judged on the cases both
measured: per column, the mean and the median over those cases in each run, and in how many cases B
is above and below A.  Bench summaries average over cases; a change that helps half the cases and
hurts the other half shows here as a tie, not as a small gain.  Reads each run's cases.csv (no
model is run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kneuron.errors import KneuronError
from kneuron.reports.report import markdown_table

COLUMNS = "S,ES,PS,NS,others_kept,gen_new,entropy_rel,ppl_rel"


def paired_table(a: pd.DataFrame, b: pd.DataFrame, methods: list[str], columns: list[str]) -> pd.DataFrame:
    rows = []
    for method in methods:
        x = a[a["method"] == method].set_index("case_id")
        y = b[b["method"] == method].set_index("case_id")
        both = x.index.intersection(y.index)
        if not len(both):
            raise KneuronError(f"no case of method {method!r} is in both runs")
        for column in columns:
            if column not in x or column not in y:
                raise KneuronError(f"column {column!r} is not in both runs' cases.csv")
            u, v = x.loc[both, column].astype(float), y.loc[both, column].astype(float)
            rows.append({"method": method, "column": column, "cases": len(both), "mean A": u.mean(),
                         "mean B": v.mean(), "median A": u.median(), "median B": v.median(),
                         "B above A": int((v > u).sum()), "B below A": int((v < u).sum())})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--methods", default=None, help="default: the edited methods both runs measured")
    ap.add_argument("--columns", default=COLUMNS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    a, b = (pd.read_csv(run / "cases.csv") for run in (args.run_a, args.run_b))
    methods = (args.methods.split(",") if args.methods
               else [m for m in a["method"].unique() if m != "unedited" and m in set(b["method"])])
    table = paired_table(a, b, methods, args.columns.split(","))
    text = (f"# Paired: `python scripts/paired_edit_runs.py {args.run_a.name} {args.run_b.name}"
            + (f" --methods {args.methods}" if args.methods else "")
            + (f" --columns {args.columns}" if args.columns != COLUMNS else "")
            + "` (per-case rows, no model run)\n\n"
            f"A: {args.run_a.name}; B: {args.run_b.name}.\n\n"
            + markdown_table(table, cell=lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)) + "\n")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KneuronError as err:
        raise SystemExit(f"error: {err}") from None
