"""Suppression and amplification: blank only, one pass, model untouched afterwards."""

import pytest
import torch
from tiny_models import save_tiny_bert

import kneuron
from kneuron.errors import NeuronError

PROMPT = "The capital of Ireland is [MASK]."


@pytest.fixture(scope="module")
def kn(tmp_path_factory):
    return kneuron.load(str(save_tiny_bert(tmp_path_factory.mktemp("bert"))), device="cpu")


def manual_probability(kn, prompt, answer, neurons, factor):
    """Independent path: forward hooks on BertIntermediate's output (the spec's activation site)."""
    enc = kn.encode(prompt)
    handles = []
    for layer in {n[0] for n in neurons}:
        idx = [n[1] for n in neurons if n[0] == layer]

        def hook(module, args, out, idx=idx):
            out = out.clone()
            out[:, enc.blank[0], idx] *= factor
            return out
        handles.append(kn.model.bert.encoder.layer[layer].intermediate.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = kn.model(input_ids=torch.tensor([enc.ids])).logits[0, enc.blank[0]]
    finally:
        for h in handles:
            h.remove()
    return float(torch.softmax(logits, -1)[kn.answer_id(answer)])


def no_hooks(model):
    return not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("factor", [0.0, 2.0, 0.5])
def test_matches_independent_implementation(kn, factor):
    neurons = [(0, 3), (0, 17), (2, 5), (1, 60)]
    with kn.amplify(neurons, factor):
        ours = kn.probability(PROMPT, "Dublin")
    assert ours == pytest.approx(manual_probability(kn, PROMPT, "Dublin", neurons, factor), rel=1e-5)
    assert no_hooks(kn.model)


def test_suppress_changes_only_the_blank(kn):
    neurons = [(1, n) for n in range(kn.num_neurons)]
    enc = kn.encode(PROMPT)
    seen = {}

    def record(module, args):
        seen["x"] = args[0].detach().clone()

    site = kn.adapter.down_projection(kn.model, 1)
    h = site.register_forward_pre_hook(record)
    try:
        kn.probability(PROMPT, "Dublin")
        clean = seen["x"]
        with kn.suppress(neurons):
            kn.probability(PROMPT, "Dublin")
    finally:
        h.remove()
    # record() runs before the suppress hook (registered first), so check via activations instead.
    with kn.suppress(neurons):
        with torch.no_grad():
            out = {}

            def after(module, args):
                out["x"] = args[0].detach().clone()
            h2 = site.register_forward_pre_hook(after)
            kn.probability(PROMPT, "Dublin")
            h2.remove()
    x = out["x"][0]
    assert float(x[enc.blank[0]].abs().max()) == 0.0
    others = [i for i in range(len(enc.ids)) if i != enc.blank[0]]
    assert torch.equal(x[others], clean[0][others])


def test_scaling_follows_the_local_gradient(kn):
    # riemann_right with one step scores w * dP/da at the clean point: the first-order effect of scaling.
    local = kn.attribute(PROMPT, "Dublin", rule="riemann_right", steps=1).scores
    i = int(torch.argmax(local.flatten()))
    neuron = [(i // kn.num_neurons, i % kn.num_neurons)]
    p = kn.probability(PROMPT, "Dublin")
    with kn.amplify(neuron, 0.99):
        low = kn.probability(PROMPT, "Dublin")
    with kn.amplify(neuron, 1.01):
        high = kn.probability(PROMPT, "Dublin")
    assert low < p < high


def test_model_restored_after_exception(kn):
    before = {k: v.clone() for k, v in kn.model.state_dict().items()}
    p = kn.probability(PROMPT, "Dublin")
    with pytest.raises(RuntimeError, match="boom"):
        with kn.suppress([(0, 1), (2, 2)]):
            kn.probability(PROMPT, "Dublin")
            raise RuntimeError("boom")
    assert no_hooks(kn.model)
    assert all(torch.equal(before[k], v) for k, v in kn.model.state_dict().items())
    assert kn.probability(PROMPT, "Dublin") == p


@pytest.mark.parametrize("bad,match", [([(99, 0)], "layer out of range"), ([(0, 10**6)], "index out of range"),
                                       ([(0,)], "pair"), (["x"], "pair")])
def test_bad_neurons_refused_before_any_hook(kn, bad, match):
    with pytest.raises(NeuronError, match=match):
        with kn.suppress(bad):
            pass
    assert no_hooks(kn.model)


def test_batched_prompts_each_get_their_own_blank(kn):
    prompts = [PROMPT, "[MASK] is the capital of Ireland ."]
    neurons = [(0, 3), (2, 5)]
    with kn.suppress(neurons):
        batched = kn.probabilities(prompts, "Dublin").tolist()
    for prompt, b in zip(prompts, batched):
        assert b == pytest.approx(manual_probability(kn, prompt, "Dublin", neurons, 0.0), rel=1e-5)


def test_batched_per_prompt_sets_equal_one_at_a_time(kn):
    from kneuron.interventions import scaled_probabilities

    prompts = [PROMPT, "[MASK] is the capital of Ireland .", "Paris is in [MASK] .", "Rome is in [MASK] ."]
    sets = [[(0, 3), (2, 5)], [], [(1, 7)], [(0, 3), (1, 1), (2, 60)]]
    for factor in (0.0, 2.0):
        batched = scaled_probabilities(kn, prompts, "Dublin", sets, factor).tolist()
        for prompt, s, b in zip(prompts, sets, batched):
            with kn.amplify(s, factor):
                assert kn.probability(prompt, "Dublin") == b  # bit for bit
    assert no_hooks(kn.model)
