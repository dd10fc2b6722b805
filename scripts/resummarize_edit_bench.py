"""Recompute an edit benchmark's summary (methods.csv, report.md, the figure) from its cases.csv.

    python scripts/resummarize_edit_bench.py results/edit/bench-smollm2-135m [...]

For directories written before a change to `kneuron.experiments.edit_bench.summarize` (the
fluency columns became ratios of means): no model is loaded and no case is measured again; the
report keeps its original header (command, CPU, time) and says that its summary was recomputed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from kneuron.experiments.edit_bench import summarize, write_outputs

NOTE = "Summary recomputed from cases.csv by `python scripts/resummarize_edit_bench.py DIR` (fluency: ratios of means)."


def main(dirs: list[str]) -> None:
    for name in dirs:
        out = Path(name)
        cases = pd.read_csv(out / "cases.csv")
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        old = (out / "report.md").read_text(encoding="utf-8").split("\n\n| split", 1)[0].rstrip()
        header = "\n".join(line for line in old.splitlines() if line != NOTE)
        header = f"{header}  \n{NOTE}" if header.splitlines()[-1].endswith("  ") else f"{header}\n{NOTE}"
        table = summarize(cases, reps=int(config.get("bootstrap", 1000)), seed=int(config.get("seed", 0)))
        for path in write_outputs(out, cases, table, header):
            print(path)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/resummarize_edit_bench.py DIR [DIR ...]")
    main(sys.argv[1:])
