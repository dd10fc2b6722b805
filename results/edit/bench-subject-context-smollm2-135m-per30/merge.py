"""Merge the two halves (each a journaled `kneuron edit bench` run) into one benchmark's outputs:
cases.csv, methods.csv (bootstrap over all 30 cases), the figure and report.md."""
import json
import sys
from pathlib import Path

import pandas as pd

from kneuron.experiments.edit_bench import summarize, write_outputs

out = Path(sys.argv[1])
halves = [Path("half-a"), Path("half-b")]
rows = [json.loads(line) for h in halves for line in (h / "journal.jsonl").read_text().splitlines() if line.strip()]
frame = pd.DataFrame(rows).drop(columns=["_others_top1"], errors="ignore")
done = frame.groupby("case_id")["method"].nunique()
done = set(done[done == frame["method"].nunique()].index)  # cases with every row (a run stopped midway)
frame = frame[frame["case_id"].isin(done)]
print(f"{len(done)} cases complete")
cfgs = [json.loads((h / "config.json").read_text()) for h in halves]
assert all({k: v for k, v in c.items() if k != "cases"} == {k: v for k, v in cfgs[0].items() if k != "cases"} for c in cfgs)
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({**cfgs[0], "cases": [c["cases"] for c in cfgs]}, indent=2) + "\n")
for h in halves:
    for name in ("config.json", "journal.jsonl", "revert_checks.json"):
        (out / f"{h.name}-{name}").write_bytes((h / name).read_bytes())
table = summarize(frame, reps=cfgs[0]["bootstrap"], seed=cfgs[0]["seed"])
header = (f"# Edit benchmark: smollm2-135m, {len(done)} of the 30 test cases of bench-subject-smollm2-135m-per30, run in two halves\n\n"
          f"Commands: `kneuron --threads 1 edit bench --model smollm2-135m --cases cases-per30-sample30-{{a,b}}.jsonl "
          f"--split test --methods {','.join(cfgs[0]['methods'])} --subject-context-fit {cfgs[0]['subject_context_fit']:g}`, "
          "one process per half at once, then `merge.py`; unedited rows from bench-subject-smollm2-135m-per30.  \n"
          f"CPU: {sys.argv[2]}; torch threads 1 per process, beside CI's test suite for part of the run; "
          f"{frame[frame['method'] != 'unedited']['seconds'].sum():.0f} s of edited rows (unedited rows reused). "
          f"Cases complete: {sorted(done)}; a rerun of run-a.sh / run-b.sh resumes the rest.")
print(write_outputs(out, frame, table, header))
print(table[["method", "S", "S_lo", "S_hi", "ES", "PS", "NS", "NS_same", "others_kept", "gen_new", "entropy_rel", "ppl_rel"]].round(3).to_string())
