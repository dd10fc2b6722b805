"""The `effect` specific rule: its selection, the single-neuron measurement against a plain
one-neuron-at-a-time loop, and its use in find_neurons, discover and compare."""

import pandas as pd
import pytest

import kneuron
from kneuron.cli import main
from kneuron.compare import CompareConfig, compare
from kneuron.compare import engine as engine_module
from kneuron.data import load_facts_jsonl
from kneuron.errors import KneuronError
from kneuron.interventions import SpecificityTask, scale_activations, single_neuron_changes
from kneuron.neurons import Neuron
from kneuron.runs import DiscoveryConfig, discover
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
    other relation's prompts (all of them: the sample is asked for more than there are) by at most
    0.2 of that."""
    _, model_dir, path = setup
    facts = load_facts_jsonl(path)
    config = DiscoveryConfig(model=str(model_dir), data=str(path), specific="effect", specific_fraction=0.2,
                             specific_other_prompts=1000)
    table = discover(bert, facts, tmp_path / "run", config, progress=False).neurons
    kn_rows, spec = table[table.method == "kn"], table[table.method == "kn_specific"]
    usable = [f for f in facts.facts if f.object != "Paris Texas"]  # skipped: not one token
    kept = dropped = 0
    for fact, rows in kn_rows.groupby("fact"):
        f = facts.facts[fact]
        own = [(p, f.object) for p in f.prompts]
        other = [(p, g.object) for g in usable if g.relation != f.relation for p in g.prompts]
        assert len(other) in (20, 25)
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
    assert kept >= 5 and dropped >= 5, (kept, dropped)  # measured: 13 kept, 27 dropped


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
