"""The value-slot update on models the paper never met: signed directions, output embeddings, fitted scale."""

import pytest
import torch

from kneuron.edits import fit_update, neuron_signs, plan_update
from kneuron.errors import KneuronError
from kneuron.neurons import Neuron

PROMPTS = ["The capital of Ireland is", "Berlin is the capital of Germany. The capital of Ireland is"]


def state(kn):
    return {k: v.detach().clone() for k, v in kn.model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def mean_activation(kn, prompts):
    return torch.stack([kn.activations(p) for p in prompts]).mean(0)


def test_signed_update_flips_the_change_of_negative_neurons(llama):
    kn = llama
    act = mean_activation(kn, PROMPTS)
    neg = Neuron(*divmod(int(act.flatten().argmin()), kn.num_neurons))
    pos = Neuron(*divmod(int(act.flatten().argmax()), kn.num_neurons))
    assert act[neg] < 0 < act[pos]  # a gated MLP has coefficients of both signs
    assert neuron_signs(kn, [neg, pos], PROMPTS) == [-1.0, 1.0]
    paper = plan_update(kn, [neg, pos], "the", "capital", direction="paper")
    signed = plan_update(kn, [neg, pos], "the", "capital", prompts=PROMPTS)  # "auto" is "signed" on a gated MLP
    assert kn.adapter.gated(kn.model) and signed.info["direction"] == "signed"
    assert signed.info["signs"] == [-1.0, 1.0]
    base = paper.base_values
    assert torch.equal(signed.base_values, base)
    assert torch.allclose(signed.values[0] - base[0], -(paper.values[0] - base[0]), atol=1e-6)
    assert torch.equal(signed.values[1], paper.values[1])
    # The signed edit lowers the old answer's logit through the negative neuron; the literal rule raises it.
    head = kn.adapter.output_embeddings(kn.model)
    old, new = kn.answer_id("the"), kn.answer_id("capital")
    written = act[neg] * (signed.values[0] - base[0])
    assert float(written @ head[old]) < 0 < float(written @ head[new])
    written = act[neg] * (paper.values[0] - base[0])
    assert float(written @ head[old]) > 0


def test_signed_equals_the_paper_rule_bit_for_bit_when_activations_are_positive(bert):
    kn = bert
    prompts = ["The capital of Ireland is [MASK].", "[MASK] is the capital of Ireland."]
    act = mean_activation(kn, prompts)
    positive = [Neuron(int(i) // kn.num_neurons, int(i) % kn.num_neurons)
                for i in torch.topk(act.flatten(), 6).indices]
    assert all(act[n] > 0 for n in positive)
    signed = plan_update(kn, positive, "Dublin", "Paris", prompts=prompts, direction="signed")
    paper = plan_update(kn, positive, "Dublin", "Paris", direction="paper", embedding="input")
    assert torch.equal(signed.values, paper.values) and signed.base_fingerprint == paper.base_fingerprint


def test_updates_add_the_output_embedding_of_an_untied_model(llama):
    kn = llama
    out, inp = kn.adapter.output_embeddings(kn.model), kn.adapter.word_embeddings(kn.model)
    assert out.data_ptr() != inp.data_ptr() and not torch.equal(out, inp)  # tiny Llama: untied head
    n = Neuron(1, 4)
    old, new = kn.answer_id("the"), kn.answer_id("capital")
    for embedding, matrix in (("output", out), ("input", inp)):
        edit = plan_update(kn, [n], "the", "capital", embedding=embedding, scaling="raw", signs=[1.0])
        expect = edit.base_values[0] - matrix[old] + 8 * matrix[new]
        assert torch.allclose(edit.values[0], expect.detach(), atol=1e-6), embedding


def test_tied_models_read_the_same_matrix(bert):
    kn = bert
    assert torch.equal(kn.adapter.output_embeddings(kn.model), kn.adapter.word_embeddings(kn.model))


def test_fit_update_makes_the_new_answer_top1_with_the_smallest_scale(llama):
    kn = llama
    before = state(kn)
    act = mean_activation(kn, PROMPTS)
    neurons = [Neuron(int(i) // kn.num_neurons, int(i) % kn.num_neurons)
               for i in torch.topk(act.abs().flatten(), 8).indices]
    edit = fit_update(kn, neurons, "the", "capital", PROMPTS, margin=1.0, max_scale=64.0)
    assert same(before, state(kn))  # fitting tries edits and undoes them
    assert edit.info["reached"] and 0 < edit.info["scale"] < edit.info["max_scale"]
    capped = fit_update(kn, neurons, "the", "capital", PROMPTS, max_scale=edit.info["scale"] / 4)
    assert not capped.info["reached"] and capped.info["scale"] == edit.info["scale"] / 4
    new = kn.answer_id("capital")
    with edit.apply(kn):
        assert (kn.blank_logits(PROMPTS).argmax(-1) == new).all()
    # Half the fitted scale no longer reaches the goal (bisection found the boundary).
    half = plan_update(kn, neurons, "the", "capital", signs=edit.info["signs"], lambda1=edit.info["scale"] / 2,
                       lambda2=edit.info["scale"] / 2)
    with half.apply(kn):
        assert not (kn.blank_logits(PROMPTS).argmax(-1) == new).all()
    assert same(before, state(kn))


def test_update_refuses_bad_input_and_leaves_the_model_alone(llama):
    kn = llama
    before = state(kn)
    with pytest.raises(KneuronError, match="new answer is the old one"):
        plan_update(kn, [(0, 1)], "the", "the", prompts=PROMPTS)
    with pytest.raises(KneuronError, match="reads the neurons' signs"):
        plan_update(kn, [(0, 1)], "the", "capital")  # a gated MLP: "auto" needs the prompts
    with pytest.raises(KneuronError, match="direction must be"):
        plan_update(kn, [(0, 1)], "the", "capital", direction="up")
    with pytest.raises(KneuronError, match="embedding must be"):
        plan_update(kn, [(0, 1)], "the", "capital", prompts=PROMPTS, embedding="both")
    assert same(before, state(kn))


def test_erase_unk_follows_the_neurons_signs_and_zero_ignores_them(llama):
    from kneuron.edits import plan_erase

    kn = llama
    kn.tokenizer.unk_token = kn.tokenizer.unk_token or kn.tokenizer.eos_token
    neurons = [Neuron(0, 1), Neuron(2, 5)]
    emb = kn.adapter.word_embeddings(kn.model)
    unk = kn.tokenizer.unk_token_id
    signed = plan_erase(kn, neurons, "unk", signs=[-1.0, 1.0])
    assert torch.equal(signed.values[0], -emb[unk].detach()) and torch.equal(signed.values[1], emb[unk].detach())
    assert signed.info["signs"] == [-1.0, 1.0]
    assert torch.equal(plan_erase(kn, neurons, "unk").values[0], emb[unk].detach())
    assert torch.count_nonzero(plan_erase(kn, neurons, "zero", signs=[-1.0, 1.0]).values) == 0
    with pytest.raises(KneuronError, match="one per neuron"):
        plan_erase(kn, neurons, "unk", signs=[1.0])
