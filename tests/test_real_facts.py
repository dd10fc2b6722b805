"""The real facts shipped with kneuron, model-aware sampling of a fact set, and the collateral-effect control."""

from __future__ import annotations

import json

import pytest
import torch

import kneuron
from kneuron.cli import main
from kneuron.data import REAL_FACTS, Fact, FactSet, Relation, load_facts, load_facts_jsonl
from kneuron.data.facts import ends_at_blank
from kneuron.data.sampling import sample_facts
from kneuron.errors import DataError
from kneuron.experiments import other_fact_effects


def test_real_facts_are_decoder_ready_and_documented():
    facts = load_facts("real")
    assert len(facts) == 21 and len(facts.by_relation()) == 5
    for f in facts:
        assert len(f.prompts) >= 4 and all(ends_at_blank(p) for p in f.prompts), f
        assert f.subject in " ".join(f.prompts)
    header = [ln for ln in REAL_FACTS.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
    for f in facts:  # every fact's checked probabilities are in the provenance header
        assert any(f" {f.subject} " in ln and f" {f.object} " in ln and "SmolLM2" in ln for ln in header), f


def _toy_facts() -> FactSet:
    rows = [("capital", "France", "Paris"), ("capital", "Ireland", "Dublin"), ("capital", "Atlantis", "Paris"),
            ("capital", "Italy", "Paris"), ("capital", "Spain", "Paris"),
            ("born", "Ann", "Paris"), ("born", "Bob", "Paris"), ("born", "Cy", "Dublin")]
    facts = [Fact(r, s, o, [f"The {r} of {s} is [MASK].", f"[MASK] is the {r} of {s}.", f"{s}: [MASK]."])
             for r, s, o in rows]
    return FactSet(facts, {"capital": Relation("capital", "capital", "1-1"), "born": Relation("born")}, "toy")


def test_sample_keeps_single_token_objects_and_decoder_prompts(tiny_tokenizer):
    facts = _toy_facts()
    sample, reports = sample_facts(facts, per_relation=2, seed=3, tokenizer=tiny_tokenizer, causal=True)
    # "Dublin" is two tokens for the tiny tokenizer: never sampled
    assert all(f.object == "Paris" for f in sample)
    assert [len(f.prompts) for f in sample] == [2] * len(sample)  # "[MASK] is the ..." does not end at the blank
    assert all(ends_at_blank(p) for f in sample for p in f.prompts)
    by_rel = {r.relation: r for r in reports}
    assert (by_rel["capital"].facts, by_rel["capital"].eligible, by_rel["capital"].sampled) == (5, 4, 2)
    assert (by_rel["born"].eligible, by_rel["born"].sampled) == (2, 2)
    # masked LM: every prompt kept
    masked, _ = sample_facts(facts, per_relation=10, seed=3, tokenizer=tiny_tokenizer)
    assert len(masked) == 6 and all(len(f.prompts) == 3 for f in masked)


def test_sample_is_seeded_and_relations_are_drawn_independently(tiny_tokenizer):
    facts = _toy_facts()
    a, _ = sample_facts(facts, 2, seed=1, tokenizer=tiny_tokenizer)
    b, _ = sample_facts(facts, 2, seed=1, tokenizer=tiny_tokenizer)
    assert [f.key for f in a] == [f.key for f in b]
    draws = {tuple(f.subject for f in sample_facts(facts, 2, seed=s, tokenizer=tiny_tokenizer)[0].by_relation()
                   ["capital"]) for s in range(12)}
    assert len(draws) > 1  # the seed matters
    alone, _ = sample_facts(facts.subset(["capital"]), 2, seed=1, tokenizer=tiny_tokenizer)
    assert [f.key for f in alone] == [f.key for f in a.by_relation()["capital"]]
    order = [f.subject for f in facts]
    picked = [f.subject for f in a.by_relation()["capital"]]
    assert picked == sorted(picked, key=order.index)  # source order kept


def test_sample_rejects_bad_sizes():
    with pytest.raises(DataError, match="per relation"):
        sample_facts(_toy_facts(), 0, seed=0)
    with pytest.raises(DataError, match="min_prompts"):
        sample_facts(_toy_facts(), 1, seed=0, min_prompts=0)


def _facts_file(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_cli_sample_writes_a_reloadable_file_with_its_settings(llama_dir, tmp_path, capsys):
    src = _facts_file(tmp_path / "src.jsonl", [
        {"relation": "capital", "subject": s, "object": o,
         "prompts": [f"The capital of {s} is [MASK].", f"[MASK] is in {s}.", f"{s} has [MASK]."]}
        for s, o in [("Ireland", "Dublin"), ("France", "the"), ("Italy", "capital"), ("Germany", "of")]])
    out = tmp_path / "sample.jsonl"
    rc = main(["data", "sample", str(src), "--model", str(llama_dir), "-n", "2", "--seed", "5", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    sample = load_facts_jsonl(out)  # "Dublin" is two tokens for this tokenizer; the three others are one
    assert len(sample) == 2 and {f.object for f in sample} < {"the", "capital", "of"}
    assert all(len(f.prompts) == 2 for f in sample)  # decoder: 2 of 3 prompts end at the blank
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# kneuron data sample") and "--seed 5" in text and "causal LM" in text
    assert not (tmp_path / "sample.jsonl.tmp").exists()
    for bad, phrase in [(["-n", "0"], "--per-relation"), (["-n", "1", "--out", str(tmp_path / "x.txt")], ".jsonl")]:
        args = ["data", "sample", str(src), "--model", str(llama_dir), "--out", str(out)] + bad
        rc = main(args)
        err = capsys.readouterr().err
        assert rc != 0 and phrase in err and "Traceback" not in err


def test_other_fact_effects_match_one_intervention_at_a_time(llama_dir):
    kn = kneuron.load(str(llama_dir), device="cpu")
    facts = FactSet([Fact("capital", "Ireland", "Dublin", ["The capital of Ireland is [MASK]."]),
                     Fact("capital", "France", "Paris", ["The capital of France is [MASK]."]),
                     Fact("lang", "France", "French", ["She speaks [MASK].", "In France she speaks [MASK]."]),
                     Fact("city", "Italy", "Rome", ["It is in [MASK]."])],
                    {}, "toy")
    sets = {"kn": {0: [(0, 3), (2, 7)], 2: [(1, 5)]}, "none": {}}
    table = other_fact_effects(kn, facts, sets, seed=4, prompts_per_fact=2)
    assert set(table["method"]) == {"kn"} and set(table["fact"]) == {0, 2}  # facts without neurons: no rows
    for row in table.to_dict("records"):
        assert facts.facts[row["other_fact"]].relation != facts.facts[row["fact"]].relation
        other = facts.facts[row["other_fact"]]
        prompt = other.prompts[row["prompt"]]
        assert row["p_orig"] == pytest.approx(kn.probability(prompt, other.object), rel=1e-5)
        with kn.suppress(sets["kn"][row["fact"]]):
            assert row["p_other"] == pytest.approx(kn.probability(prompt, other.object), rel=1e-5)
    assert (table.groupby("fact").size() == 2).all()
    again = other_fact_effects(kn, facts, sets, seed=4, prompts_per_fact=2)
    assert again.equals(table)
    assert torch.is_grad_enabled()


def test_demo_on_a_model_directory_reports_collateral_effects(llama_dir, tmp_path, capsys):
    rows = [{"relation": rel, "subject": s, "object": o,
             "prompts": [f"The {rel} of {s} is [MASK].", f"{s} and its {rel}, [MASK].", f"Of {s}, the {rel} is [MASK].",
                         f"We know {s}: [MASK]."]}
            for rel, s, o in [("capital", "Ireland", "Dublin"), ("capital", "France", "Paris"),
                              ("speaks", "Italy", "French"), ("speaks", "Germany", "Rome")]]
    data = _facts_file(tmp_path / "facts.jsonl", rows)
    out = tmp_path / "demo"
    rc = main(["demo", "--model", str(llama_dir), "--data", str(data), "--out", str(out), "--no-progress",
               "--other-prompts", "3", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(llama_dir) and summary["other_prompts_per_fact"] == 3
    assert set(summary["mean_change_percent"]) == {"kn", "baseline", "random"}
    assert (out / "other_effects.csv").is_file()
    assert all("other" in v for v in summary["mean_change_percent"].values())  # the collateral column
    rc = main(["demo", "--model", str(llama_dir), "--causal", "--out", str(tmp_path / "x")])
    assert rc != 0 and "--causal" in capsys.readouterr().err
