"""Neighbourhood score split by whether a same-answer neighbour shares a word with the edited subject.

    python scripts/ns_by_subject_overlap.py CASES.jsonl RUN [--out FILE]

RUN is a finished `kneuron edit bench` folder (or a combined one) measured on CASES.jsonl, or a
`benchmarks/tune_edit.py --editor subject` folder (its tune.jsonl: one row per setting, named by
its neurons, layer, context fit and, when not ROME's 4, clamp).  A case
"shares a word" when one of its neighbours with the case's true answer names a subject that has a
word in common with the edited subject ("Cadillac Eldorado" and "Cadillac DTS"; the neighbour's
subject is its prompt's words less the words of the case's first prompt's template).  An edit read
at the subject's last token cannot tell such subjects apart as easily, so NS is reported for both
groups, per editor, from the per-case rows (no model is run).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from kneuron.data.counterfact import load_cases
from kneuron.reports.report import markdown_table


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def shares_a_word(case) -> bool:
    """Whether a neighbour with the case's true answer names a subject sharing a word with the case's."""
    subject = _words(case.subject)
    template = _words(case.prompts[0].replace(case.subject, " "))
    return any(subject & (_words(n.prompt) - template) for n in case.neighbours if n.answer == case.target_true)


def overlap_table(cases, rows: pd.DataFrame) -> pd.DataFrame:
    flag = {c.case_id: shares_a_word(c) for c in cases}
    rows = rows[rows["method"] != "unedited"].assign(shares_word=rows["case_id"].map(flag))
    if rows["shares_word"].isna().any():
        missing = sorted(rows.loc[rows["shares_word"].isna(), "case_id"].unique())[:5]
        raise SystemExit(f"cases {missing} of the run are not in the cases file")
    order = {m: i for i, m in enumerate(dict.fromkeys(rows["method"]))}
    columns = {"cases": ("case_id", "nunique"), "NS": ("NS", "mean")}
    if "NS_same" in rows:
        columns["NS_same"] = ("NS_same", "mean")
    out = rows.groupby(["method", "shares_word"], sort=False).agg(**columns).reset_index()
    return out.sort_values(["method", "shares_word"], key=lambda s: s.map(order) if s.name == "method" else s,
                           ignore_index=True)


def read_rows(run: Path) -> pd.DataFrame:
    """A bench run's per-case rows, or a subject tune's rows with each setting as a method."""
    if (run / "cases.csv").exists():
        return pd.read_csv(run / "cases.csv")
    rows = pd.read_json(run / "tune.jsonl", lines=True)
    clamp = rows["clamp_norm"].fillna(4.0) if "clamp_norm" in rows else pd.Series(4.0, index=rows.index)
    fit = rows["context_fit"].astype(object).where(rows["context_fit"].notna(), "none").astype(str) \
        if "context_fit" in rows else "none"
    name = rows["rank"] + " L" + rows["layer"].astype(str) + " fit " + fit
    return rows.assign(method=name.where(clamp == 4.0, name + " clamp " + clamp.map("{:g}".format)))


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, cell=lambda v: f"{v:.2f}" if isinstance(v, float) else str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    table = overlap_table(load_cases(args.cases), read_rows(args.run))
    text = (f"# NS by subject overlap: `python scripts/ns_by_subject_overlap.py {args.cases.name} {args.run.name}` "
            "(from `results/edit/`; per-case rows, no model run)\n\n" + _markdown(table) + "\n")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
