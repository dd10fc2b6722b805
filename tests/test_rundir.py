"""The run directory type: the only reader and writer of a run's files, extras included; the
`other_relations` specific rule in discovery and find_neurons."""

import json

import pandas as pd
import pytest

import kneuron
from kneuron.data import load_facts_jsonl
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron
from kneuron.runs import DiscoveryConfig, RunDir, discover
from kneuron.selection import specific_sets


def test_extras_roundtrip_and_names(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.extras() == [] and not run.has_extra("acts")
    df = pd.DataFrame({"layer": [0, 1], "value": [0.5, -1.0]})
    path = run.write_table("acts", df)
    assert path == tmp_path / "run" / "extras" / "acts.parquet"
    assert run.read_table("acts").equals(df)
    run.write_json("vocab.top", {"L0.1": ["a", "b"]})
    assert run.read_json("vocab.top") == {"L0.1": ["a", "b"]}
    assert run.extras() == ["acts", "vocab.top"] and run.has_extra("acts")
    assert not list((tmp_path / "run" / "extras").glob("*.tmp"))  # atomic: no temp file left
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(KneuronError, match="bad extra name"):
            run.write_table(bad, df)
    with pytest.raises(KneuronError, match="no extra table 'missing'"):
        run.read_table("missing")


def test_unfinished_and_missing_runs_say_so(tmp_path):
    with pytest.raises(KneuronError, match="not a discovery run"):
        RunDir(tmp_path).config()
    with pytest.raises(KneuronError, match="not a finished discovery run"):
        RunDir(tmp_path).load()
    assert RunDir(tmp_path).records() == {}


def test_old_config_without_new_keys_loads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "m", "data": "d", "steps": 20}))
    config = RunDir(tmp_path).config()
    assert config.model == "m" and config.specific == "none"
    RunDir(tmp_path).check_resumable(DiscoveryConfig(model="m", data="d", kneuron_version="x"))


def test_specific_sets_drop_neurons_of_other_relations():
    a, b, c = Neuron(0, 1), Neuron(1, 2), Neuron(2, 3)
    got = specific_sets(["r1", "r1", "r2"], [[a, b], [b], [c, a]])
    assert got == [[b], [b], [c]]  # b is shared within r1 only: kept; a is in r2 too: dropped


def test_discover_specific_rows_follow_the_rule(setup, tmp_path):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    config = DiscoveryConfig(model=str(model_dir), data=str(path), specific="other_relations")
    table = discover(kn, load_facts_jsonl(path), tmp_path / "run", config, progress=False).neurons
    kn_rows = table[table.method == "kn"]
    facts = sorted(set(kn_rows.fact))
    sets = [[Neuron(r.layer, r.index) for r in kn_rows[kn_rows.fact == f].itertuples()] for f in facts]
    rels = [kn_rows[kn_rows.fact == f].relation.iloc[0] for f in facts]
    expect = specific_sets(rels, sets)
    spec = table[table.method == "kn_specific"]
    for f, want in zip(facts, expect):
        assert [Neuron(r.layer, r.index) for r in spec[spec.fact == f].itertuples()] == want
    assert RunDir(tmp_path / "run").config().specific == "other_relations"
    # The paper-faithful rows are those of a run without the option.
    plain = discover(kn, load_facts_jsonl(path), tmp_path / "plain", DiscoveryConfig(
        model=str(model_dir), data=str(path)), progress=False).neurons
    assert plain.equals(table[table.method != "kn_specific"].reset_index(drop=True))
    with pytest.raises(KneuronError, match="unknown specific rule"):
        discover(kn, load_facts_jsonl(path), tmp_path / "bad", DiscoveryConfig(
            model=str(model_dir), data=str(path), specific="nope"), progress=False)


def test_find_neurons_specific_against(setup):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    facts = load_facts_jsonl(path).facts
    own, other = facts[0], next(f for f in facts if f.relation != facts[0].relation)
    plain = kn.find_neurons(own.prompts, own.object, p=0.3)
    theirs = set(kn.find_neurons(other.prompts, other.object, p=0.3))
    got = kn.find_neurons(own.prompts, own.object, p=0.3, specific_against=[(other.prompts, other.object)],
                          specific_rule="other_relations")
    assert got == [n for n in plain if n not in theirs]
