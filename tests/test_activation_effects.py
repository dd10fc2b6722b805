"""The paper's suppression/amplification metric: ratio of means per relation, mean over relations."""

import pandas as pd
import pytest
from tiny_models import save_tiny_bert

import kneuron
from kneuron.data.facts import Fact, FactSet
from kneuron.experiments import method_means, prompt_effects, relation_ratios


def test_ratio_of_means_not_mean_of_ratios():
    df = pd.DataFrame([
        # relation A: p_orig 0.1 -> 0.0 and 0.9 -> 0.9: ratio of means = -0.1/1.0 = -10%
        {"method": "kn", "relation": "A", "fact": 0, "prompt": 0, "neurons": 2, "p_orig": 0.1, "p_suppress": 0.0, "p_amplify": 0.2},
        {"method": "kn", "relation": "A", "fact": 1, "prompt": 0, "neurons": 0, "p_orig": 0.9, "p_suppress": 0.9, "p_amplify": 0.9},
        # relation B: 0.5 -> 0.25: -50%
        {"method": "kn", "relation": "B", "fact": 2, "prompt": 0, "neurons": 1, "p_orig": 0.5, "p_suppress": 0.25, "p_amplify": 0.5},
    ])
    ratios = relation_ratios(df)
    a = ratios[ratios.relation == "A"].iloc[0]
    assert a["suppress"] == pytest.approx(-10.0) and a["amplify"] == pytest.approx(10.0)
    assert a["neurons_per_fact"] == 1.0  # the fact without neurons counts
    means = method_means(ratios)
    assert means.iloc[0]["suppress"] == pytest.approx((-10.0 - 50.0) / 2)  # unweighted over relations


def test_prompt_effects_rows(tmp_path):
    kn = kneuron.load(str(save_tiny_bert(tmp_path)), device="cpu")
    facts = FactSet([Fact("R", "Ireland", "Dublin", ["The capital of Ireland is [MASK].", "[MASK] is in Ireland ."]),
                     Fact("R", "France", "Paris", ["The capital of France is [MASK]."])])
    eff = prompt_effects(kn, facts, {"kn": {0: [(0, 1), (2, 3)]}, "none": {}})
    assert len(eff) == 6
    none = eff[eff.method == "none"]
    assert (none.p_suppress == none.p_orig).all() and (none.p_amplify == none.p_orig).all()
    row = eff[(eff.method == "kn") & (eff.fact == 0) & (eff.prompt == 0)].iloc[0]
    with kn.suppress([(0, 1), (2, 3)]):
        assert row.p_suppress == kn.probability("The capital of Ireland is [MASK].", "Dublin")
    assert eff[(eff.method == "kn") & (eff.fact == 1)].p_suppress.iloc[0] == eff[(eff.method == "kn") & (eff.fact == 1)].p_orig.iloc[0]
