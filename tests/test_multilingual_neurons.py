"""Multilingual knowledge neurons and neuron interactions on a model whose neurons are set by hand."""

from __future__ import annotations

from itertools import combinations

import pytest
import torch
from handmade_model import (
    EN_ONLY,
    EN_PROMPTS,
    ESSENTIAL,
    LU_ONLY,
    LU_PROMPTS,
    PAIR_A,
    PAIR_B,
    SHARED,
    SOLO_PROMPTS,
    TWIN_PROMPTS,
)

from kneuron.errors import KneuronError
from kneuron.experiments.multilingual import cross_lingual_effects, effect_matrix, shared_neurons
from kneuron.neurons import Neuron


@pytest.mark.parametrize("method", ["pooled", "intersection"])
def test_shared_finds_the_neuron_that_carries_the_fact_in_both_languages(handmade, method):
    found = handmade.find_multilingual_neurons({"en": EN_PROMPTS, "lu": LU_PROMPTS}, "Paris", shared=method)
    assert found.shared == [Neuron(0, SHARED)]
    assert found.by_language == {"en": [Neuron(0, SHARED), Neuron(0, EN_ONLY)],
                                 "lu": [Neuron(0, SHARED), Neuron(0, LU_ONLY)]}
    assert found.specific == {"en": [Neuron(0, EN_ONLY)], "lu": [Neuron(0, LU_ONLY)]}
    table = found.table()
    assert table.loc[table["shared"], "neuron"].tolist() == ["L0.0"]


def test_shared_definitions_differ_where_one_language_is_weak():
    """A neuron in every prompt of two languages and half of the third: AMIG's intersection drops it
    (it misses the sharing threshold there), the pooled mean of shares keeps it; a neuron absent
    from a language is in neither."""
    a, b = Neuron(1, 1), Neuron(2, 2)
    shares = {a: {"x": 1.0, "y": 1.0, "z": 0.5}, b: {"x": 1.0, "y": 1.0}}
    by_language = {"x": [a, b], "y": [a, b], "z": []}
    assert shared_neurons(by_language, shares, "intersection") == []
    assert shared_neurons(by_language, shares, "pooled", p=0.7) == [a]
    assert shared_neurons(by_language, shares, "pooled", p=0.9) == []
    with pytest.raises(KneuronError, match="unknown shared-neuron method"):
        shared_neurons(by_language, shares, "union")


def test_cross_lingual_matrix_moves_only_where_the_neurons_act(handmade):
    found = handmade.find_multilingual_neurons({"en": EN_PROMPTS, "lu": LU_PROMPTS}, "Paris")
    effects = cross_lingual_effects(handmade, found, seed=0)
    # each (set, prompt) equals suppressing that set alone on that prompt
    for _, row in effects.iterrows():
        s = found.by_language.get(row["suppressed"], found.shared) if row["control"] == "kn" else None
        if s is not None:
            with handmade.suppress(s):
                assert row["p_suppressed"] == pytest.approx(handmade.probability(row["prompt"], "Paris"), abs=1e-6)
    matrix = effect_matrix(effects)
    assert list(matrix.index) == ["en", "lu", "shared"] and list(matrix.columns) == ["en", "lu"]
    # the English set (shared + English-only) removes the fact in English, not in Lurian, where the
    # Lurian-only neuron still writes Paris
    assert matrix.loc["en", "en"] < -0.9 and matrix.loc["en", "lu"] > -0.01
    assert matrix.loc["lu", "lu"] < -0.9 and matrix.loc["lu", "en"] > -0.01
    assert effect_matrix(effects, "random").shape == (3, 2)


def test_a_planted_redundant_pair_is_degenerate_and_an_essential_neuron_is_not(handmade):
    every = [(0, i) for i in range(8)]
    twin = handmade.neuron_interactions(TWIN_PROMPTS, "Rome", every)
    assert twin.degenerate_pairs() == [(Neuron(0, PAIR_A), Neuron(0, PAIR_B))]
    assert twin.single_effects()[Neuron(0, PAIR_A)] > -0.01          # alone: dispensable
    assert twin.pair_effects()[(Neuron(0, PAIR_A), Neuron(0, PAIR_B))] < -0.99
    assert twin.interaction(Neuron(0, PAIR_A), Neuron(0, PAIR_B)) < -0.98
    assert twin.greedy["reached"] and twin.greedy["size"] == 2
    assert set(twin.greedy["neurons"]) == {"L0.3", "L0.4"}

    solo = handmade.neuron_interactions(SOLO_PROMPTS, "Oslo", every)
    assert solo.single_effects()[Neuron(0, ESSENTIAL)] < -0.99    # essential alone ...
    assert solo.degenerate_pairs() == []                         # ... so in no degenerate pair
    assert not solo.greedy["reached"]  # no set of dispensable neurons removes it
    # thresholds are options: demanding less of the joint drop changes nothing here, demanding an
    # impossible single keep finds nothing
    assert twin.degenerate_pairs(keep_alone=1.01) == []
    # without arguments the thresholds are the ones the result was computed with, so a result made
    # with an impossible single keep counts no pair, in its table and its saved form alike
    strict = handmade.neuron_interactions(TWIN_PROMPTS, "Rome", every, keep_alone=1.01)
    assert strict.settings["keep_alone"] == 1.01
    assert strict.degenerate_pairs() == [] and not strict.table()["degenerate"].any()
    assert strict.to_dict()["degenerate_pairs"] == []


def test_batched_pair_effects_equal_one_call_at_a_time(llama):
    kn = llama
    prompts = ["The capital of Ireland is", "Dublin is the capital of", "The capital of France is"]
    neurons = [Neuron(layer, index) for layer, index in [(0, 1), (0, 7), (1, 3), (1, 30), (2, 5), (2, 11)]]
    result = kn.neuron_interactions(prompts, "Dublin", neurons, greedy=False, batch=7)
    for a, b in combinations(neurons, 2):
        with kn.suppress([a, b]):
            alone = float(kn.probabilities(prompts, "Dublin").double().mean())
        assert result.pair[(a, b)] == pytest.approx(alone, rel=1e-5, abs=1e-9)
    for a in neurons:
        with kn.suppress([a]):
            assert result.single[a] == pytest.approx(float(kn.probabilities(prompts, "Dublin").double().mean()),
                                                     rel=1e-5, abs=1e-9)
    matrix = result.interaction_matrix()
    assert torch.allclose(matrix, matrix.T)
    assert matrix[0, 1] == pytest.approx(result.interaction(neurons[0], neurons[1]))


def test_default_neurons_are_the_top_20_by_ig(llama):
    kn = llama
    prompts = ["The capital of Ireland is", "The capital of France is"]
    result = kn.neuron_interactions(prompts, "Dublin", greedy=False)
    assert len(result.neurons) == 20 and len(result.pair) == 190
    total = sum(r.scores for r in kn.attribute(prompts, "Dublin"))
    best = total.flatten().topk(20).indices.tolist()
    assert [n.layer * total.shape[1] + n.index for n in result.neurons] == best


def test_bad_inputs(handmade):
    with pytest.raises(KneuronError, match="no prompts"):
        handmade.find_multilingual_neurons({"en": EN_PROMPTS, "lu": []}, "Paris")
    with pytest.raises(KneuronError, match="no answer for language"):
        handmade.find_multilingual_neurons({"en": EN_PROMPTS, "lu": LU_PROMPTS}, {"en": "Paris"})
    with pytest.raises(KneuronError, match="at least 2 distinct neurons"):
        handmade.neuron_interactions(TWIN_PROMPTS, "Rome", [(0, 1), (0, 1)])


def test_cli_multilingual_and_interactions(handmade, tmp_path, capsys):
    import json

    from kneuron.cli import main

    model = handmade.name
    data = tmp_path / "facts.jsonl"
    rows = [{"relation": "r", "subject": "s", "object": "Paris", "prompts": {"en": EN_PROMPTS, "lu": LU_PROMPTS}},
            {"relation": "r", "subject": "t", "object": {"en": "Rome", "lu": "Rome"},
             "prompts": {"en": TWIN_PROMPTS, "lu": TWIN_PROMPTS}}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "ml"
    assert main(["multilingual", "--model", model, "--data", str(data), "--out", str(out),
                 "--interactions", "--top", "6"]) == 0
    said = capsys.readouterr().out
    assert "[interactions 1/4] s [en]:" in said and "[interactions 4/4] t [lu]:" in said
    assert "t [en]: 1 degenerate pairs, greedy set 2" in said  # the handmade layer is too narrow for a null
    for name in ("report.html", "report.md", "figures/cross_lingual.png", "tables/cross_lingual_matrix.csv",
                 "tables/cross_lingual_matrix_random.csv", "data/sets.csv", "data/effects.csv", "multilingual.json"):
        assert (out / name).is_file(), name
    import pandas as pd

    sets = pd.read_csv(out / "data" / "sets.csv")
    shared = sets[(sets["set"] == "shared") & (sets["definition"] == "pooled") & (sets["fact"] == 0)]
    assert shared["neuron"].tolist() == ["L0.0"]
    assert 'id="figure-cross_lingual"' in (out / "report.html").read_text(encoding="utf-8")
    pairs = pd.read_csv(out / "data" / "interactions.csv")
    twin = pairs[pairs["fact"] == "t [en]"]
    assert twin.loc[twin["degenerate"], ["a", "b"]].values.tolist() == [["L0.3", "L0.4"]]
    # rerunning replaces the output; a foreign directory is refused
    assert main(["multilingual", "--model", model, "--data", str(data), "--out", str(out), "--shared",
                 "intersection"]) == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("x")
    assert main(["multilingual", "--model", model, "--data", str(data), "--out", str(foreign)]) == 2
    assert "is not a `kneuron multilingual` output" in capsys.readouterr().err

    js, fig = tmp_path / "i.json", tmp_path / "i.png"
    assert main(["interactions", "Rome", *TWIN_PROMPTS, "--model", model, "--neurons", "0:3,0:4,L0.5",
                 "--json", str(js), "--figure", str(fig)]) == 0
    result = json.loads(js.read_text())
    assert result["degenerate_pairs"] == [["L0.3", "L0.4"]] and result["greedy"]["size"] == 2
    assert fig.stat().st_size > 0
    assert main(["interactions", "Rome", *TWIN_PROMPTS, "--model", model, "--keep-alone", "2"]) == 2
