"""The null of neuron interactions: degenerate pairs and greedy sets among random neurons matched by
layer and activation bin, recomputed by hand."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import torch
from handmade_model import PAIR_A, PAIR_B, TWIN_PROMPTS

from kneuron.errors import KneuronError
from kneuron.experiments.interactions import activation_bins, compare_to_null, matched_random_sets
from kneuron.neurons import Neuron

PROMPTS = ["The capital of Ireland is", "Dublin is the capital of", "The capital of France is"]
NEURONS = [Neuron(0, 1), Neuron(1, 3), Neuron(1, 30), Neuron(2, 5)]
# loose thresholds so that a random tiny model has degenerate pairs and greedy sets to count
LOOSE = {"keep_alone": 0.0, "drop_joint": 1.0, "remove": 0.999}


@pytest.fixture(scope="module")
def seven(llama):
    return llama.neuron_interactions(PROMPTS, "Dublin", NEURONS, null_repeats=3, null_seed=7, null_bins=4, **LOOSE)


def by_hand_draws(kn, neurons, repeats, seed, bins):
    """The documented matching, written out: rank each layer's neurons by mean activation at the
    blank (ties by index), bin = rank * bins // width; draw each neuron's counterpart uniformly from
    its bin's sorted free indices with one generator."""
    acts = sum(kn.activations(q, "Dublin") for q in PROMPTS) / len(PROMPTS)
    width = acts.shape[1]
    bin_of = {}
    for layer in range(acts.shape[0]):
        order = sorted(range(width), key=lambda j: (float(acts[layer, j]), j))
        bin_of.update({(layer, j): rank * bins // width for rank, j in enumerate(order)})
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(repeats):
        taken = []
        for n in neurons:
            free = [j for j in range(width) if bin_of[(n.layer, j)] == bin_of[(n.layer, n.index)]
                    and Neuron(n.layer, j) not in neurons and Neuron(n.layer, j) not in taken]
            taken.append(Neuron(n.layer, free[rng.integers(len(free))]))
        draws.append(taken)
    return draws, bin_of


def mean_p(kn, suppressed):
    with kn.suppress(suppressed):
        return float(kn.probabilities(PROMPTS, "Dublin").double().mean())


def test_null_equals_a_computation_by_hand(llama, seven):
    kn, null = llama, seven.null
    assert null["available"] and null["bins"] == 4 and null["seed"] == 7 and null["repeats"] == 3
    assert seven.settings["null_seed"] == 7 and seven.settings["null_repeats"] == 3
    draws, _ = by_hand_draws(kn, NEURONS, 3, 7, 4)
    assert null["draws"] == [[str(n) for n in d] for d in draws]

    p = mean_p(kn, [])
    degenerate, sizes = [], []
    for drawn in draws:
        single = {n: mean_p(kn, [n]) for n in drawn}
        count = 0
        for a, b in combinations(drawn, 2):
            count += single[a] / p >= 0.0 and single[b] / p >= 0.0 and mean_p(kn, [a, b]) / p < 1.0
        degenerate.append(count)
        chosen, size = [], None  # greedy: add the neuron that lowers the joint probability most
        while len(chosen) < len(drawn):
            kept = {n: mean_p(kn, chosen + [n]) for n in drawn if n not in chosen}
            chosen.append(min(kept, key=kept.get))
            if kept[chosen[-1]] / p < 0.999:
                size = len(chosen)
                break
        sizes.append(size)
    d = null["degenerate_pairs"]
    assert d["null"] == degenerate
    assert d["observed"] == len(seven.degenerate_pairs(0.0, 1.0))
    assert d["null_mean"] == pytest.approx(np.mean(degenerate))
    assert d["p_value"] == pytest.approx((1 + sum(v >= d["observed"] for v in degenerate)) / 4)
    assert d["null_low"] == min(degenerate) and d["null_high"] == max(degenerate)  # 3 draws: the extremes
    g = null["greedy_size"]
    assert g["null"] == sizes and g["observed"] == seven.greedy["size"]
    inf = float("inf")
    obs = inf if g["observed"] is None else g["observed"]
    assert g["p_value"] == pytest.approx((1 + sum((inf if v is None else v) <= obs for v in sizes)) / 4)
    table = seven.null_table()
    assert table["statistic"].tolist() == ["degenerate_pairs", "greedy_size"]
    assert table.loc[0, "p_value"] == pytest.approx(d["p_value"]) and (table["seed"] == 7).all()
    saved = json.loads(json.dumps(seven.to_dict()))
    assert saved["null"]["degenerate_pairs"]["null"] == degenerate and saved["settings"]["null_seed"] == 7


def test_matched_neurons_share_layer_and_activation_bin(llama):
    acts = torch.stack([llama.activations(q, "Dublin").double() for q in PROMPTS]).mean(0)
    neurons = [Neuron(0, 0), Neuron(0, 1), Neuron(1, 2), Neuron(2, 40), Neuron(2, 41)]
    sets, used = matched_random_sets(acts, neurons, repeats=10, seed=0, bins=6)
    assert used == 6
    bins = activation_bins(acts, used)
    # equal-count bins: every layer has width / bins neurons per bin
    assert all(torch.bincount(bins[layer], minlength=6).tolist() == [8] * 6 for layer in range(acts.shape[0]))
    _, by_hand = by_hand_draws(llama, neurons, 0, 0, 6)
    assert all(int(bins[layer, j]) == b for (layer, j), b in by_hand.items())
    for drawn in sets:
        assert len(set(drawn)) == len(drawn) and not set(drawn) & set(neurons)
        for n, m in zip(neurons, drawn):
            assert m.layer == n.layer and bins[m.layer, m.index] == bins[n.layer, n.index]
    # a bin with fewer free neurons than studied ones halves the bins until it has enough
    top = acts[1].argsort(descending=True)[:5].tolist()
    crowded = [Neuron(1, j) for j in top]  # the 5 most active neurons of layer 1: 6 bins of 8 hold 3 free
    sets, used = matched_random_sets(acts, crowded, repeats=4, seed=1, bins=6)
    assert used == 3
    bins = activation_bins(acts, 3)
    assert all(bins[1, m.index] == bins[1, n.index] for d in sets for n, m in zip(crowded, d))
    with pytest.raises(KneuronError, match="too few unstudied neurons"):
        matched_random_sets(acts, [Neuron(1, j) for j in range(30)], repeats=1, bins=6)


def test_null_reproduces_with_its_seed_and_changes_with_another(llama, seven):
    again = llama.neuron_interactions(PROMPTS, "Dublin", NEURONS, null_repeats=3, null_seed=7, null_bins=4, **LOOSE)
    assert again.null == seven.null
    other = llama.neuron_interactions(PROMPTS, "Dublin", NEURONS, null_repeats=3, null_seed=8, null_bins=4,
                                     greedy=False, **LOOSE)
    assert other.null["seed"] == 8 and other.null["draws"] != seven.null["draws"]
    assert "greedy_size" not in other.null
    assert llama.neuron_interactions(PROMPTS, "Dublin", NEURONS, greedy=False, null_repeats=0).null == {}


def test_a_planted_degenerate_pair_beats_its_null(handmade):
    """Neurons 3 and 4 fire on the twin cue and are a degenerate pair; every other neuron is silent
    there.  Matched by activation (the top half of the layer, bins halved from 10 to 2), the null
    draws the two most active silent neurons: no degenerate pair, no greedy set."""
    res = handmade.neuron_interactions(TWIN_PROMPTS, "Rome", [(0, PAIR_A), (0, PAIR_B)], null_repeats=9)
    null = res.null
    assert null["bins"] == 2 and all(set(d) == {"L0.6", "L0.7"} for d in null["draws"])
    d, g = null["degenerate_pairs"], null["greedy_size"]
    assert (d["observed"], d["null_mean"], d["null_low"], d["null_high"]) == (1, 0.0, 0, 0)
    assert d["p_value"] == pytest.approx(0.1) and g["p_value"] == pytest.approx(0.1)
    assert g["observed"] == 2 and g["null"] == [None] * 9 and g["null_defined"] == 0.0 and g["null_mean"] is None
    # every neuron of the layer studied: nothing left to draw, said so
    every = handmade.neuron_interactions(TWIN_PROMPTS, "Rome", [(0, i) for i in range(8)], null_repeats=2)
    assert every.null["available"] is False and "too few" in every.null["reason"]
    assert every.null_table().empty


def test_compare_to_null_by_hand():
    c = compare_to_null(3, [0, 1, 3, 5, 2, 0, 1, 1, 0, 4], "greater")
    assert c["null_mean"] == pytest.approx(1.7) and c["p_value"] == pytest.approx(4 / 11)
    assert (c["null_low"], c["null_high"]) == (0, 5)
    g = compare_to_null(2, [None, 3, 2, None], "less")
    assert g["p_value"] == pytest.approx(2 / 5) and g["null_mean"] == pytest.approx(2.5)
    assert (g["null_low"], g["null_high"], g["null_defined"]) == (2, None, 0.5)
    assert compare_to_null(None, [None, 3], "less")["p_value"] == 1.0


def test_cli_reports_the_null(handmade, tmp_path, capsys):
    import pandas as pd

    from kneuron.cli import main

    js = tmp_path / "i.json"
    assert main(["interactions", "Rome", *TWIN_PROMPTS, "--model", handmade.name, "--neurons", "0:3,0:4",
                 "--null-repeats", "4", "--null-seed", "5", "--json", str(js)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps lines
    assert "degenerate pairs: observed 1; null mean 0, 95% interval [0, 0], one-sided p = 0.2" in out
    assert "greedy set size: observed 2; null mean none reached, 95% interval [not reached, not reached]" in out and "seed 5" in out
    saved = json.loads(js.read_text())
    assert saved["null"]["seed"] == 5 and saved["null"]["degenerate_pairs"]["p_value"] == pytest.approx(0.2)

    data = tmp_path / "facts.jsonl"
    data.write_text(json.dumps({"relation": "r", "subject": "t", "object": "Rome",
                                "prompts": {"en": TWIN_PROMPTS, "lu": TWIN_PROMPTS}}) + "\n", encoding="utf-8")
    ml = tmp_path / "ml"
    assert main(["multilingual", "--model", handmade.name, "--data", str(data), "--out", str(ml), "--interactions",
                 "--top", "2", "--null-repeats", "3", "--seed", "11"]) == 0
    assert "degenerate pairs, all facts: observed 2; null mean 0" in " ".join(capsys.readouterr().out.split())
    summary = pd.read_csv(ml / "tables" / "interactions_summary.csv")
    assert summary["degenerate_p"].tolist() == pytest.approx([0.25, 0.25])
    assert summary["null_seed"].nunique() == 2 and (summary["null_repeats"] == 3).all()
    totals = pd.read_csv(ml / "tables" / "interactions_null.csv").set_index("statistic")
    assert totals.loc["degenerate_pairs", "observed"] == 2 and totals.loc["degenerate_pairs", "null_high"] == 0
    assert totals.loc["greedy_reached", "observed"] == 2 and totals.loc["greedy_reached", "p_value"] == 0.25
    config = json.loads((ml / "multilingual.json").read_text())
    assert config["null_repeats"] == 3 and config["seed"] == 11


def test_interactions_compute_each_prefix_once_and_agree_with_plain_suppression(llama, monkeypatch):
    from kneuron.interventions import cached

    prefixes, suffix_rows = [], []
    real_prefix, real_suffix = cached.prefix_cache, cached._run_suffix
    monkeypatch.setattr(cached, "prefix_cache", lambda model, ids: prefixes.append(ids.shape[0]) or real_prefix(model, ids))
    monkeypatch.setattr(cached, "_run_suffix",
                        lambda kn, store, encoded, *a: suffix_rows.append(len(encoded)) or real_suffix(kn, store, encoded, *a))
    res = llama.neuron_interactions(PROMPTS, "Dublin", NEURONS, null_repeats=2, null_seed=1, **LOOSE)
    assert sum(prefixes) == len(PROMPTS)  # one store for pairs, greedy search and null: each prefix once
    # 4 singles + 6 pairs, the greedy search, 2 null draws of the same: every row through the cached route
    assert sum(suffix_rows) >= (4 + 6) * 3 * len(PROMPTS)
    for n in NEURONS:
        assert res.single[n] == pytest.approx(mean_p(llama, [n]), rel=1e-4)
    for (a, b), v in res.pair.items():
        assert v == pytest.approx(mean_p(llama, [a, b]), rel=1e-4)
