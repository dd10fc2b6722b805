"""Discovery runs: the table, determinism, and resumption after Ctrl-C and kill -9."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from tiny_facts import PAIRS, TEMPLATES

import kneuron
from kneuron.data import load_facts_jsonl, save_facts_jsonl
from kneuron.data.facts import Fact, FactSet
from kneuron.errors import KneuronError
from kneuron.runs import DiscoveryConfig, discover, load_run
from kneuron.runs import fact_records as discover_module


def config_for(setup, **kw):
    root, model_dir, path = setup
    return DiscoveryConfig(model=str(model_dir), data=str(path), **kw)


def run(setup, out, **kw):
    root, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    return discover(kn, load_facts_jsonl(path), out, config_for(setup, **kw), progress=False, facts_per_batch=2)


def test_table_and_summary(setup, tmp_path):
    res = run(setup, tmp_path / "run")
    table = pd.read_parquet(tmp_path / "run" / "neurons.parquet")
    assert list(table.columns) == ["relation", "fact", "subject", "object", "layer", "index", "method"]
    assert set(table["method"]) <= {"kn", "baseline"} and len(table) > 0
    assert table.equals(res.neurons)
    summary = json.loads((tmp_path / "run" / "relations.json").read_text())
    assert summary["located"]["skipped"] == 1  # "Paris Texas" is not a single token
    assert 0.45 - 1e-9 <= summary["capital"]["kn"]["p"] <= 0.95 + 1e-9
    config, table2, _ = load_run(tmp_path / "run")
    assert config.steps == 20 and table2.equals(table)
    # Each fact's kn set is what find_neurons gives with the relation's adapted p.
    kn = kneuron.load(config.model, device="cpu")
    facts = load_facts_jsonl(config.data)
    f = facts.facts[0]
    expect = kn.find_neurons(f.prompts, f.object, p=summary["capital"]["kn"]["p"])
    got = [(r.layer, r.index) for r in table[(table.fact == 0) & (table.method == "kn")].itertuples()]
    assert got == [tuple(n) for n in expect]


def test_relation_with_every_fact_skipped_has_no_p(setup, tmp_path, capsys):
    from kneuron.cli import main

    root, model_dir, path = setup
    facts = load_facts_jsonl(path)
    only_skipped = [Fact("texas", f.subject, f.object, f.prompts) for f in facts.facts if f.object == "Paris Texas"]
    data = save_facts_jsonl(FactSet(facts.facts[:2] + only_skipped), tmp_path / "f.jsonl")
    assert main(["discover", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    summary = json.loads((tmp_path / "r" / "relations.json").read_text())
    assert summary["texas"]["skipped"] == summary["texas"]["facts"] == 1
    assert summary["texas"]["kn"]["p"] is None and summary["texas"]["kn"]["neurons_per_fact"] is None
    assert summary["capital"]["kn"]["p"] is not None
    row = next(line for line in capsys.readouterr().out.splitlines() if "texas" in line)
    assert row.count("-") >= 4 and "0.45" not in row


def test_deterministic_and_config_guard(setup, tmp_path):
    a = run(setup, tmp_path / "a").neurons
    b = run(setup, tmp_path / "b").neurons
    assert a.equals(b)
    with pytest.raises(KneuronError, match="steps=20, not 10|steps"):
        run(setup, tmp_path / "a", steps=10)


def test_ctrl_c_resume_identical(setup, tmp_path, monkeypatch):
    full = run(setup, tmp_path / "full").neurons
    real = discover_module.attribute_facts
    calls = {"n": 0}

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(discover_module, "attribute_facts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path / "resumed")
    lines = (tmp_path / "resumed" / "attributions.jsonl").read_text().splitlines()
    assert len(lines) == 4  # two batches of two facts were finished
    monkeypatch.setattr(discover_module, "attribute_facts", real)
    res = run(setup, tmp_path / "resumed")
    assert res.resumed_facts == 4
    assert res.neurons.equals(full)
    recs = [json.loads(x)["fact"] for x in (tmp_path / "resumed" / "attributions.jsonl").read_text().splitlines()]
    assert sorted(recs) == list(range(10))  # nothing lost, nothing twice


def test_truncated_line_is_dropped_on_resume(setup, tmp_path):
    full = run(setup, tmp_path / "full").neurons
    log = tmp_path / "cut" / "attributions.jsonl"
    run(setup, tmp_path / "cut")
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # a write cut by a crash
    (tmp_path / "cut" / "neurons.parquet").unlink()
    res = run(setup, tmp_path / "cut")
    assert res.resumed_facts == 3 and res.neurons.equals(full)


def test_kill_9_then_resume_identical(setup, tmp_path):
    root, model_dir, path = setup
    full = run(setup, tmp_path / "full").neurons
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "kneuron", "discover", "--model", str(model_dir), "--data", str(path),
           "--out", str(out), "--no-progress", "--device", "cpu"]
    env = dict(os.environ, KNEURON_SLOW_FACTS_FOR_TESTS="0.3", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "attributions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(log.read_text().splitlines())
    assert 2 <= done_before < 10 and not (out / "neurons.parquet").exists()
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    table = pd.read_parquet(out / "neurons.parquet")
    assert table.equals(full)
    recs = [json.loads(x)["fact"] for x in log.read_text().splitlines()]
    assert sorted(recs) == list(range(10))


def test_causal_model_skips_prompts_not_ending_at_blank(tmp_path):
    from tiny_decoders import save_tiny_decoder

    from kneuron.experiments.rundata import RunData

    model_dir = save_tiny_decoder("gpt2", tmp_path / "gpt2")
    facts = FactSet([Fact("capital", s, o, [t.replace("[X]", s) for t in TEMPLATES]) for s, o in PAIRS["capital"]])
    kn = kneuron.load(str(model_dir), device="cpu")
    path = save_facts_jsonl(facts, tmp_path / "facts.jsonl")
    res = discover(kn, facts, tmp_path / "run", DiscoveryConfig(model=str(model_dir), data=str(path)), progress=False)
    # Only the last template ("[MASK] is the country of [X] .") does not end at the blank.
    assert res.relations["capital"]["skipped_prompts"] == len(facts)
    assert res.relations["capital"]["skipped"] == 0
    run = RunData.load(tmp_path / "run")
    assert [len(f.prompts) for f in run.facts.facts] == [4] * len(facts)
    assert all(kn.ends_at_blank(p) for f in run.facts.facts for p in f.prompts)
