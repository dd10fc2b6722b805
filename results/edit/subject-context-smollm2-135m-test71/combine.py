"""All 71 SmolLM2 test cases of cases-smollm2-135m-per30.jsonl (facts that chose nothing), every editor on the
same cases: kn, kn_paper, kn_specific, random, ROME and unedited from bench-smollm2-135m-per30; kn_subject and
subject_random (default context fit 10) from bench-subject-context-smollm2-135m-per30 (30 cases, two halves) and
bench-subject-context-smollm2-135m-rest41 (the other 41).  Writes cases.csv, methods.csv, methods.png, report.md
and entropy.csv (the per-case distribution of the generation-entropy ratio, which the means hide).

Run from this folder: python combine.py "CPU NAME"
"""
import json
import sys
from pathlib import Path

import pandas as pd

from kneuron.experiments.edit_bench import summarize, write_outputs

here = Path(__file__).resolve().parent
edit = here.parent


def journal(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


answer = pd.DataFrame(journal(edit / "bench-smollm2-135m-per30" / "journal.jsonl"))
subject = pd.DataFrame(journal(edit / "bench-subject-context-smollm2-135m-per30" / "half-a-journal.jsonl")
                       + journal(edit / "bench-subject-context-smollm2-135m-per30" / "half-b-journal.jsonl")
                       + journal(edit / "bench-subject-context-smollm2-135m-rest41" / "journal.jsonl"))
subject = subject[subject["method"] != "unedited"]  # one unedited row per case: bench-smollm2-135m-per30's
frame = pd.concat([answer, subject], ignore_index=True).drop(columns=["_others_top1"], errors="ignore")
methods = sorted(frame["method"].unique())
per_case = frame.groupby("case_id")["method"].nunique()
done = sorted(per_case[per_case == len(methods)].index)
frame = frame[frame["case_id"].isin(done)]
assert not frame.duplicated(["case_id", "method"]).any()
print(f"{len(done)} cases with all of {methods}")

configs = {name: json.loads((edit / name / "config.json").read_text())
           for name in ("bench-smollm2-135m-per30", "bench-subject-context-smollm2-135m-per30",
                        "bench-subject-context-smollm2-135m-rest41")}
measure = ("generation_tokens", "bootstrap", "seed", "ppl_sentences")
for name, cfg in configs.items():  # the measurements must be the same in every run combined
    assert all(cfg.get(k) == configs["bench-smollm2-135m-per30"].get(k) for k in measure), name
table = summarize(frame, reps=configs["bench-smollm2-135m-per30"]["bootstrap"],
                  seed=configs["bench-smollm2-135m-per30"]["seed"])
header = (f"# Edit benchmark: smollm2-135m, {len(done)} test cases, every editor on the same cases\n\n"
          "Combined by `combine.py` from bench-smollm2-135m-per30 (kn, kn_paper, kn_specific, random, rome, unedited), "
          "bench-subject-context-smollm2-135m-per30 and bench-subject-context-smollm2-135m-rest41 (kn_subject, "
          "subject_random at context fit 10); each run's command, CPU and config are in its folder.  \n"
          f"CPU: {sys.argv[1] if len(sys.argv) > 1 else 'see the runs'}; torch threads 1 per process.")
print(write_outputs(here, frame, table, header))

# the entropy ratio per case: the summary gives the ratio of means; its spread is what tells a
# general loss of fluency from a few collapsed generations
base = frame[frame["method"] == "unedited"].set_index("case_id")["entropy"]
rows = []
for method, g in frame.groupby("method"):
    ratio = g.set_index("case_id")["entropy"] / base
    rows.append({"method": method, "cases": len(ratio), "ratio_of_means": g["entropy"].sum() / base[g["case_id"]].sum(),
                 "median": ratio.median(), "q25": ratio.quantile(0.25), "q75": ratio.quantile(0.75),
                 "within_5pct": float(((ratio - 1).abs() <= 0.05).mean()), "below_0.95": float((ratio < 0.95).mean()),
                 "below_0.5": float((ratio < 0.5).mean())})
entropy = pd.DataFrame(rows)
entropy.to_csv(here / "entropy.csv", index=False)
with open(here / "report.md", "a") as f:
    f.write("\n## Generation entropy per case (edited / unedited, same case)\n\n"
            + "| " + " | ".join(entropy.columns) + " |\n|" + "---|" * len(entropy.columns) + "\n"
            + "".join("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |\n"
                      for r in entropy.itertuples(index=False)))
print(table[["method", "cases", "S", "S_lo", "S_hi", "ES", "PS", "NS", "NS_same", "others_kept", "gen_new",
             "entropy_rel", "ppl_rel"]].round(3).to_string())
print(entropy.round(3).to_string())
