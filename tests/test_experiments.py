"""The experiments against slow, obviously correct reimplementations on tiny models and hand-made data."""

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import WORDS, save_tiny_bert

import kneuron
from kneuron.data.bingrel import SentenceBag
from kneuron.data.facts import Fact, FactSet, Relation
from kneuron.experiments import paper
from kneuron.experiments.erasing import default_erase_relations, run_erasing
from kneuron.experiments.prompt_types import (
    mask_t1,
    mask_t2,
    mask_t3,
    prompt_type_activations,
    prompt_type_means,
    prompt_type_relation_means,
    trigger_examples,
)
from kneuron.experiments.rundata import RunData
from kneuron.experiments.statistics import layer_distribution, neuron_statistics
from kneuron.experiments.updating import run_updating, updating_summary
from kneuron.runs import DiscoveryConfig
from kneuron.runs.discover import TABLE_COLUMNS

SUBJECTS = "Dublin Paris Ireland France Rome Italy Berlin Germany Alberta Edmonton".split()
TEMPLATES = ["The capital of {} is [MASK] .", "{} is in [MASK] .", "{} was born in [MASK] .",
             "the city {} speaks [MASK] .", "[MASK] is the country of {} .", "{} lives in the [MASK] .",
             "{} plays [MASK] .", "{} works in [MASK] and {} ."]


@pytest.fixture(scope="module")
def kn(tmp_path_factory):
    """A tiny BERT whose predictions are whole words (so that answers are single tokens)."""
    path = save_tiny_bert(tmp_path_factory.mktemp("exp") / "model", seed=0, layers=2, hidden=32, intermediate=48)
    model = kneuron.load(str(path), device="cpu")
    words = {w for w in WORDS if w.isalpha() and len(w) > 1}
    with torch.no_grad():
        bias = model.model.cls.predictions.bias
        for tok, i in model.tokenizer.get_vocab().items():
            if tok not in words:
                bias[i] -= 20.0
    return model


def make_run(facts: FactSet, sets: dict[str, dict[int, list]], tmp_path) -> RunData:
    rows = [(f.relation, i, f.subject, f.object, a, b, method) for method, by_fact in sets.items()
            for i, neurons in by_fact.items() for (a, b) in neurons for f in [facts.facts[i]]]
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    universe: dict[str, list[int]] = {}
    for i, f in enumerate(facts.facts):
        universe.setdefault(f.relation, []).append(i)
    return RunData(tmp_path, DiscoveryConfig(model="tiny", data="tiny.jsonl"), table, {}, facts, universe)


def state(kn):
    return {k: v.detach().clone() for k, v in kn.model.state_dict().items()}


# -- statistics ---------------------------------------------------------------------------------------

def test_statistics_by_hand():
    kn_sets = {"A": [[(0, 1), (0, 2)], [(0, 1)], []], "B": [[(0, 1), (1, 3)]]}
    base_sets = {"A": [[(1, 1)], [(1, 1)], [(1, 1)]], "B": [[(1, 1)]]}
    table = neuron_statistics({"kn": kn_sets, "baseline": base_sets}, seed=7, partners=100)
    row = table.set_index("method").loc["kn"]
    assert row["neurons_per_fact"] == 5 / 4
    assert row["intra_pairs"] == 3 and row["intra_intersection"] == pytest.approx(1 / 3)
    # Slow reference for the inter draws: the same calls on the same generator.
    rng = random.Random(7)
    ref = []
    for rel, sets in kn_sets.items():
        other = [r for r in kn_sets if r != rel]
        for a in sets:
            for _ in range(100):
                o = rng.choice(other)
                b = kn_sets[o][rng.randint(0, len(kn_sets[o]) - 1)]
                ref.append(len(set(a) & set(b)))
    assert row["inter_pairs"] == 400 and row["inter_intersection"] == pytest.approx(np.mean(ref))
    # A-facts always meet B's only fact: 1, 1, 0 -> a known part of the mean.
    assert ref[:300] == [1] * 200 + [0] * 100
    base = table.set_index("method").loc["baseline"]
    assert base["intra_intersection"] == 1.0 and base["inter_intersection"] == 1.0 and base["seed"] == 7
    assert neuron_statistics({"kn": kn_sets}, seed=7).equals(neuron_statistics({"kn": kn_sets}, seed=7))
    layers = layer_distribution({"kn": kn_sets}, num_layers=3)
    assert layers["layer"].tolist() == [1, 2, 3] and layers["neurons"].tolist() == [4, 1, 0]
    assert layers["fraction"].tolist() == [0.8, 0.2, 0.0]


# -- prompt types -------------------------------------------------------------------------------------

def test_t1_masking_and_the_regex_quirk():
    assert mask_t1(["Dublin is the capital of Ireland."], "Ireland", "Dublin") == ["[MASK] is the capital of Ireland."]
    # Letter-bounded: "Asian" is not "Asia"; only the first match is masked.
    assert mask_t1(["Asian food from Asia and Asia."], "Kuwait", "Asia") == ["Asian food from [MASK] and Asia."]
    # Digits are not boundaries (the lookarounds only exclude letters).
    assert mask_t1(["Born 19901 in 1990."], "X", "1990") == ["Born [MASK]1 in 1990."]
    # Head occurrences are protected before the tail is searched.
    assert mask_t1(["Paris Hilton was born in Paris."], "Paris Hilton", "Paris") == ["Paris Hilton was born in [MASK]."]
    # "." is escaped by the authors' code ...
    assert mask_t1(["StX Louis and St. Louis"], "Y", "St. Louis") == ["StX Louis and [MASK]"]
    # ... but "*" is not: "A*B" is a pattern that matches "AAB" first; full escaping masks the literal.
    assert mask_t1(["The band AAB and A*B."], "Z", "A*B") == ["The band [MASK] and A*B."]
    assert mask_t1(["The band AAB and A*B."], "Z", "A*B", escape="full") == ["The band AAB and [MASK]."]
    # A name that is no valid pattern (the authors' script would crash) falls back to full escaping.
    assert mask_t1(["He codes in C++ daily."], "Bob", "C++") == ["He codes in [MASK] daily."]
    # No tail: no [MASK] (such sentences are left out later).
    assert mask_t1(["Nothing here."], "A", "B") == ["Nothing here."]


def test_t2_t3_masking_replays_the_random_calls():
    words = " ".join(f"w{i}" for i in range(60))
    out = mask_t2([words], "Ireland", random.Random(3))[0].split(" ")
    rng = random.Random(3)
    pos = rng.randint(1, 50) - 1
    assert out.count("[MASK]") == 1 and out.index("[MASK]") == pos < 50
    # The head is avoided when possible ...
    for seed in range(20):
        got = mask_t2(["Ireland Ireland is Ireland"], "Ireland", random.Random(seed))[0]
        assert got.count("[MASK]") == 1
    # ... but after 4 redraws it gives up: a sentence that is only the head gets the head masked.
    assert mask_t2(["Ireland"], "Ireland", random.Random(0)) == ["[MASK]"]
    assert mask_t2(["Mr. Ireland, Ireland here"], "Ireland", random.Random(1))[0].count("Ireland") >= 1
    rng = random.Random(5)
    got = mask_t3(["a b c", "d e"], rng)
    rng = random.Random(5)
    i, j = rng.randint(1, 3) - 1, rng.randint(1, 2) - 1
    a, b = ["a", "b", "c"], ["d", "e"]
    a[i], b[j] = "[MASK]", "[MASK]"
    assert got == [" ".join(a), " ".join(b)]


def _bingrel_fixture():
    facts = [Fact("R1", "Ireland", "Dublin", ["The capital of Ireland is [MASK] ."]),
             Fact("R1", "France", "Paris", ["The capital of France is [MASK] ."]),
             Fact("R1", "Italy", "Rome", ["The capital of Italy is [MASK] ."]),
             Fact("R2", "Germany", "Berlin", ["Germany is in [MASK] ."]),
             Fact("R3", "Alberta", "Edmonton", ["Alberta is in [MASK] ."])]
    fs = FactSet(facts, {"R1": Relation("R1", "capital"), "R2": Relation("R2", "city"), "R3": Relation("R3")})
    bags = {"R1": [SentenceBag(["Dublin is the capital of Ireland .", "the city Dublin in Ireland .",
                                "Ireland speaks , Dublin lives ."], ["Ireland is a country .", "Ireland and France ."]),
                   SentenceBag(["Paris is in France ."], []),  # no h sentence: no_exmp
                   SentenceBag(["Rome is in Italy ."], ["Italy is a country ."])],  # no neurons: no_kn
            "R2": [SentenceBag(["Berlin is the city of Germany .", "Germany has no such city ."],
                               ["Germany plays ."])],  # second th sentence has no tail: dropped
            "R3": [SentenceBag([], ["Alberta ."])]}
    sets = {"kn": {0: [(0, 3), (1, 7)], 1: [(1, 1)], 2: [], 3: [(1, 2)], 4: [(0, 0)]},
            "baseline": {0: [(0, 5)], 1: [(0, 5)], 2: [(0, 5)], 3: [(0, 5)], 4: [(0, 5)]}}
    return fs, bags, sets


def test_prompt_type_activations_match_the_slow_path(kn):
    fs, bags, sets = _bingrel_fixture()
    rel_facts = {"R1": [0, 1, 2], "R2": [3], "R3": [4]}
    values, status = prompt_type_activations(kn, fs, sets, rel_facts, bags, seed=11)
    st = status.set_index(["method", "fact"])["status"]
    assert st[("kn", 0)] == "ok" and st[("kn", 1)] == "no_exmp" and st[("kn", 2)] == "no_kn"
    assert st[("kn", 3)] == "ok" and st[("kn", 4)] == "no_exmp" and st[("baseline", 2)] == "ok"
    assert int(status.set_index(["method", "fact"]).loc[("kn", 3), "dropped_sentences"]) == 1
    # Rebuild the kn prompts with the same random calls and average kn.activations() by hand.
    pool = [s for rel in bags.values() for b in rel for s in b.th + b.h]
    rng = random.Random(11)
    expect = {}
    for i, pos, rel in ((0, 0, "R1"), (3, 0, "R2")):
        f, bag = fs.facts[i], bags[rel][pos]
        t1 = mask_t1(bag.th, f.subject, f.object)
        t2 = mask_t2(bag.h, f.subject, rng)
        t3 = mask_t3(rng.sample(pool, len(t1)), rng)
        for t, sents in (("T1", t1), ("T2", t2), ("T3", t3)):
            sents = [s for s in sents if "[MASK]" in s]
            acts = torch.stack([kn.activations(s) for s in sents])
            for layer, index in sets["kn"][i]:
                expect[(i, layer, index, t)] = float(acts[:, layer, index].mean())
    got = values[values["method"] == "kn"]
    assert len(got) == len(expect) == 9
    for r in got.itertuples():
        assert r.activation == pytest.approx(expect[(r.fact, r.layer, r.index, r.type)], abs=1e-5)
    rel_means = prompt_type_relation_means(values, ["R1", "R2", "R3"])
    kn_r3 = rel_means[(rel_means["method"] == "kn") & (rel_means["relation"] == "R3")]
    assert (kn_r3["activation"] == 0.0).all() and (kn_r3["values"] == 0).all()  # no value: counts 0
    means = prompt_type_means(rel_means).set_index("method")
    for t in ("T1", "T2", "T3"):
        r1 = np.mean([expect[(0, 0, 3, t)], expect[(0, 1, 7, t)]])
        r2 = expect[(3, 1, 2, t)]
        assert means.loc["kn", t] == pytest.approx((r1 + r2 + 0.0) / 3, abs=1e-5)
    # Same seed, same numbers.
    again, _ = prompt_type_activations(kn, fs, sets, rel_facts, bags, seed=11)
    assert again.equals(values)
    triggers = trigger_examples(kn, fs, sets["kn"], rel_facts, bags, top=1, bottom=1)
    t = triggers[triggers["relation"] == "R1"]
    assert t["which"].tolist() == ["top", "bottom"] and t["of"].tolist() == [3, 3]
    scores = [float(sum(kn.activations(s)[a, b] for a, b in sets["kn"][0]))
              for s in mask_t1(bags["R1"][0].th, "Ireland", "Dublin")]
    assert t["activation_sum"].tolist() == pytest.approx([max(scores), min(scores)], abs=1e-5)


# -- updating -----------------------------------------------------------------------------------------

def predicted_facts(kn) -> FactSet:
    """One prompt per fact, its object = the model's top-1; a relation per template with 2+ objects."""
    facts = []
    for k, tpl in enumerate(TEMPLATES):
        rel = [Fact(f"T{k}", s, kn.predict(tpl.format(s, s), 1)[0][0], [tpl.format(s, s)]) for s in SUBJECTS]
        if len({f.object for f in rel}) > 1:
            facts += rel
    assert len({f.relation for f in facts}) >= 2, "the tiny model predicts too few distinct words"
    return FactSet(facts, {f.relation: Relation(f.relation) for f in facts})


def test_updating_against_direct_computation(kn, tmp_path):
    facts = predicted_facts(kn)
    rng = np.random.default_rng(0)
    sets = {"kn": {i: [(int(rng.integers(2)), int(rng.integers(48))) for _ in range(3)] for i in range(len(facts))}}
    run = make_run(facts, sets, tmp_path)
    before = state(kn)
    edits, attempts = run_updating(kn, run, arms=("kn", "random"), seed=5, edits_per_relation=3, max_tries=100,
                                   share=1.0)
    assert all(torch.equal(before[k], v) for k, v in state(kn).items())  # every edit undone exactly
    assert len(edits) > 0 and set(edits["method"]) <= {"kn", "random"}
    assert (attempts["edits"] <= 3).all() and (attempts["incorrect_answer"] == 0).all()
    again, _ = run_updating(kn, run, arms=("kn", "random"), seed=5, edits_per_relation=3, max_tries=100, share=1.0)
    assert again.equals(edits)

    def logppl(fact_ids):  # the slow way: -log p(gold) from probabilities, mean over all prompts
        ps = [kn.probability(p, facts.facts[i].object) for i in fact_ids for p in facts.facts[i].prompts]
        return float(np.mean([-math.log(p) for p in ps]))

    import json

    from kneuron.edits import plan_update

    for row in edits.head(3).itertuples():
        intra, inter = json.loads(row.intra_facts), json.loads(row.inter_facts)
        assert len(intra) == 5 and len(inter) == 5 and row.fact not in intra
        assert {facts.facts[i].relation for i in intra} == {row.relation}
        assert row.relation not in {facts.facts[i].relation for i in inter}
        assert row.intra_logppl_orig == pytest.approx(logppl(intra), abs=1e-4)
        assert row.inter_logppl_orig == pytest.approx(logppl(inter), abs=1e-4)
        neurons = [tuple(int(x) for x in s[1:].split(".")) for s in row.neuron_list.split()]
        edit = plan_update(kn, neurons, row.original, row.target, prompts=facts.facts[row.fact].prompts)
        assert edit.info["direction"] == "paper"  # BERT: the default keeps the paper's rule
        paper = plan_update(kn, neurons, row.original, row.target, direction="paper")
        for k, sign in enumerate(edit.info["signs"]):  # +1: the paper's slot bit for bit; -1: the change flipped
            if sign > 0:
                assert torch.equal(edit.values[k], paper.values[k])
            else:
                base = paper.base_values[k]
                assert torch.allclose(edit.values[k] - base, -(paper.values[k] - base), atol=1e-5)
        with edit.apply(kn):
            assert row.intra_logppl_new == pytest.approx(logppl(intra), abs=1e-4)
            assert row.inter_logppl_new == pytest.approx(logppl(inter), abs=1e-4)
            top = kn.predict(row.prompt, 1)[0][0]
            assert row.success == int(top == row.target) and row.changed == int(top != row.original)
            assert row.p_target_new == pytest.approx(kn.probability(row.prompt, row.target), abs=1e-6)
    summary = updating_summary(edits).set_index("method")
    g = edits[edits["method"] == "kn"]
    assert summary.loc["kn", "success_rate"] == pytest.approx(100 * g["success"].mean())
    assert summary.loc["kn", "delta_intra_ppl"] == pytest.approx(
        math.exp(g["intra_logppl_new"].mean()) - math.exp(g["intra_logppl_orig"].mean()))
    assert summary.loc["kn", "delta_inter_ppl"] == pytest.approx(
        math.exp(g["inter_logppl_new"].mean()) - math.exp(g["inter_logppl_orig"].mean()))
    # The 10% filter (paper default) drops everything in relations of fewer than 20 facts.
    none, att = run_updating(kn, run, arms=("kn",), seed=5, max_tries=30)
    assert len(none) == 0 and (att["no_kn"] == 30).all()


# -- erasing ------------------------------------------------------------------------------------------

def test_erasing_against_manual_zeroing(kn, tmp_path):
    facts = predicted_facts(kn)
    sets = {"kn": {i: [(1, i % 4), (0, 7), (1, 10 + i)] for i in range(len(facts))}}
    run = make_run(facts, sets, tmp_path)
    rel = run.relations[0]
    table = run_erasing(kn, run, relations=[rel], top_k=3, controls=("random",), seed=1)
    row = table[table["neurons_from"] == "kn"].iloc[0]
    # Most frequent first: (0,7) is in every fact, then (1,0), (1,1) by count and first appearance.
    assert row["neuron_list"] == "L0.7 L1.0 L1.1"

    def ppl_acc(fact_ids):
        ps = [kn.probability(p, facts.facts[i].object) for i in fact_ids for p in facts.facts[i].prompts]
        acc = [kn.predict(p, 1)[0][0] == facts.facts[i].object for i in fact_ids for p in facts.facts[i].prompts]
        return math.exp(np.mean([-math.log(p) for p in ps])), 100 * np.mean(acc)

    mine = run.universe[rel]
    others = [i for r, idx in run.universe.items() if r != rel for i in idx]
    assert (row["ppl_before"], row["acc_before"]) == pytest.approx(ppl_acc(mine), rel=1e-5)
    assert (row["other_ppl_before"], row["other_acc_before"]) == pytest.approx(ppl_acc(others), rel=1e-5)
    before = state(kn)
    with torch.no_grad():
        for layer, index in ((0, 7), (1, 0), (1, 1)):
            kn.model.bert.encoder.layer[layer].output.dense.weight[:, index] = 0
    try:
        assert (row["ppl_after"], row["acc_after"]) == pytest.approx(ppl_acc(mine), rel=1e-5)
        assert (row["other_ppl_after"], row["other_acc_after"]) == pytest.approx(ppl_acc(others), rel=1e-5)
    finally:
        kn.model.load_state_dict(before)
    assert row["ppl_change_pct"] == pytest.approx(100 * (row["ppl_after"] / row["ppl_before"] - 1))
    ctl = table[table["neurons_from"] == "random"].iloc[0]
    assert ctl["neurons"] == 3 and ctl["ppl_before"] == row["ppl_before"]
    assert default_erase_relations(["P1", "P19", "P937"]) == ["P19", "P937"]
    assert default_erase_relations(["W1", "W2"]) == ["W1", "W2"]


# -- the paper's numbers ------------------------------------------------------------------------------

def test_comparison_table_places_numbers():
    stats = pd.DataFrame([{"method": "kn", "neurons_per_fact": 4.0, "intra_intersection": 1.0,
                           "inter_intersection": 0.5},
                          {"method": "baseline", "neurons_per_fact": 3.0, "intra_intersection": 2.0,
                           "inter_intersection": 1.5}])
    update = pd.DataFrame([{"method": "kn", "change_rate": 50.0, "success_rate": 30.0, "delta_intra_ppl": 1.0,
                            "delta_inter_ppl": 2.0},
                           {"method": "random", "change_rate": 5.0, "success_rate": 0.0, "delta_intra_ppl": 3.0,
                            "delta_inter_ppl": 4.0}])
    table = paper.comparison_table(stats=stats, update=update).set_index("quantity")
    assert table.loc["neurons per fact", ["ours_kn", "ours_control", "paper_kn", "paper_control"]].tolist() == \
        [4.0, 3.0, 4.13, 3.96]
    assert table.loc["success rate ↑", ["ours_kn", "ours_control", "paper_kn"]].tolist() == [30.0, 0.0, 34.4]
    assert math.isnan(table.loc["mean activation, T1 (head and tail)", "ours_kn"])
    assert table.loc["mean activation, T3 (random)", "paper_kn"] == -0.018
    assert paper.erasing_means()[0] == pytest.approx((106.6 + 36.7 + 128.2 + 141.2) / 4)
    assert len(paper.erasing_table()) == 4
