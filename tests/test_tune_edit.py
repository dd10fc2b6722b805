"""benchmarks/tune_edit.py --editor subject: the clamp grid reaches ROME's v* and --fluency measures entropy."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import kneuron
from kneuron.data.counterfact import Case, Probe, save_cases
from kneuron.experiments.edit_bench import ngram_entropy

ROOT = Path(__file__).resolve().parent.parent


def _case():
    return Case(case_id=3, split="tune", relation="capital", subject="Ireland", target_true="the", target_new="capital",
                prompts=["The capital of Ireland is [MASK]", "The capital of Ireland was [MASK]"],
                paraphrases=["Dublin is in Europe. The capital of Ireland is [MASK]"],
                neighbours=[Probe("The capital of France is [MASK]", "the")],
                others=[Probe("She speaks [MASK]", "the")], generation=["The capital of Ireland is", "Ireland is"])


def test_clamps_and_fluency(llama_dir, bingrel_dir, tmp_path):
    save_cases([_case()], tmp_path / "cases.jsonl")
    env = {**os.environ, "KNEURON_DATA": str(bingrel_dir.parent), "KNEURON_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_edit.py"), "--editor", "subject",
                           "--counts", "4", "--clamp-norms", "1,4", "--fluency", "--model", str(llama_dir),
                           "--cases", "cases.jsonl", "--out", "out", "--threads", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.DataFrame([json.loads(line) for line in (tmp_path / "out" / "tune.jsonl").read_text().splitlines()])
    assert set(rows["clamp_norm"]) == {1.0, 4.0}  # as compute_rome recorded it: the grid reaches v*
    assert {"3:subject:4:C1:F", "3:subject:4:F", "3:layer:48:F", "3:layer:48:C1:F"} <= set(rows["key"])
    kn = kneuron.load(str(llama_dir), device="cpu")
    by_hand = sum(ngram_entropy(kn.generate(t, 50)) for t in _case().generation) / 2
    assert rows["entropy_generation_base"].tolist() == pytest.approx([by_hand] * len(rows))
    table = (tmp_path / "out" / "tune.md").read_text()
    assert "clamp_norm" in table and "entropy_x" in table and "--clamp-norms 1,4 --fluency" in table
    choice = json.loads((tmp_path / "out" / "choice.json").read_text())
    assert choice["clamp_norm"] in (1.0, 4.0) and choice["count"] == 4


def test_shards_share_one_journal_and_the_last_writes_the_table(llama_dir, bingrel_dir, tmp_path):
    other = _case()
    other.case_id, other.target_new = 4, "is"
    save_cases([_case(), other], tmp_path / "cases.jsonl")
    env = {**os.environ, "KNEURON_DATA": str(bingrel_dir.parent), "KNEURON_CACHE": str(tmp_path / "cache")}

    def tune(*extra):
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune_edit.py"), "--editor", "subject",
                               "--counts", "4", "--model", str(llama_dir), "--cases", "cases.jsonl", "--out", "out",
                               "--threads", "1", *extra], capture_output=True, text=True, cwd=tmp_path, env=env)

    done = tune("--shard", "2/2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the last one writes the table" in done.stdout and not (tmp_path / "out" / "tune.md").exists()
    journal = (tmp_path / "out" / "tune.jsonl").read_text().splitlines()
    assert {json.loads(line)["case_id"] for line in journal} == {4}
    done = tune("--shard", "1/2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert ", 2 tune cases" in (tmp_path / "out" / "tune.md").read_text()  # both cases in the table
    bad = tune("--shard", "3/2")
    assert bad.returncode != 0 and "--shard must be K/N with 1 <= K <= N" in bad.stderr and "Traceback" not in bad.stderr


def test_skip_run_leaves_out_the_cases_a_bench_run_measures(llama_dir, bingrel_dir, tmp_path):
    from kneuron.experiments.edit_bench import BenchConfig, measured_cases

    cases = [_case()]
    for i, new in ((4, "is"), (5, "of")):
        cases.append(_case())
        cases[-1].case_id, cases[-1].target_new = i, new
    save_cases(cases, tmp_path / "cases.jsonl")
    (tmp_path / "bench").mkdir()
    config = BenchConfig(model="m", cases="cases.jsonl", split="tune", sample=1, seed=3)
    (tmp_path / "bench" / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    skipped = {c.case_id for c in measured_cases(tmp_path / "bench")}
    assert len(skipped) == 1
    env = {**os.environ, "KNEURON_DATA": str(bingrel_dir.parent), "KNEURON_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, str(ROOT / "benchmarks" / "tune_edit.py"), "--editor", "subject", "--counts", "4",
            "--model", str(llama_dir), "--cases", "cases.jsonl", "--out", "out", "--threads", "1", "--steps", "4"]
    done = subprocess.run(args + ["--skip-run", "bench"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    tuned = {json.loads(line)["case_id"] for line in (tmp_path / "out" / "tune.jsonl").read_text().splitlines()}
    assert tuned == {3, 4, 5} - skipped
    assert "--skip-run bench" in (tmp_path / "out" / "tune.md").read_text()
    (tmp_path / "other.jsonl").write_bytes((tmp_path / "cases.jsonl").read_bytes())
    wrong = subprocess.run(args[:-8] + ["--cases", "other.jsonl", "--out", "o2", "--skip-run", "bench"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert wrong.returncode != 0 and "it measured cases.jsonl, not other.jsonl" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "o2" / "tune.jsonl").exists()


def _tune_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tune_edit", ROOT / "benchmarks" / "tune_edit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_choice_keeps_the_fluency_goal_when_fluency_was_measured():
    tune = _tune_module()
    row = {"layer": 10, "steps": 20, "context_fit": "10.0", "neurons": "subject", "count": 32}
    table = pd.DataFrame([{**row, "clamp_norm": 4.0, "S": 0.967, "others_kept": 0.90, "entropy_x": 0.909},
                          {**row, "clamp_norm": 3.0, "S": 0.959, "others_kept": 0.917, "entropy_x": 0.967},
                          {**row, "clamp_norm": 2.0, "S": 0.905, "others_kept": 0.933, "entropy_x": 0.978},
                          {**row, "clamp_norm": 3.0, "neurons": "random", "S": 0.99, "others_kept": 1.0,
                           "entropy_x": 1.0}])
    assert tune.choose_subject(table, 10)["clamp_norm"] == 3.0  # the best S that keeps entropy within 5%
    assert tune.choose_subject(table.drop(columns="entropy_x"), 10)["clamp_norm"] == 4.0  # no fluency: S (to 0.01)
    # a goal no subject row meets is dropped (fluency first), so a choice is always made
    dull = table.assign(entropy_x=0.5)
    assert tune.choose_subject(dull, 10)["clamp_norm"] == 4.0
    assert tune.choose_subject(dull.assign(others_kept=0.5), 10)["clamp_norm"] == 4.0
