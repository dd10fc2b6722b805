"""scripts/paired_edit_runs.py: two bench runs of the same cases, compared case by case."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kneuron.errors import KneuronError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from paired_edit_runs import paired_table  # noqa: E402


def _run(values, extra_case=None):
    rows = [{"case_id": c, "method": "unedited", "ES": 0.0} for c in range(len(values))]
    rows += [{"case_id": c, "method": "kn_subject", "ES": v} for c, v in enumerate(values)]
    if extra_case is not None:
        rows.append({"case_id": extra_case, "method": "kn_subject", "ES": 9.0})
    return pd.DataFrame(rows)


def test_only_shared_cases_are_compared_and_wins_are_counted_per_case(tmp_path):
    a = _run([1.0, 0.0, 0.5, 1.0], extra_case=99)  # case 99 only in A: left out
    b = _run([0.0, 1.0, 0.5, 0.5])
    row = paired_table(a, b, ["kn_subject"], ["ES"]).iloc[0]
    assert row["cases"] == 4 and row["mean A"] == pytest.approx(0.625) and row["mean B"] == pytest.approx(0.5)
    assert (row["B above A"], row["B below A"]) == (1, 2) and row["median A"] == 0.75 and row["median B"] == 0.5
    with pytest.raises(KneuronError, match="'rome'"):
        paired_table(a, b, ["rome"], ["ES"])
    for name, frame in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        frame.to_csv(tmp_path / name / "cases.csv", index=False)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "paired_edit_runs.py"), "a", "b", "--columns", "ES",
                           "--out", "p.md"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| kn_subject | ES | 4 | 0.625 | 0.500 | 0.750 | 0.500 | 1 | 2 |" in (tmp_path / "p.md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "paired_edit_runs.py"), "a", "b", "--columns", "PS"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0 and "column 'PS'" in bad.stderr and "Traceback" not in bad.stderr
