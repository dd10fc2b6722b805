"""scripts/ns_by_subject_overlap.py: NS split by neighbours that share a word with the edited subject."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from kneuron.data.counterfact import Case, Probe, save_cases

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from ns_by_subject_overlap import overlap_table, shares_a_word  # noqa: E402


def case(cid, subject, neighbours):
    return Case(case_id=cid, split="test", relation="P176", subject=subject, target_true="Cadillac",
                target_new="Intel", prompts=[f"{subject} is produced by [MASK]."], paraphrases=[],
                neighbours=[Probe(f"{s} is produced by [MASK].", a) for s, a in neighbours], others=[], generation=[])


CASES = [case(1, "Cadillac Eldorado", [("Cadillac DTS", "Cadillac"), ("Ford Focus", "Ford")]),
         case(2, "Cadillac Eldorado", [("Escalade", "Cadillac"), ("Cadillac Ranch", "Ford")])]  # other answer: no


def test_a_same_answer_neighbour_sharing_a_subject_word_flags_the_case():
    assert shares_a_word(CASES[0]) and not shares_a_word(CASES[1])  # template words ("is", "produced") do not count


def test_table_and_script(tmp_path):
    rows = pd.DataFrame([{"case_id": c, "method": m, "NS": ns, "NS_same": ns} for c, m, ns in
                         ((1, "unedited", 1.0), (2, "unedited", 1.0), (1, "rome", 0.0), (2, "rome", 1.0))])
    table = overlap_table(CASES, rows).set_index("shares_word")
    assert list(table["method"]) == ["rome", "rome"] and table.loc[True, "NS"] == 0.0 and table.loc[False, "NS"] == 1.0
    run = tmp_path / "run"
    run.mkdir()
    rows.to_csv(run / "cases.csv", index=False)
    save_cases(CASES, tmp_path / "cases.jsonl")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "ns_by_subject_overlap.py"), "cases.jsonl", "run",
                           "--out", "ns.md"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| rome | False | 1 | 1.00 | 1.00 |" in (tmp_path / "ns.md").read_text()
    rows.assign(case_id=rows["case_id"] + 10).to_csv(run / "cases.csv", index=False)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "ns_by_subject_overlap.py"), "cases.jsonl", "run"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "not in the cases file" in done.stderr and "Traceback" not in done.stderr


def test_a_subject_tune_journal_reads_as_one_method_per_setting(tmp_path):
    from ns_by_subject_overlap import read_rows

    rows = [{"case_id": 1, "rank": "subject", "layer": 6, "context_fit": None, "NS": 0.0},
            {"case_id": 2, "rank": "subject", "layer": 6, "context_fit": None, "NS": 1.0},
            {"case_id": 1, "rank": "subject", "layer": 6, "context_fit": 10.0, "clamp_norm": 3.0, "NS": 1.0},
            {"case_id": 1, "rank": "layer", "layer": 9, "context_fit": None, "clamp_norm": 4.0, "NS": 0.5}]
    (tmp_path / "tune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    read = read_rows(tmp_path)
    assert list(read["method"]) == ["subject L6 fit none", "subject L6 fit none", "subject L6 fit 10.0 clamp 3",
                                    "layer L9 fit none"]
    table = overlap_table(CASES, read).set_index(["method", "shares_word"])
    assert table.loc[("subject L6 fit none", True), "NS"] == 0.0 and table.loc[("subject L6 fit none", False), "NS"] == 1.0
    assert "NS_same" not in table  # a tune journal has no NS_same
