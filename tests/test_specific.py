"""The `effect` specific rule: its selection, the single-neuron measurement against a plain
one-neuron-at-a-time loop, and its use in find_neurons, discover and compare."""

import numpy as np
import pandas as pd
import pytest

import kneuron
from kneuron.cli import main
from kneuron.compare import CompareConfig, compare
from kneuron.compare import engine as engine_module
from kneuron.data import Fact, FactSet, Relation, load_facts_jsonl, save_facts_jsonl
from kneuron.errors import KneuronError
from kneuron.interventions import SpecificityTask, scale_activations, single_neuron_changes
from kneuron.neurons import Neuron
from kneuron.runs import DiscoveryConfig, RunDir, discover
from kneuron.seeds import derived_seed
from kneuron.selection import effect_specific


def test_effect_rule_keeps_neurons_that_lower_their_fact_more_than_others():
    a, b, c, d, e = (Neuron(0, i) for i in range(5))
    own = [-0.5, -0.5, -0.1, 0.3, 0.0]
    other = [-0.05, -0.2, 0.02, 0.0, 0.0]
    assert effect_specific([a, b, c, d, e], own, other, 0.2) == [a, c]  # b: 0.2 > 0.1; d raises; e does nothing
    assert effect_specific([a, b, c, d, e], own, other, 0.5) == [a, b, c]
    assert effect_specific([a, b, c, d, e], own, other, 0.0) == []
    with pytest.raises(ValueError):
        effect_specific([a], [0.1, 0.2], [0.0])


def _change_by_hand(kn, neuron, pairs):
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    before = kn.probabilities(prompts, answers).double().mean()
    with scale_activations(kn, [neuron], 0.0):
        after = kn.probabilities(prompts, answers).double().mean()
    return float((after - before) / before)


def test_single_neuron_changes_match_one_neuron_at_a_time(bert, setup):
    facts = load_facts_jsonl(setup[2]).facts
    f, g, h = facts[0], facts[1], next(x for x in facts if x.relation != facts[0].relation)
    tasks = [SpecificityTask([Neuron(0, 3), Neuron(1, 7), Neuron(1, 40)], [(p, f.object) for p in f.prompts],
                             [(p, h.object) for p in h.prompts[:3]]),
             SpecificityTask([Neuron(0, 11)], [(p, g.object) for p in g.prompts[:2]], []),
             SpecificityTask([], [(p, g.object) for p in g.prompts], [(p, h.object) for p in h.prompts])]
    got = single_neuron_changes(bert, tasks)
    for task, (own, other) in zip(tasks, got):
        assert len(own) == len(other) == len(task.neurons)
        for n, o, x in zip(task.neurons, own, other):
            assert o == pytest.approx(_change_by_hand(bert, n, task.own), abs=1e-6)
            assert x == (pytest.approx(_change_by_hand(bert, n, task.other), abs=1e-6) if task.other else 0.0)
    assert any(abs(o) > 1e-3 for o in got[0][0])  # the check is not vacuous: the neurons do something


def test_find_neurons_effect_rule(bert, setup):
    facts = load_facts_jsonl(setup[2]).facts
    own, other = facts[0], next(f for f in facts if f.relation != facts[0].relation)
    plain = bert.find_neurons(own.prompts, own.object, p=0.3)
    assert plain, "the tiny model must have refined neurons for this test to mean something"
    against = [(other.prompts, other.object)]
    for fraction in (0.0, 0.2, 1e9):
        got = bert.find_neurons(own.prompts, own.object, p=0.3, specific_against=against, specific_fraction=fraction)
        want = [n for n in plain
                if (o := _change_by_hand(bert, n, [(p, own.object) for p in own.prompts])) < 0
                and abs(_change_by_hand(bert, n, [(p, other.object) for p in other.prompts])) <= fraction * abs(o)]
        assert got == want, fraction
    with pytest.raises(KneuronError, match="unknown specific rule 'nope'"):
        bert.find_neurons(own.prompts, own.object, specific_against=against, specific_rule="nope")
    with pytest.raises(KneuronError, match="fraction must be >= 0"):
        bert.find_neurons(own.prompts, own.object, specific_against=against, specific_fraction=-1)


def test_discover_effect_rule_keeps_the_neurons_that_lower_their_fact(bert, setup, tmp_path):
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    # With an unbounded fraction the rule only asks whether a neuron, suppressed alone, lowers its fact.
    config = DiscoveryConfig(model=str(model_dir), data=str(path), specific="effect", specific_fraction=1e9)
    table = discover(bert, facts, tmp_path / "run", config, progress=False).neurons
    kn_rows, spec = table[table.method == "kn"], table[table.method == "kn_specific"]
    assert len(kn_rows)
    for fact, rows in kn_rows.groupby("fact"):
        f = facts.facts[fact]
        pairs = [(p, f.object) for p in f.prompts]  # a masked LM uses every prompt
        want = [(r.layer, r.index) for r in rows.itertuples()
                if _change_by_hand(bert, Neuron(r.layer, r.index), pairs) < 0]
        got = [(r.layer, r.index) for r in spec[spec.fact == fact].itertuples()]
        assert got == want, fact
    # The rule is recorded, and the paper's rows are those of a run without it.
    plain = discover(bert, facts, tmp_path / "plain", DiscoveryConfig(model=str(model_dir), data=str(path)),
                     progress=False).neurons
    assert plain.equals(table[table.method != "kn_specific"].reset_index(drop=True))


def test_discover_effect_rule_at_a_realistic_fraction(bert, setup, tmp_path):
    """At the default fraction 0.2 the rule keeps some refined neurons and drops others, each as a
    by-hand computation says: suppressed alone, the neuron lowers its fact's prompts, and moves the
    prompts of the other relation's judging half (all of them: the sample is asked for more than
    there are) by at most 0.2 of that."""
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    config = DiscoveryConfig(model=str(model_dir), data=str(path), specific="effect", specific_fraction=0.2,
                             specific_other_prompts=1000)
    table = discover(bert, facts, tmp_path / "run", config, progress=False).neurons
    splits = RunDir(tmp_path / "run").specific_splits()
    kn_rows, spec = table[table.method == "kn"], table[table.method == "kn_specific"]
    kept = dropped = 0
    for fact, rows in kn_rows.groupby("fact"):
        f = facts.facts[fact]
        own = [(p, f.object) for p in f.prompts]
        # 4 or 5 other facts, 4 or 5 distinct answers: the judging half is the smaller, 2 facts.
        judging = splits[fact]["judging"]
        assert len(judging) == 2 and all(facts.facts[j].relation != f.relation for j in judging)
        other = [(p, facts.facts[j].object) for j in judging for p in facts.facts[j].prompts]
        assert len(other) == 10
        want = []
        for r in rows.itertuples():
            o = _change_by_hand(bert, Neuron(r.layer, r.index), own)
            x = _change_by_hand(bert, Neuron(r.layer, r.index), other)
            assert abs(abs(x) - 0.2 * abs(o)) > 1e-4, "too close to the boundary for a by-hand check"
            if o < 0 and abs(x) <= 0.2 * abs(o):
                want.append((r.layer, r.index))
        got = [(r.layer, r.index) for r in spec[spec.fact == fact].itertuples()]
        assert got == want, fact
        kept, dropped = kept + len(want), dropped + len(rows) - len(want)
    assert kept >= 5 and dropped >= 5, (kept, dropped)  # measured: 6 kept, 34 dropped


BORN = ["[X] was born in [MASK] .", "[X] lives in [MASK] .", "[X] works in [MASK] .", "[MASK] is where [X] lives ."]


def test_discover_effect_rule_judges_only_on_its_judging_half(bert, setup, tmp_path, monkeypatch):
    """Rule effect judges fact i only on prompts of other relations' facts whose gold answers are not
    in i's measuring half (the answer split of `kneuron compare`), held-out prompts excluded, and
    specific.json records both halves and the judging prompts.  A third relation shares gold answers
    with the others, so that the split is by answer, not by fact.  (Before: the judging sample was
    drawn from every other relation's fact, and nothing was recorded.)"""
    from kneuron import interventions
    from kneuron.selection import answer_key, answer_split

    _, model_dir, path = setup
    base = load_facts_jsonl(path)
    born = [Fact("born", s, o, [t.replace("[X]", s) for t in BORN])
            for s, o in (("Joyce", "Dublin"), ("Dante", "Italy"), ("Hugo", "Paris"))]
    facts = FactSet(base.facts + born, {**base.relations, "born": Relation("born")})
    data = save_facts_jsonl(facts, tmp_path / "facts.jsonl")
    tasks = []
    real = interventions.effect_specific_sets
    monkeypatch.setattr(interventions, "effect_specific_sets", lambda kn, t, f: tasks.extend(t) or real(kn, t, f))
    config = DiscoveryConfig(model=str(model_dir), data=str(data), specific="effect", specific_other_prompts=1000,
                             holdout=2)
    table = discover(bert, facts, tmp_path / "run", config, progress=False).neurons
    run = RunDir(tmp_path / "run")
    records = run.records()
    done = [i for i in sorted(records) if "skipped" not in records[i]]
    owner = {p: j for j in done for p in facts.facts[j].prompts}
    assert len(owner) == sum(len(facts.facts[j].prompts) for j in done)  # a prompt names its fact
    judged = sorted(int(i) for i in set(table[table.method == "kn"].fact))
    assert judged and len(tasks) == len(judged)
    # What judged each fact, from the measurement itself: other relations' facts, at most half their answers.
    for i, task in zip(judged, tasks):
        cand = [j for j in done if facts.facts[j].relation != facts.facts[i].relation]
        judges = {owner[p] for p, _ in task.other}
        assert judges and all(facts.facts[j].relation != facts.facts[i].relation for j in judges)
        assert len({answer_key(facts.facts[j].object) for j in judges}) <= len(
            {answer_key(facts.facts[j].object) for j in cand}) // 2, i
    # The recorded halves, read back through RunDir.
    splits = run.specific_splits()
    assert sorted(splits) == judged
    shared = heldout = 0
    for i, task in zip(judged, tasks):
        cand = [j for j in done if facts.facts[j].relation != facts.facts[i].relation]
        measuring, judging, judge = splits[i]["measuring"], splits[i]["judging"], splits[i]["judge_prompts"]
        assert (measuring, judging) == answer_split(i, cand, [facts.facts[j].object for j in cand], config.seed)
        assert sorted(measuring + judging) == cand and measuring and judging
        measured = {answer_key(facts.facts[j].object) for j in measuring}
        assert list(task.other) == [(facts.facts[j].prompts[k], facts.facts[j].object) for j, k in judge]
        assert not {answer_key(facts.facts[owner[p]].object) for p, _ in task.other} & measured
        # 1000 asked for: every prompt of the judging half that discovery saw, and no held-out one.
        used = {(j, k) for j in judging for k in records[j].get("used_prompts", range(len(facts.facts[j].prompts)))}
        held = {(j, k) for j in judging for k in records[j].get("heldout_prompts", ())}
        assert set(judge) == used and len(judge) == len(used) and not used & held
        heldout += len(held)
        answers = [answer_key(facts.facts[j].object) for j in cand]
        shared += sum(answers.count(a) > 1 for a in set(answers))
    assert shared and heldout  # answers shared across facts, and held-out prompts, were in play
    # A run written before specific.json existed still loads, with no halves.
    (run.path / "specific.json").unlink()
    assert run.specific_splits() == {}
    assert run.load()[1].equals(table)


def _split_as_compare_did(i, cand, answers, seed):
    """`collateral_samples`'s split before `answer_split` existed, verbatim."""
    keys = sorted({str(a).strip().casefold() for a in answers})
    order = np.random.default_rng(derived_seed(seed, "collateral", i)).permutation(len(keys))
    measuring = {keys[int(t)] for t in order[: (len(keys) + 1) // 2]}
    return ([j for j, a in zip(cand, answers) if str(a).strip().casefold() in measuring],
            [j for j, a in zip(cand, answers) if str(a).strip().casefold() not in measuring])


def test_answer_split_is_the_split_compare_used():
    """`answer_split` gives compare's old split, and `collateral_samples` draws from its halves; answers
    that differ in case or spaces only are one answer."""
    from kneuron.selection import answer_split

    rels = ["r1", "r2", "r3"]
    answers = ["Paris", "paris", " PARIS ", "Rome", "Italy", "Berlin", "Rome", "Dublin", "Ireland", "Alberta", "Oslo"]
    records = {j: {"relation": rels[j % 3], "object": a, "prompts": [0, 1, 2]} for j, a in enumerate(answers)}
    records[len(answers)] = {"relation": "r1", "object": "Paris Texas", "skipped": "not one token"}
    done = [j for j in sorted(records) if "skipped" not in records[j]]
    for seed in (0, 5):
        samples = engine_module.collateral_samples(records, CompareConfig(seed=seed, other_prompts=1000))
        for i in done:
            cand = [j for j in done if records[j]["relation"] != records[i]["relation"]]
            got = answer_split(i, cand, [records[j]["object"] for j in cand], seed)
            assert got == _split_as_compare_did(i, cand, [records[j]["object"] for j in cand], seed)
            assert sorted({j for j, _ in samples.measure[i]}) == sorted(got[0])
            assert samples.reference[i] == got[1] and {j for j, _ in samples.judge[i]} == set(got[1])
            paris = [j for j in cand if records[j]["object"].strip().casefold() == "paris"]
            assert all(j in got[0] for j in paris) or all(j in got[1] for j in paris)
            keys = [{records[j]["object"].strip().casefold() for j in half} for half in got]
            assert not keys[0] & keys[1] and len(keys[0]) == (len(keys[0]) + len(keys[1]) + 1) // 2
    with pytest.raises(ValueError):
        answer_split(0, [1, 2], ["a"], 0)


def test_compare_rule_switch_computes_one_row(setup, tmp_path, monkeypatch):
    _, model_dir, path = setup
    kn = kneuron.load(str(model_dir), device="cpu")
    facts = load_facts_jsonl(path)

    def run(**kw):
        cfg = CompareConfig(model=str(model_dir), data=str(path), methods=["ig", "random"], budgets=[1, 2],
                            other_prompts=4, **kw)
        return compare(kn, facts, tmp_path / "out", cfg)

    first = run()
    assert first.config.specific_rule == "effect"
    refined = first.neurons[first.neurons.method == "ig_refined"]
    specific = first.neurons[first.neurons.method == "ig_specific"]
    key = ["subject", "layer", "index"]
    assert specific[key].merge(refined[key]).shape[0] == len(specific)  # a subset of the refined sets
    calls = []
    real = engine_module.measure_row
    monkeypatch.setattr(engine_module, "measure_row", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = run(specific_rule="other_relations")
    assert len(calls) == 1  # only the ig_specific row was measured again
    keep = ["method", "budget"]
    others = second.methods[second.methods.method != "ig_specific"].drop(columns="seconds_per_prompt")
    assert others.equals(first.methods[first.methods.method != "ig_specific"].drop(columns="seconds_per_prompt"))
    assert list(second.methods[keep].itertuples(index=False)) == list(first.methods[keep].itertuples(index=False))
    third = run()  # back to the first rule: nothing is measured, the tables are the first ones
    assert len(calls) == 1
    pd.testing.assert_frame_equal(third.methods.drop(columns="seconds_per_prompt"),
                                  first.methods.drop(columns="seconds_per_prompt"))


@pytest.mark.parametrize("args, message", [
    (["--specific-rule", "nope"], "unknown specific rule 'nope'"),
    (["--specific-fraction", "-1"], "fraction must be >= 0, got -1"),
])
def test_bad_rule_is_one_line(setup, tmp_path, capsys, args, message):
    _, model_dir, path = setup
    argv = ["compare", "--model", str(model_dir), "--data", str(path), "--out", str(tmp_path / "o"),
            "--no-progress", *args]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
