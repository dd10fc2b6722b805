"""Neighbourhood score split by whether a same-answer neighbour shares a word with the edited subject.

    python scripts/ns_by_subject_overlap.py CASES.jsonl RUN [--out FILE]

RUN is a finished `kneuron edit bench` folder (or a combined one) measured on CASES.jsonl.  A case
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
    out = (rows.groupby(["method", "shares_word"], sort=False)
           .agg(cases=("case_id", "nunique"), NS=("NS", "mean"), NS_same=("NS_same", "mean")).reset_index())
    return out.sort_values(["method", "shares_word"], key=lambda s: s.map(order) if s.name == "method" else s,
                           ignore_index=True)


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, cell=lambda v: f"{v:.2f}" if isinstance(v, float) else str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", type=Path)
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    table = overlap_table(load_cases(args.cases), pd.read_csv(args.run / "cases.csv"))
    text = (f"# NS by subject overlap: `python scripts/ns_by_subject_overlap.py {args.cases.name} {args.run.name}` "
            "(from `results/edit/`; per-case rows, no model run)\n\n" + _markdown(table) + "\n")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
