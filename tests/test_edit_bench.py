"""`kneuron edit bench`: every editor applied, measured against a by-hand count, reverted bit for bit, resumed."""

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import kneuron
from kneuron.cli import main
from kneuron.data.counterfact import Case, Probe, load_cases, sample_cases, save_cases
from kneuron.edits.subject import DEFAULT_CLAMP_NORM, DEFAULT_CONTEXT_FIT
from kneuron.errors import KneuronError
from kneuron.experiments.edit_bench import (
    BenchConfig,
    Editors,
    harmonic,
    measured_cases,
    model_fingerprint,
    ngram_entropy,
    run_bench,
    select_cases,
    summarize,
)


def _cases():
    base = dict(relation="capital", paraphrases=["Berlin is the capital of Germany. The capital of Ireland is [MASK]"],
                neighbours=[Probe("The capital of France is [MASK]", "the"), Probe("She speaks [MASK]", "of")],
                others=[Probe("She speaks [MASK]", "the"), Probe("Rome is in [MASK]", "the")],
                generation=["The capital of Ireland is", "Ireland is"])
    return [
        Case(case_id=0, split="tune", subject="Ireland", target_true="the", target_new="capital",
             prompts=["The capital of Ireland is [MASK]", "The capital of Ireland is [MASK].",
                      "Edmonton is the capital of Alberta. The capital of Ireland is [MASK]"], **base),
        Case(case_id=1, split="test", subject="Ireland", target_true="the", target_new="is",
             prompts=["The capital of Ireland is [MASK]", "The capital of Ireland was [MASK]",
                      "Ireland is in [MASK]"], **base),
    ]


def test_metrics_by_hand_revert_and_resume(llama_dir, tmp_path):
    kn = kneuron.load(str(llama_dir), device="cpu")
    cases = _cases()
    before = model_fingerprint(kn)
    config = BenchConfig(model=str(llama_dir), cases="cases.jsonl", methods=["kn", "kn_paper", "random"], steps=4, p=0.3, min_prompts=1, max_scale=64.0, margin=1.0,
                         generation_tokens=6, ppl_sentences=3, bootstrap=50)
    frame = run_bench(kn, cases, config, tmp_path / "out")
    assert model_fingerprint(kn) == before  # every edit reverted
    checks = json.loads((tmp_path / "out" / "revert_checks.json").read_text())
    assert set(checks) == {"0", "1"} and all(c["equal"] for c in checks.values())
    assert set(frame["method"]) == {"unedited", "kn", "kn_paper", "random"} and len(frame) == 8
    # The unedited row by hand: ES = share of edit prompts where p(new) > p(true).
    for case in cases:
        logits = kn.blank_logits(case.prompts)
        new, true = kn.answer_id(case.target_new), kn.answer_id(case.target_true)
        es = float((logits[:, new] > logits[:, true]).float().mean())
        row = frame[(frame["case_id"] == case.case_id) & (frame["method"] == "unedited")].iloc[0]
        assert row["ES"] == pytest.approx(es)
        nl = kn.blank_logits([x.prompt for x in case.neighbours])
        same, other = float(nl[0, true] > nl[0, new]), float(nl[1, kn.answer_id("of")] > nl[1, new])
        assert row["NS"] == pytest.approx((same + other) / 2)
        assert row["NS_same"] == same and row["NS_other"] == other  # "the" is the true answer, "of" is not
        assert row["S"] == pytest.approx(harmonic([row["ES"], row["PS"], row["NS"]]))
        # fluency over every generation beginning: the first is the edit prompt's text, whose generation
        # gives `entropy`; "Ireland is" is the second
        greedy = [kn.model.generate(torch.tensor([kn.encode(t).ids]), max_new_tokens=6, do_sample=False,
                                    pad_token_id=kn.tokenizer.eos_token_id)[0, len(kn.encode(t).ids):].tolist()
                  for t in case.generation]
        assert row["entropy"] == pytest.approx(ngram_entropy(greedy[0]))
        assert row["entropy_generation"] == pytest.approx((ngram_entropy(greedy[0]) + ngram_entropy(greedy[1])) / 2)
        assert row["entropy_generation_rel"] == 1.0
    # kn and random edit the same number of neurons with the same strength.
    for cid in (0, 1):
        k = frame[(frame.case_id == cid) & (frame.method == "kn")].iloc[0]
        r = frame[(frame.case_id == cid) & (frame.method == "random")].iloc[0]
        assert k["edited"] == 1 and r["edited"] == 1
        if k["edited"]:
            assert r["neurons"] == k["neurons"] and r["scale"] == pytest.approx(k["scale"])
            # The fitted edit makes the new answer top-1 on every edit prompt when it reached its goal.
            if k["reached"]:
                assert k["success"] == 1.0 and k["ES"] == 1.0
    # A rerun resumes: nothing is recomputed, the rows are the same.
    lines = (tmp_path / "out" / "journal.jsonl").read_text().count("\n")
    again = run_bench(kn, cases, config, tmp_path / "out")
    assert (tmp_path / "out" / "journal.jsonl").read_text().count("\n") == lines
    pd.testing.assert_frame_equal(frame.sort_values("key").reset_index(drop=True),
                                  again.sort_values("key").reset_index(drop=True))
    # Other settings in the same directory are refused.
    with pytest.raises(KneuronError, match="other settings"):
        run_bench(kn, cases, BenchConfig(**{**config.__dict__, "margin": 2.0}), tmp_path / "out")
    table = summarize(frame, reps=50)
    assert set(table["split"]) == {"tune", "test"}
    unedited = table[(table.split == "tune") & (table.method == "unedited")].iloc[0]
    assert unedited["ES"] == pytest.approx(frame[(frame.split == "tune") & (frame.method == "unedited")]["ES"].mean())
    assert unedited["entropy_generation_rel"] == pytest.approx(1.0)


def test_an_edit_that_cannot_reach_its_goal_is_declined(llama_dir, tmp_path):
    kn = kneuron.load(str(llama_dir), device="cpu")
    before = model_fingerprint(kn)
    config = BenchConfig(model=str(llama_dir), cases="c", methods=["kn", "random"], steps=4, p=0.3, min_prompts=1,
                         max_scale=1e-4, generation_tokens=4, ppl_sentences=2)
    frame = run_bench(kn, _cases()[:1], config, tmp_path / "d")
    kn_row = frame[frame.method == "kn"].iloc[0]
    base = frame[frame.method == "unedited"].iloc[0]
    assert kn_row["declined"] == 1 and kn_row["edited"] == 0 and not kn_row["reached"]
    assert kn_row["ES"] == base["ES"] and kn_row["NS"] == base["NS"]  # scored as the unedited model
    assert frame[frame.method == "random"].iloc[0]["declined"] == 1
    assert model_fingerprint(kn) == before


def test_subject_edit_row_edits_its_count_of_neurons_and_reverts(llama_dir, bingrel_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))  # the key statistics of this tiny model
    kn = kneuron.load(str(llama_dir), device="cpu")
    before = model_fingerprint(kn)
    config = BenchConfig(model=str(llama_dir), cases="c", methods=["kn_subject"], subject_count=5, rome_layer=1,
                         generation_tokens=4, ppl_sentences=2, bootstrap=20)
    frame = run_bench(kn, _cases()[:1], config, tmp_path / "s")
    assert model_fingerprint(kn) == before
    row = frame[frame.method == "kn_subject"].iloc[0]
    base = frame[frame.method == "unedited"].iloc[0]
    assert row["edited"] == 1 and row["neurons"] == 5 and row["layer"] == 1
    # the same edit, planned again by hand, raises p(new) on the edit prompts as the row reports
    from kneuron.edits.subject import plan_subject_update

    case = _cases()[0]
    edit = plan_subject_update(kn, case.subject, case.prompts, case.target_new, count=5, layer=1)
    with edit.apply(kn):
        em = float((kn.probabilities(case.prompts, [case.target_new] * 3)
                    - kn.probabilities(case.prompts, [case.target_true] * 3)).mean())
    # (a random tiny model barely carries the subject to the blank, so the edit moves p little here;
    # tests/test_subject_edit.py checks that it raises p(new) where the prompt ends at the subject)
    assert row["EM"] == pytest.approx(em, abs=1e-6) and row["EM"] != base["EM"]
    assert model_fingerprint(kn) == before


def test_subject_random_control_inserts_the_same_pair_through_other_neurons(llama_dir, bingrel_dir, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    kn = kneuron.load(str(llama_dir), device="cpu")
    before = model_fingerprint(kn)
    config = BenchConfig(model=str(llama_dir), cases="c", methods=["kn_subject", "subject_random"], subject_count=5,
                         subject_steps=3, subject_context_fit=None, rome_layer=1, generation_tokens=4,
                         ppl_sentences=2, bootstrap=20)
    case = _cases()[0]
    editors = Editors(kn, config, [case])
    chosen, _ = editors.build("kn_subject", case)
    control, info = editors.build("subject_random", case)
    again, _ = Editors(kn, config, [case]).build("subject_random", case)
    assert editors.subject_update(case).info["steps"] == 3  # --subject-steps reaches ROME's v*
    assert len(control.neurons) == 5 and {n.layer for n in control.neurons} == {1}
    assert set(control.neurons) != set(chosen.neurons) and control.neurons == again.neurons  # seeded per case
    # the same k* -> v* pair: both edits map the subject's key to v* exactly
    update = editors.subject_update(case)
    assert float(update.residual(kn).norm()) > 1e-2 * float(update.value.norm())
    for edit in (chosen, control):
        with edit.apply(kn):
            assert float(update.residual(kn).norm()) < 1e-4 * float(update.value.norm())
    assert info["key_share"] < chosen.info["key_share"]  # the subject's neurons carry more of its key
    # --subject-context-fit reaches both editors; the default is the subject module's
    fitted = dataclasses.replace(config, subject_context_fit=0.5)
    assert BenchConfig(model="m", cases="c").subject_context_fit == DEFAULT_CONTEXT_FIT
    for method in ("kn_subject", "subject_random"):
        assert Editors(kn, fitted, [case]).build(method, case)[0].info["context_fit"] == 0.5
    # --subject-clamp-norm reaches ROME's v* (a tighter bound: a smaller change); the default is the subject module's
    assert BenchConfig(model="m", cases="c").subject_clamp_norm == DEFAULT_CLAMP_NORM
    assert editors.subject_update(case).info["clamp_norm"] == DEFAULT_CLAMP_NORM
    tight = Editors(kn, dataclasses.replace(config, subject_clamp_norm=0.05), [case]).subject_update(case)
    assert tight.info["clamp_norm"] == 0.05 and float(tight.delta.norm()) < float(update.delta.norm())
    frame = run_bench(kn, [case], config, tmp_path / "r")
    assert set(frame.method) == {"unedited", "kn_subject", "subject_random"}
    assert model_fingerprint(kn) == before


def test_generation_entropy_is_the_mean_over_every_beginning_and_reuses_the_first(llama_dir, monkeypatch):
    from kneuron.experiments.edit_bench import Measure

    kn = kneuron.load(str(llama_dir), device="cpu")
    case = _cases()[0]
    looped, varied = [5, 5, 5, 5, 5, 5], [1, 2, 3, 4, 5, 6]
    asked = []

    def fake(self, prompt):
        asked.append(prompt)
        return looped if prompt == "Ireland is" else varied

    monkeypatch.setattr(Measure, "generate", fake)
    row = Measure(kn, [], 6).case(case, None)
    assert row["entropy"] == ngram_entropy(varied) > 0 and ngram_entropy(looped) == 0
    assert row["entropy_generation"] == pytest.approx(ngram_entropy(varied) / 2)
    assert asked == [case.prompts[0], "Ireland is"]  # the edit prompt's text is generated once, not twice


def test_ngram_entropy_and_harmonic_mean():
    assert ngram_entropy([1, 1, 1, 1, 1]) == 0.0
    # Four distinct bigrams and three distinct trigrams: log2 4 and log2 3, weighted 2/3 and 4/3.
    assert ngram_entropy([1, 2, 3, 4, 5]) == pytest.approx((2 / 3 * 2 + 4 / 3 * math.log2(3)) / 2)
    assert harmonic([1.0, 0.5, 1.0]) == pytest.approx(0.75)
    assert harmonic([1.0, 0.0, 1.0]) == 0.0


def test_relative_fluency_is_a_ratio_of_means_not_dominated_by_a_looping_case():
    # Case 2's unedited generation is a repetition loop (entropy 0.1): its per-case ratio is 30.
    rows = []
    for case, (base, edited) in enumerate([(4.0, 4.0), (5.0, 5.0), (0.1, 3.0)]):
        for method, value in (("unedited", base), ("random", edited)):
            rows.append({"split": "test", "method": method, "case_id": case, "ES": 0.0, "PS": 0.0, "NS": 1.0,
                         "edited": 1, "entropy": value, "ppl": 10.0, "entropy_rel": value / base, "ppl_rel": 1.0})
    table = summarize(pd.DataFrame(rows), reps=200).set_index("method")
    assert table.loc["random", "entropy_rel"] == pytest.approx(12.0 / 9.1)  # not the mean ratio (1 + 1 + 30) / 3
    assert table.loc["unedited", "entropy_rel"] == pytest.approx(1.0)
    assert table.loc["random", "ppl_rel"] == pytest.approx(1.0)
    assert table.loc["random", "entropy_rel_lo"] <= table.loc["random", "entropy_rel"] <= table.loc["random", "entropy_rel_hi"]


def test_cli_bench_end_to_end_and_bad_input(llama_dir, tmp_path, capsys):
    cases = save_cases(_cases(), tmp_path / "cases.jsonl")
    out = tmp_path / "cli"
    assert main(["edit", "bench", "--model", str(llama_dir), "--cases", str(cases), "--methods", "kn,random",
                 "--out", str(out), "--steps", "4", "--generation-tokens", "5", "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "edit bench (1 cases)" in printed
    for name in ("methods.csv", "cases.csv", "config.json", "methods.png", "report.md"):
        assert (out / name).is_file(), name
    methods = pd.read_csv(out / "methods.csv")
    assert list(methods["method"]) == ["unedited", "kn", "random"] and set(methods["split"]) == {"test"}
    assert "CPU:" in (out / "report.md").read_text()
    # --exclude-tuned leaves out the facts another file tuned on: case 1 (Ireland, capital) is one
    tuned = _cases()[1:]
    tuned[0].split = "tune"
    tuned_file = save_cases(tuned, tmp_path / "tuned.jsonl")
    assert main(["edit", "bench", "--model", str(llama_dir), "--cases", str(cases), "--methods", "random",
                 "--out", str(tmp_path / "z"), "--exclude-tuned", str(tuned_file)]) == 2
    assert "no cases" in capsys.readouterr().err  # both cases are Ireland's capital: none is left
    tuned[0].subject = "Iceland"
    save_cases(tuned, tuned_file)
    assert main(["edit", "bench", "--model", str(llama_dir), "--cases", str(cases), "--methods", "random",
                 "--out", str(tmp_path / "z"), "--exclude-tuned", str(tuned_file), "--steps", "4",
                 "--generation-tokens", "5"]) == 0
    assert "left out 0 of 2 cases" in capsys.readouterr().out
    assert json.loads((tmp_path / "z" / "config.json").read_text())["exclude_tuned"] == "tuned.jsonl"
    assert main(["edit", "bench", "--model", str(llama_dir), "--cases", str(cases), "--methods", "kn,memit",
                 "--out", str(tmp_path / "x")]) == 2
    assert "unknown edit method 'memit'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"case_id": 0, "split": "tune"}) + "\n")
    assert main(["edit", "bench", "--model", str(llama_dir), "--cases", str(bad), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "Traceback" not in err
    assert not (tmp_path / "y").exists()


def test_bench_reverts_the_edit_when_a_measurement_fails(llama_dir, tmp_path, monkeypatch):
    from kneuron.experiments import edit_bench

    kn = kneuron.load(str(llama_dir), device="cpu")
    before = model_fingerprint(kn)
    real = edit_bench.Measure.case
    edited = []

    def failing(self, case, base):
        if base is None:
            return real(self, case, base)
        edited.append(model_fingerprint(self.kn) != before)  # the edit is in the weights now
        raise RuntimeError("boom")

    monkeypatch.setattr(edit_bench.Measure, "case", failing)
    config = BenchConfig(model=str(llama_dir), cases="c", methods=["kn_paper"], steps=4, p=0.3, min_prompts=1, generation_tokens=4,
                         ppl_sentences=2)
    with pytest.raises(RuntimeError, match="boom"):
        run_bench(kn, [_cases()[0]] * 1, config, tmp_path / "o", )
    assert edited == [True]
    assert model_fingerprint(kn) == before


def test_shards_of_one_run_give_the_rows_of_one_process(llama_dir, tmp_path, capsys):
    kn = kneuron.load(str(llama_dir), device="cpu")
    cases = _cases()
    config = BenchConfig(model=str(llama_dir), cases="cases.jsonl", methods=["kn", "kn_specific", "random"], steps=4,
                         p=0.3, min_prompts=1, max_scale=64.0, margin=1.0, generation_tokens=6, ppl_sentences=3,
                         bootstrap=50, specific_facts=1)
    whole = run_bench(kn, cases, config, tmp_path / "whole")
    assert run_bench(kn, cases, config, tmp_path / "shared", shard=(2, 2)) is None  # case 0 is not measured yet
    journal = (tmp_path / "shared" / "journal.jsonl").read_text()
    assert {json.loads(line)["case_id"] for line in journal.splitlines()} == {1}
    parts = run_bench(kn, cases, config, tmp_path / "shared", shard=(1, 2))
    timing = ["seconds", "edit_seconds"]
    pd.testing.assert_frame_equal(
        whole.drop(columns=timing).sort_values("key").reset_index(drop=True),
        parts.drop(columns=timing)[list(whole.drop(columns=timing).columns)].sort_values("key").reset_index(drop=True))
    checks = json.loads((tmp_path / "shared" / "revert_checks.json").read_text())
    assert set(checks) == {"0", "1"}  # the first case's shard and the last case's shard both checked
    with pytest.raises(KneuronError, match="1 <= k <= n"):
        run_bench(kn, cases, config, tmp_path / "shared", shard=(3, 2))
    # the CLI: a shard that is not last says so and writes no table; a bad --shard writes nothing
    path = save_cases(cases, tmp_path / "cases.jsonl")
    args = ["edit", "bench", "--model", str(llama_dir), "--cases", str(path), "--methods", "random", "--steps", "4",
            "--generation-tokens", "5"]
    assert main([*args, "--out", str(tmp_path / "cli"), "--shard", "1/2"]) == 0
    assert "other shards' cases are not yet" in capsys.readouterr().out
    assert not (tmp_path / "cli" / "methods.csv").exists()
    assert main([*args, "--out", str(tmp_path / "cli"), "--shard", "2/2"]) == 0
    assert (tmp_path / "cli" / "methods.csv").is_file()
    for bad in ("0/2", "3/2", "1", "a/b"):
        assert main([*args, "--out", str(tmp_path / "bad"), "--shard", bad]) == 2
        assert f"--shard must be K/N with 1 <= K <= N (e.g. 1/2), got '{bad}'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _many_cases():
    def case(i, relation):
        return Case(case_id=i, split="tune" if i % 3 else "test", relation=relation, subject=f"S{i}", target_true="a",
                    target_new="b", prompts=["x [MASK]"], paraphrases=[], neighbours=[], others=[], generation=[])
    return [case(i, rel) for i, rel in enumerate(["P1"] * 9 + ["P2"] * 3 + ["P3"] * 6)]


def test_case_samples_are_seeded_round_robin_over_relations_in_file_order():
    cases = _many_cases()
    picked = sample_cases(cases, 7, seed=0)
    assert len(picked) == 7 and picked == sorted(picked, key=lambda c: c.case_id)
    counts = {r: sum(c.relation == r for c in picked) for r in ("P1", "P2", "P3")}
    assert counts == {"P1": 3, "P2": 2, "P3": 2}  # in turn: P1, P2, P3, P1, P2, P3, P1
    assert sample_cases(cases, 7, seed=0) == picked and sample_cases(cases, 7, seed=1) != picked
    assert sample_cases(cases, 50, seed=0) == cases  # more than there are: every case
    tuned = [dataclasses.replace(cases[1], case_id=99), dataclasses.replace(cases[4], split="test")]
    chosen = select_cases(cases, split="tune", tuned=tuned)  # only a tune case's fact is left out
    assert [c.case_id for c in chosen] == [i for i in range(18) if i % 3 and i != 1]
    assert select_cases(cases, split="test", sample=4, seed=0, limit=3) == sample_cases(
        [c for c in cases if c.split == "test"], 4, seed=0)[:3]
    with pytest.raises(KneuronError, match="--split must be tune, test or all"):
        select_cases(cases, split="dev")


RESULTS = Path(__file__).resolve().parent.parent / "results" / "edit"


def test_measured_cases_rebuild_what_every_committed_bench_run_measured():
    """The selection (split, --exclude-tuned, --sample, --limit) as one function: it picks, for every
    committed run whose cases file is committed, exactly the cases that run measured."""
    checked = 0
    for cfg_path in sorted(RESULTS.glob("*/config.json")):
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        if "methods" not in cfg or not isinstance(cfg["cases"], str) or not (RESULTS / cfg["cases"]).is_file():
            continue
        measured = set(pd.read_csv(cfg_path.parent / "cases.csv")["case_id"].astype(int))
        assert {c.case_id for c in measured_cases(cfg_path.parent)} == measured, cfg_path.parent.name
        checked += 1
    assert checked >= 8


def test_committed_tunes_sampled_what_sample_cases_picks():
    cases = [c for c in load_cases(RESULTS / "cases-smollm2-135m.jsonl") if c.split == "tune"]
    tuned = {json.loads(line)["case_id"] for line in (RESULTS / "tune-subject-smollm2-135m" / "tune.jsonl").open()}
    assert {c.case_id for c in sample_cases(cases, 12, seed=0)} == tuned


def test_measured_cases_errors_name_the_run(tmp_path):
    with pytest.raises(KneuronError, match="no config.json"):
        measured_cases(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(BenchConfig(model="m", cases="gone.jsonl"))))
    with pytest.raises(KneuronError, match="gone.jsonl is not beside the run folder"):
        measured_cases(run)
