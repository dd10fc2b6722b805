"""scripts/combine_edit_bench.py: editors of several runs side by side, on the cases all of them measured."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "combine_edit_bench.py"
CONFIG = {"model": "m", "generation_tokens": 50, "ppl_sentences": 8, "bootstrap": 200, "seed": 0}


def row(case, method, es, entropy):
    return {"case_id": case, "method": method, "split": "test", "relation": "P1", "ES": es, "PS": es, "NS": 1.0,
            "EM": 0.0, "PM": 0.0, "NM": 0.0, "success": es, "para_success": es, "NS_same": 1.0, "NS_other": 1.0,
            "S": es, "others_kept": 1.0, "gen_new": es, "entropy": entropy, "ppl": 10.0, "entropy_rel": 1.0,
            "ppl_rel": 1.0, "neurons": 4}


def write_run(path: Path, rows, **config):
    path.mkdir()
    pd.DataFrame(rows).to_csv(path / "cases.csv", index=False)
    (path / "config.json").write_text(json.dumps({**CONFIG, **config}))
    return path


def combine(tmp_path, *runs):
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out"), *runs], capture_output=True, text=True,
                          cwd=tmp_path)


def test_runs_side_by_side_on_common_cases_with_renames(tmp_path):
    write_run(tmp_path / "a", [row(c, m, 1.0 if m == "ed" else 0.0, 4.0) for c in (1, 2, 3) for m in ("unedited", "ed")])
    # run b measured `ed` under other settings and only cases 1 and 2; its unedited rows are ignored
    write_run(tmp_path / "b", [row(c, m, 0.5, 2.0 if m == "ed" else 99.0) for c in (1, 2) for m in ("unedited", "ed")])
    done = combine(tmp_path, "a", "b:ed=ed_other")
    assert done.returncode == 0, done.stderr
    cases = pd.read_csv(tmp_path / "out" / "cases.csv")
    assert sorted(cases["case_id"].unique()) == [1, 2]  # case 3 lacks ed_other
    assert sorted(cases["method"].unique()) == ["ed", "ed_other", "unedited"]
    methods = pd.read_csv(tmp_path / "out" / "methods.csv").set_index("method")
    assert methods.loc["ed", "ES"] == 1.0 and methods.loc["ed_other", "ES"] == 0.5 and methods.loc["unedited", "ES"] == 0
    entropy = pd.read_csv(tmp_path / "out" / "entropy.csv").set_index("method")
    assert entropy.loc["ed_other", "median"] == pytest.approx(0.5) and entropy.loc["ed", "within_5pct"] == 1.0
    assert "2 cases measured by every editor" in (tmp_path / "out" / "report.md").read_text()


def test_refusals(tmp_path):
    write_run(tmp_path / "a", [row(1, m, 1.0, 4.0) for m in ("unedited", "ed")])
    write_run(tmp_path / "b", [row(1, m, 1.0, 4.0) for m in ("unedited", "ed")])
    write_run(tmp_path / "c", [row(1, m, 1.0, 4.0) for m in ("unedited", "ed")], generation_tokens=20)
    for runs, message in ((["a", "b"], "editors measured by two runs: ['ed']"),
                          (["a", "b:x=y"], "no editor 'x' to rename"),
                          (["a", "c:ed=e2"], "measurement settings differ")):
        done = combine(tmp_path, *runs)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_pool_stacks_runs_of_other_cases_each_with_its_unedited_rows(tmp_path):
    tune = [{**row(c, m, 1.0 if m == "ed" else 0.0, 4.0), "split": "tune"} for c in (1, 2) for m in ("unedited", "ed")]
    test = [row(c, m, 0.5 if m == "ed" else 0.0, 3.0 if m == "ed" else 4.0) for c in (3, 4, 5)
            for m in ("unedited", "ed")]
    write_run(tmp_path / "a", tune, cases="cases.jsonl")
    write_run(tmp_path / "b", test, cases="cases.jsonl")
    done = combine(tmp_path, "a", "b", "--pool")
    assert done.returncode == 0, done.stderr
    methods = pd.read_csv(tmp_path / "out" / "methods.csv").set_index(["split", "method"])
    assert methods.loc[("all", "ed"), "cases"] == 5 and methods.loc[("all", "unedited"), "cases"] == 5
    assert methods.loc[("all", "ed"), "ES"] == pytest.approx((2 * 1.0 + 3 * 0.5) / 5)
    assert methods.loc[("tune", "ed"), "ES"] == 1.0 and methods.loc[("test", "ed"), "ES"] == 0.5
    entropy = pd.read_csv(tmp_path / "out" / "entropy.csv").set_index("method")
    assert entropy.loc["ed", "cases"] == 5 and entropy.loc["ed", "below_0.95"] == pytest.approx(3 / 5)
    assert "--pool" in (tmp_path / "out" / "report.md").read_text()
    # the same case in two pooled runs is refused
    write_run(tmp_path / "c", test[:2], cases="cases.jsonl")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out3"), "b", "c", "--pool"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "cases measured by two runs" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out3").exists()


def test_a_combined_folder_is_a_run_that_can_be_pooled(tmp_path):
    """Runs of other editors on the same cases, combined, then stacked with a run of other cases."""
    write_run(tmp_path / "a", [row(c, m, 1.0 if m == "ed" else 0.0, 4.0) for c in (1, 2) for m in ("unedited", "ed")],
              cases="test.jsonl")
    write_run(tmp_path / "b", [row(c, m, 0.5, 4.0) for c in (1, 2) for m in ("unedited", "ed2")], cases="test.jsonl")
    write_run(tmp_path / "c", [{**row(c, m, 0.0, 4.0), "split": "tune"} for c in (1, 2, 3)
                               for m in ("unedited", "ed", "ed2")], cases="tune.jsonl")
    assert combine(tmp_path, "a", "b").returncode == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["combined_from"] == ["a", "b"] and config["cases"] == "test.jsonl" and config["seed"] == 0
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "pooled"), "out", "c", "--pool"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    methods = pd.read_csv(tmp_path / "pooled" / "methods.csv").set_index(["split", "method"])
    assert methods.loc[("all", "ed2"), "cases"] == 5  # test cases 1, 2 and tune cases 1, 2, 3: five, none merged
    assert methods.loc[("all", "ed"), "ES"] == pytest.approx(2 / 5)
    pooled = pd.read_csv(tmp_path / "pooled" / "cases.csv")
    assert set(pooled["case_id"]) == {"test.jsonl:1", "test.jsonl:2", "tune.jsonl:1", "tune.jsonl:2", "tune.jsonl:3"}
    assert json.loads((tmp_path / "pooled" / "config.json").read_text())["cases"] == ["test.jsonl", "tune.jsonl"]
    # a pooled folder pooled again: its cases keep their names, once
    write_run(tmp_path / "d", [row(c, m, 0.0, 4.0) for c in (7,) for m in ("unedited", "ed", "ed2")], cases="more.jsonl")
    assert subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "twice"), "pooled", "d", "--pool"],
                          capture_output=True, text=True, cwd=tmp_path).returncode == 0
    assert set(pd.read_csv(tmp_path / "twice" / "cases.csv")["case_id"]) == set(pooled["case_id"]) | {"more.jsonl:7"}
    assert json.loads((tmp_path / "twice" / "config.json").read_text())["cases"] == [
        "more.jsonl", "test.jsonl", "tune.jsonl"]
    # listed second, a pooled folder keeps its unedited rows too
    assert subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "second"), "d", "pooled", "--pool"],
                          capture_output=True, text=True, cwd=tmp_path).returncode == 0
    second = pd.read_csv(tmp_path / "second" / "methods.csv").set_index(["split", "method"])
    assert second.loc[("all", "unedited"), "cases"] == 6
    # a folder without config.json: one line naming it
    (tmp_path / "out" / "config.json").unlink()
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "again"), "out", "c", "--pool"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode != 0 and "out: no config.json" in done.stderr and "Traceback" not in done.stderr
