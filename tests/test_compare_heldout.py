"""Held-out evidence (issue 22, sections 1 and 2): every neuron chosen on selection prompts only, the
held-out columns recomputed by hand, `discover --holdout`, specific rules that cannot see the
collateral sample, and the effect rule's fraction tuned on other facts than it is reported on."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import kneuron
from kneuron.cli import main
from kneuron.compare import CompareConfig, compare
from kneuron.compare import engine as engine_module
from kneuron.data import load_facts_jsonl, save_facts_jsonl
from kneuron.data.facts import Fact, FactSet
from kneuron.experiments.rundata import RunData
from kneuron.neurons import Neuron
from kneuron.runs import DiscoveryConfig, RunDir, discover
from kneuron.selection import heldout_split, specific_sets


@pytest.fixture(scope="module")
def holdout_run(setup, bert, tmp_path_factory):
    """A discovery run with --holdout 2, made through the CLI; the prompts IG was asked about."""
    _, model_dir, path = setup
    run = tmp_path_factory.mktemp("hrun") / "run"
    asked = []
    cls = type(bert)
    real = cls.attribute
    cls.attribute = lambda self, prompt, answer, *a, **k: asked.extend(zip(prompt, answer)) or real(
        self, prompt, answer, *a, **k)
    try:
        assert main(["discover", "--model", str(model_dir), "--data", str(path), "--out", str(run), "--holdout", "2",
                     "--no-progress", "--device", "cpu"]) == 0
    finally:
        cls.attribute = real
    return run, asked


def _config(setup, **kw):
    _, model_dir, path = setup
    kw = {"methods": ["ig", "random"], "budgets": [1, 2], "other_prompts": 4} | kw
    return CompareConfig(model=str(model_dir), data=str(path), **kw)


def _records(out):
    return {r["fact"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}


def _effect_by_hand(kn, facts, neurons, method, budget, records, which, factor):
    """A row's change (%) on each fact's `which` prompts ("prompts" or "heldout"), through kn.suppress /
    kn.amplify: per relation (mean p_new - mean p_orig) / mean p_orig, then the mean over relations."""
    sets = neurons[(neurons.method == method) & (neurons.budget == budget)]
    per_rel: dict[str, list[tuple[float, float]]] = {}
    for i, rec in records.items():
        if "skipped" in rec or not rec[which]:
            continue
        f = facts.facts[i]
        prompts = [f.prompts[k] for k in rec[which]]
        mine = sets[(sets.relation == f.relation) & (sets.subject == f.subject)]
        chosen = [(int(a), int(b)) for a, b in zip(mine.layer, mine["index"])]
        before = kn.probabilities(prompts, f.object).double()
        with kn.suppress(chosen) if factor == 0 else kn.amplify(chosen, factor):
            after = kn.probabilities(prompts, f.object).double()
        per_rel.setdefault(f.relation, []).extend(zip(before.tolist(), after.tolist()))
    changes = [(np.mean([a for _, a in v]) - np.mean([b for b, _ in v])) / np.mean([b for b, _ in v])
               for v in per_rel.values()]
    return 100.0 * float(np.mean(changes))


def test_heldout_split_is_seeded_and_keeps_three_selection_prompts():
    sel, held = heldout_split([0, 2, 3, 5, 6], 2, seed=3)
    assert len(held) == 2 and len(sel) == 3 and sorted(sel + held) == [0, 2, 3, 5, 6]
    assert sel == sorted(sel) and held == sorted(held)
    assert heldout_split([0, 2, 3, 5, 6], 2, seed=3) == (sel, held)
    assert len({tuple(heldout_split(range(5), 2, seed=s)[1]) for s in range(30)}) > 3  # the seed decides
    assert heldout_split(range(4), 2, seed=0) == ([0, 1, 2, 3], [])  # 4 < 2 + 3: nothing held out
    assert len(heldout_split(range(6), 3, seed=0)[1]) == 3
    assert heldout_split(range(9), 0, seed=0) == (list(range(9)), [])


def test_compare_chooses_on_selection_prompts_and_measures_heldout_ones(setup, bert, tmp_path, monkeypatch):
    facts = load_facts_jsonl(setup[2])
    scored, judged = [], []
    real_scores, real_task = engine_module.prompt_scores, engine_module.SpecificityTask
    monkeypatch.setattr(engine_module, "prompt_scores",
                        lambda kn, method, prompt, answer, *a, **k: scored.append((prompt, answer)) or real_scores(
                            kn, method, prompt, answer, *a, **k))
    monkeypatch.setattr(engine_module, "SpecificityTask",
                        lambda neurons, own, other: judged.extend(own) or real_task(neurons, own, other))
    out = tmp_path / "out"
    res = compare(bert, facts, out, _config(setup, methods=["ig", "activation", "random"]))
    records = _records(out)
    done = {i: r for i, r in records.items() if "skipped" not in r}
    assert len(done) == 9
    heldout_pairs = set()
    for i, rec in done.items():
        assert len(rec["prompts"]) == 3 and len(rec["heldout"]) == 2 and rec["heldout_from"] == "compare"
        assert sorted(rec["prompts"] + rec["heldout"]) == list(range(5))
        assert (rec["prompts"], rec["heldout"]) == heldout_split(range(5), 2, engine_module.derived_seed(0, "heldout", i))
        heldout_pairs |= {(facts.facts[i].prompts[k], facts.facts[i].object) for k in rec["heldout"]}
    # Nothing that chose a neuron saw a held-out prompt: no method's scores, not the effect rule's own side.
    assert scored and judged
    assert not heldout_pairs & set(scored) and not heldout_pairs & set(judged)
    assert len(heldout_pairs) == 18
    methods = res.methods
    assert (methods["split"] == "all").all()
    assert (methods["prompts"] == 27).all() and (methods["heldout_prompts"] == 18).all()
    assert (methods["heldout_facts"] == 9).all()
    by = methods.set_index(["method", "budget"])
    neurons = res.neurons
    for method, budget in (("ig", 2), ("random", 1), ("ig_refined", 0), ("ig_specific", 0)):
        for col, which, factor in (("suppress", "prompts", 0.0), ("amplify", "prompts", 2.0),
                                   ("suppress_heldout", "heldout", 0.0), ("amplify_heldout", "heldout", 2.0)):
            want = _effect_by_hand(bert, facts, neurons, method, budget, records, which, factor)
            assert by.loc[(method, budget), col] == pytest.approx(want, rel=1e-4, abs=1e-4), (method, col)
    # The neurons generalise on the tiny model: held out, IG's still lower their facts far more than random ones.
    for k in (1, 2):
        assert by.loc[("ig", k), "suppress_heldout"] < by.loc[("random", k), "suppress_heldout"] - 10
    selection = json.loads((out / "selection.json").read_text())
    assert selection["heldout"] == {"per_fact": 2, "facts_with": 9, "facts_without": 0, "prompts": 18,
                                    "from": "compare", "note": ""}
    assert json.loads((out / "config.json").read_text())["heldout"] == 2 and res.heldout_note == ""


def test_a_journal_with_another_split_is_refused(setup, bert, tmp_path):
    facts = load_facts_jsonl(setup[2])
    out = tmp_path / "out"
    compare(bert, facts, out, _config(setup, methods=["random"]))
    for kw, message in (({"heldout": 3}, "heldout=2, not 3"), ({"seed": 1}, "seed=0, not 1"),
                        ({"tune_share": 0.5}, "tune_share=0.0, not 0.5")):
        with pytest.raises(kneuron.KneuronError, match=message):
            compare(bert, facts, out, _config(setup, methods=["random"], **kw))
    # A journal written before the split existed (no "heldout" in its config) is refused, not mixed in.
    config = json.loads((out / "config.json").read_text())
    del config["heldout"]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(kneuron.KneuronError, match="heldout=None, not 2"):
        compare(bert, facts, out, _config(setup, methods=["random"]))


def test_facts_too_small_to_split_are_counted_in_one_warning(setup, tmp_path, capsys):
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    small = FactSet([Fact(f.relation, f.subject, f.object, f.prompts[:4]) for f in facts.facts], facts.relations)
    data = save_facts_jsonl(small, tmp_path / "small.jsonl")
    out = tmp_path / "out"
    assert main(["compare", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--methods", "random",
                 "--budgets", "1", "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("warning:") == 1 and "9 of 9 facts have fewer than 2 + 3" in printed.replace("\n", " ")
    methods = pd.read_csv(out / "methods.csv")
    assert methods[["suppress_heldout", "amplify_heldout"]].isna().all().all()
    assert (methods["heldout_prompts"] == 0).all() and methods["suppress"].notna().all()
    assert json.loads((out / "selection.json").read_text())["heldout"]["facts_without"] == 9


def test_effect_rule_judges_on_facts_and_answers_the_collateral_sample_does_not_use(setup, bert, tmp_path,
                                                                                    monkeypatch):
    """The judging prompts of every fact come from facts, and gold answers, that are not in the sample
    its collateral column is measured on.  (Before: apart by prompt only; facts were shared.)"""
    facts = load_facts_jsonl(setup[2])
    owner = {(p, f.object): j for j, f in enumerate(facts.facts) if f.object != "Paris Texas" for p in f.prompts}
    fact_of_answer = {f.object: j for j, f in enumerate(facts.facts)}
    tasks, measured = [], []
    real_task, real_measure = engine_module.SpecificityTask, engine_module.measure_row
    monkeypatch.setattr(engine_module, "SpecificityTask",
                        lambda neurons, own, other: tasks.append((own, other)) or real_task(neurons, own, other))
    monkeypatch.setattr(engine_module, "measure_row", lambda *a, **k: measured.append(a[5]) or real_measure(*a, **k))
    compare(bert, facts, tmp_path / "out", _config(setup, other_prompts=6))
    others = measured[0]
    judged = 0
    for own, other in tasks:
        i = fact_of_answer[own[0][1]]
        collateral_facts = {j for j, _ in others[i]}
        collateral_answers = {facts.facts[j].object for j in collateral_facts}
        assert collateral_facts
        judges = {owner[pair] for pair in other}
        assert not judges & collateral_facts, (facts.facts[i].subject, judges, collateral_facts)
        assert not {facts.facts[j].object for j in judges} & collateral_answers
        assert all(facts.facts[j].relation != facts.facts[i].relation for j in judges | collateral_facts)
        judged += len(other)
    assert judged  # the rule was judged on something


def test_collateral_samples_split_other_facts_by_answer(setup, bert, tmp_path):
    facts = load_facts_jsonl(setup[2])
    out = tmp_path / "out"
    compare(bert, facts, out, _config(setup, methods=["random"]))
    records = _records(out)
    config = _config(setup)
    samples = engine_module.collateral_samples(records, config)
    assert samples == engine_module.collateral_samples(records, config)  # seeded
    done = [i for i in records if "skipped" not in records[i]]
    for i in done:
        measure = {j for j, _ in samples.measure[i]}
        judge = {j for j, _ in samples.judge[i]}
        ref = set(samples.reference[i])
        assert measure and judge and judge <= ref
        assert not (measure | judge) & {j for j in done if records[j]["relation"] == records[i]["relation"]}
        assert not ref & measure
        assert not {records[j]["object"] for j in ref} & {records[j]["object"] for j in measure}
        assert len(samples.measure[i]) == len(samples.judge[i]) == 4
        # The judging half: the smaller half of the other relations' facts (their answers are all distinct here).
        rest = {j for j in done if records[j]["relation"] != records[i]["relation"]}
        assert ref <= rest and len(ref) == len(rest) // 2
    # Another seed, other halves.
    other = engine_module.collateral_samples(records, _config(setup, seed=5))
    assert any(set(other.reference[i]) != set(samples.reference[i]) for i in done)


def test_other_relations_rule_ignores_sets_outside_its_reference():
    a, b, c = Neuron(0, 1), Neuron(0, 2), Neuron(1, 3)
    rels, sets = ["r1", "r2", "r2"], [[a, b, c], [a], [b]]
    assert specific_sets(rels, sets) == [[c], [], []]
    # Fact 0 looks only at fact 2 (so keeps a), fact 1 at fact 0, fact 2 only at fact 1 (its own relation).
    assert specific_sets(rels, sets, reference=[[2], [0], [1]]) == [[a, c], [], [b]]
    with pytest.raises(ValueError):
        specific_sets(rels, sets, reference=[[1]])


def test_other_relations_rule_leaves_out_the_facts_that_measure_its_collateral(setup, bert, tmp_path, monkeypatch):
    """A neuron that fact 0 shares only with the facts whose prompts measure fact 0's collateral damage
    stays in fact 0's specific set.  (Before: those facts' sets were the rule's reference, so it went.)"""
    facts = load_facts_jsonl(setup[2])
    measured = []
    real_measure, real_select = engine_module.measure_row, engine_module.select
    monkeypatch.setattr(engine_module, "measure_row", lambda *a, **k: measured.append(a[5]) or real_measure(*a, **k))
    first = compare(bert, facts, tmp_path / "a", _config(setup, specific_rule="other_relations"))
    measuring = {j for j, _ in measured[0][0]}
    assert measuring
    refined = first.neurons[first.neurons.method == "ig_refined"]
    taken = set(zip(refined.layer, refined["index"]))
    extra = next(Neuron(1, k) for k in range(bert.num_neurons) if (1, k) not in taken)

    def select(records, config, *a, **k):
        selection = real_select(records, config, *a, **k)
        for i in {0} | measuring:
            selection.sets[("ig_refined", 0)][i] = list(selection.sets[("ig_refined", 0)][i]) + [extra]
        return selection

    monkeypatch.setattr(engine_module, "select", select)
    second = compare(bert, facts, tmp_path / "b", _config(setup, specific_rule="other_relations"))
    assert measured[-1] == measured[0]  # the same collateral samples
    spec = second.neurons[(second.neurons.method == "ig_specific") & (second.neurons.subject == facts.facts[0].subject)]
    assert (extra.layer, extra.index) in set(zip(spec.layer, spec["index"]))


def test_choose_fraction_prefers_the_strongest_within_the_collateral_bound():
    def row(s, h, o):
        return {"suppress": s, "suppress_heldout": h, "other_relations_suppress": o}

    rows = {0.1: row(-30, -20, -1), 0.2: row(-50, -35, -5), 0.5: row(-70, -60, -30)}
    assert engine_module.choose_fraction(rows, 0.2) == 0.2  # 5/35 <= 0.2; 0.5 has 30/60
    rows[0.2]["other_relations_suppress"] = -10  # 10/35 > 0.2
    assert engine_module.choose_fraction(rows, 0.2) == 0.1
    rows = {0.1: row(-30, math.nan, -9), 0.2: row(-40, math.nan, -20)}  # no held-out prompts: in-sample
    assert engine_module.choose_fraction(rows, 0.2) == 0.1  # none within the bound: the smallest ratio
    assert engine_module.choose_fraction(rows, 0.5) == 0.2


def test_tune_share_chooses_the_fraction_on_tune_facts_and_reports_on_test_facts(setup, bert, tmp_path, monkeypatch):
    facts = load_facts_jsonl(setup[2])
    seen = []
    real_measure = engine_module.measure_row
    monkeypatch.setattr(engine_module, "measure_row",
                        lambda *a, **k: seen.append((set(a[3]), a[5])) or real_measure(*a, **k))
    out = tmp_path / "out"
    res = compare(bert, facts, out, _config(setup, tune_share=0.5, specific_fractions=[0.5, 0.1, 0.2]))
    selection = json.loads((out / "selection.json").read_text())
    tune, test = set(selection["split"]["tune"]), set(selection["split"]["test"])
    assert not tune & test and tune | test == set(range(9))
    for rel in ("capital", "located"):  # each relation has facts on both sides
        mine = {i for i in range(9) if facts.facts[i].relation == rel}
        assert mine & tune and mine & test
    methods = res.methods
    assert (methods["split"] == "test").all() and (methods["facts"] == len(test)).all()
    tuning = pd.read_csv(out / "tuning.csv")
    assert list(tuning["specific_fraction"]) == [0.1, 0.2, 0.5] and tuning["chosen"].sum() == 1
    assert (tuning["facts"] == len(tune)).all()
    chosen = float(tuning.loc[tuning["chosen"], "specific_fraction"].iloc[0])
    assert chosen == res.specific_fraction == selection["specific"]["fraction"]
    assert chosen == engine_module.choose_fraction({r["specific_fraction"]: r for r in tuning.to_dict("records")}, 0.2)
    keys = [json.loads(line)["row"] for line in (out / "effects.jsonl").read_text().splitlines()]
    assert f"ig_specific[effect:{chosen:g}]@0|test" in keys
    assert {f"ig_specific[effect:{f:g}]@0|tune" for f in (0.1, 0.2, 0.5)} <= set(keys)
    # Every measurement stays on its side: a row's facts and its collateral prompts are all tune or all test.
    assert len(seen) == 3 + len(methods)
    for measured_facts, others in seen:
        side = tune if measured_facts <= tune else test
        assert measured_facts <= side
        assert all(j in side for i in measured_facts for j, _ in others[i])


def test_discover_holdout_records_prompts_it_never_attributes(setup, holdout_run):
    facts = load_facts_jsonl(setup[2])
    run, asked = holdout_run
    rd = RunDir(run)
    assert rd.config().holdout == 2
    held = rd.heldout()
    records = rd.records()
    assert set(held) == set(range(9)) and "skipped" in records[9]
    for i, ks in held.items():
        f = facts.facts[i]
        assert len(ks) == 2 and records[i]["used_prompts"] == [k for k in range(5) if k not in ks]
        assert len(records[i]["kn"]) == len(records[i]["prob"]) == 3
        assert not {(f.prompts[k], f.object) for k in ks} & set(asked)  # IG never saw them
        # The same split as compare's, for the same seed and facts.
        assert ks == heldout_split(range(5), 2, engine_module.derived_seed(0, "heldout", i))[1]
    assert rd.relations()["capital"]["heldout_prompts"] == 8
    data = RunData.load(run)
    assert [len(f.prompts) for f in data.facts.facts[:9]] == [3] * 9
    assert [h.prompts for h in data.heldout.facts[:9]] == [[facts.facts[i].prompts[k] for k in held[i]]
                                                           for i in range(9)]
    # Resuming with another holdout is refused.
    with pytest.raises(kneuron.KneuronError, match="holdout=2, not 0"):
        RunDir(run).check_resumable(DiscoveryConfig(model=setup[1].as_posix(), data=str(setup[2]),
                                                    facts_fingerprint=rd.config().facts_fingerprint))


def test_runs_without_holdout_still_load(setup, bert, tmp_path):
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    discover(bert, facts, tmp_path / "run", DiscoveryConfig(model=str(model_dir), data=str(path)), progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["holdout"]  # as written before the field existed
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert RunDir(tmp_path / "run").config().holdout == 0 and RunDir(tmp_path / "run").heldout() == {}
    data = RunData.load(tmp_path / "run")
    assert data.heldout is None and [len(f.prompts) for f in data.facts.facts] == [5] * 10
    assert "heldout_prompts" not in RunDir(tmp_path / "run").records()[0]


def test_compare_on_a_holdout_run_keeps_its_split_and_sets(setup, holdout_run, tmp_path):
    _, model_dir, _ = setup
    run, _ = holdout_run
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(model_dir), "--out", str(out), "--run", str(run), "--methods", "ig,random",
                 "--budgets", "1,2", "--other-prompts", "4", "--no-progress", "--device", "cpu"]) == 0
    records = _records(out)
    for i in range(9):
        assert records[i]["prompts"] == [0, 1, 2] and records[i]["heldout"] == [3, 4]
        assert records[i]["heldout_from"] == "run"
    selection = json.loads((out / "selection.json").read_text())
    assert selection["specific"]["refined_from"] == "run" and selection["heldout"]["from"] == "run"
    neurons = pd.read_csv(out / "neurons.csv")
    table = RunDir(run).neurons()
    kn_sets = table[table.method == "kn"]
    got = neurons[neurons.method == "ig_refined"]
    assert list(zip(got.subject, got.layer, got["index"])) == list(zip(kn_sets.subject, kn_sets.layer, kn_sets["index"]))
    methods = pd.read_csv(out / "methods.csv")
    assert (methods["heldout_prompts"] == 18).all() and methods["suppress_heldout"].notna().all()


def test_suppression_experiment_and_demo_report_heldout_columns(setup, bert, holdout_run, tmp_path):
    from kneuron.experiments.controls import method_sets
    from kneuron.experiments.suite import ExperimentSettings, suppression

    run = RunData.load(holdout_run[0])
    outcome = suppression(bert, run, ExperimentSettings(seed=0))
    means = outcome.key["effects"].set_index("method")
    assert {"suppress_heldout", "amplify_heldout"} <= set(means.columns)
    sets = method_sets(run.table, bert.num_layers, bert.num_neurons, 0)["kn"]
    per_rel = {}
    for i in run.fact_indices:
        f = run.heldout.facts[i]
        before = bert.probabilities(f.prompts, f.object).double()
        with bert.suppress(sets.get(i, [])):
            after = bert.probabilities(f.prompts, f.object).double()
        per_rel.setdefault(f.relation, []).extend(zip(before.tolist(), after.tolist()))
    want = 100 * np.mean([(np.mean([a for _, a in v]) - np.mean([b for b, _ in v])) / np.mean([b for b, _ in v])
                          for v in per_rel.values()])
    assert means.loc["kn", "suppress_heldout"] == pytest.approx(want, rel=1e-4)
    assert means.loc["kn", "suppress_heldout"] != pytest.approx(means.loc["kn", "suppress"], rel=1e-3)
    _, model_dir, path = setup
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(model_dir), "--data", str(path), "--out", str(out), "--no-progress",
                 "--other-prompts", "3", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["holdout"] == 2 and summary["heldout_prompts"] == 18
    assert all(not math.isnan(v["suppress_heldout"]) for v in summary["mean_change_percent"].values())
    assert {"suppress_heldout", "amplify_heldout"} <= set(pd.read_csv(out / "ratios.csv").columns)
