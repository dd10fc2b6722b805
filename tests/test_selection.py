"""Neuron selection follows the authors' code (spec sections 2-4), quirks included."""

import torch

from kneuron.neurons import Neuron
from kneuron.selection import adapt_p, baseline_neurons, coarse_neurons, random_like, refine


def test_coarse_threshold_is_relative_to_global_max_and_inclusive():
    scores = torch.tensor([[1.0, 0.2, 0.19], [0.5, -2.0, 0.2000001]])
    assert coarse_neurons(scores) == [Neuron(0, 0), Neuron(0, 1), Neuron(1, 0), Neuron(1, 2)]
    assert coarse_neurons(scores, 0.5) == [Neuron(0, 0), Neuron(1, 0)]


def test_coarse_with_nonpositive_max_mirrors_code():
    assert coarse_neurons(torch.tensor([[-1.0, -0.5]])) == []  # 0.2 * max > max: nothing kept
    assert coarse_neurons(torch.tensor([[0.0, -0.5]])) == [Neuron(0, 0)]


def test_baseline_uses_half_max_activation():
    acts = torch.tensor([[2.0, 1.0, 0.99], [0.0, 1.5, -3.0]])
    assert baseline_neurons(acts) == [Neuron(0, 0), Neuron(0, 1), Neuron(1, 1)]


def test_refine_floor_of_three_and_ge():
    a, b, c = Neuron(0, 1), Neuron(1, 2), Neuron(2, 3)
    sets = [[a, b], [a, b], [a, c], [b, c]]  # a: 3, b: 3, c: 2 of 4 prompts
    assert refine(sets, p=0.5) == [a, b]  # floor 3 beats 0.5 * 4 = 2
    assert refine(sets, p=0.75) == [a, b]  # 3 >= 3.0
    assert refine(sets, p=0.8) == []  # needs 3.2


def test_refine_keeps_first_appearance_order():
    x, y, z = Neuron(5, 0), Neuron(0, 9), Neuron(2, 2)
    sets = [[x, y], [z, y, x], [z, x, y], [x, y, z]]
    assert refine(sets, p=0.7) == [x, y, z]


def test_float_drift_on_the_way_up_flips_ties():
    # n = 20 at p = 0.9 reached from 0.7 by +0.05 steps needs 19 prompts (0.9000000000000001 * 20 > 18).
    p = 0.7
    for _ in range(4):
        p = p + 0.05
    assert p * 20 > 18
    n = Neuron(0, 0)
    sets = [[n]] * 18 + [[]] * 2
    assert refine(sets, p=p) == []
    assert refine(sets, p=0.9) == [n]


def _facts_with(counts_per_fact, n_prompts=10):
    """Facts whose neuron k appears in counts[k] of the n prompts."""
    facts = []
    for counts in counts_per_fact:
        prompts = [[Neuron(0, k) for k, c in enumerate(counts) if j < c] for j in range(n_prompts)]
        facts.append(prompts)
    return facts


def test_adaptation_moves_p_until_in_count_range():
    # Neurons shared by 10, 9, 8, 7, 6, 5, 4 of 10 prompts: p=0.7 keeps 4 -> already in [2, 5].
    facts = _facts_with([[10, 9, 8, 7, 6, 5, 4]] * 3)
    res = adapt_p(facts)
    assert res.p == 0.7 and res.tries == 1 and res.average == 4 and res.converged
    # Too many neurons: p rises until the drifted 0.9000000000000001 drops the neurons in 9 of 10 prompts.
    res = adapt_p(_facts_with([[10, 10, 10, 10, 9, 9, 9, 7, 7]]))
    assert [a for _, a in res.history] == [9.0, 7.0, 7.0, 7.0, 4.0]
    assert res.tries == 5 and res.converged and res.average == 4.0
    assert res.p > 0.9 and round(res.p, 10) == 0.9


def test_adaptation_stops_after_six_tries_keeping_last():
    facts = _facts_with([[10] * 12])  # 12 neurons whatever p: never within [2, 5]
    res = adapt_p(facts)
    assert res.tries == 6 and not res.converged and res.average == 12
    assert [round(p, 10) for p, _ in res.history] == [0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert res.p == res.history[-1][0]
    few = adapt_p(_facts_with([[1]]))  # nothing survives the floor
    assert [round(p, 10) for p, _ in few.history] == [0.7, 0.65, 0.6, 0.55, 0.5, 0.45]


def test_adaptation_converges_on_its_own_count_range():
    facts = _facts_with([[10] * 12])  # 12 neurons whatever p
    res = adapt_p(facts, count_range=(10.0, 12.0))
    assert res.tries == 1 and res.converged and res.count_range == (10.0, 12.0)
    assert not adapt_p(facts, count_range=(1.0, 3.0)).converged


def test_random_control_draws_with_replacement():
    # One layer of two neurons, a set of 8: with replacement, some neuron repeats (the authors' control).
    drawn = random_like([[Neuron(0, 0)] * 8], 1, 2, seed=0)[0]
    assert len(drawn) == 8 and len(set(drawn)) <= 2


def test_random_control_matches_counts_and_is_seeded():
    sets = [[Neuron(0, 1)] * 3, [], [Neuron(1, 1)]]
    a = random_like(sets, 12, 3072, seed=7)
    assert [len(s) for s in a] == [3, 0, 1]
    assert a == random_like(sets, 12, 3072, seed=7)
    assert a != random_like(sets, 12, 3072, seed=8)
    assert all(0 <= n.layer < 12 and 0 <= n.index < 3072 for s in a for n in s)
