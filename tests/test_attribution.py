"""The fast attribution engine against the slow reference (the authors' loop)."""

import pytest
import torch
from tiny_models import save_tiny_bert

import kneuron
from kneuron.attribution import integration_points
from kneuron.attribution.reference import reference_attribution
from kneuron.errors import KneuronError, PromptError

PROMPTS = ["The capital of Ireland is [MASK].", "Dublin is the capital of [MASK].",
           "Paris is in [MASK] .", "the city of [MASK] is in France", "[MASK] speaks the language of Italy ."]


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def kn(request, tmp_path_factory):
    path = save_tiny_bert(tmp_path_factory.mktemp(request.param), family=request.param)
    return kneuron.load(str(path), device="cpu")


def rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("rule,steps", [("riemann_left", 20), ("riemann_right", 20), ("gauss_legendre", 7),
                                        ("trapezoid", 7)])
def test_fast_matches_reference(kn, rule, steps):
    results = kn.attribute(PROMPTS, "Dublin", steps=steps, rule=rule)
    for prompt, res in zip(PROMPTS, results):
        ref_scores, ref_acts = reference_attribution(kn, prompt, "Dublin", steps=steps, rule=rule)
        assert res.scores.shape == (kn.num_layers, kn.num_neurons)
        assert rel_err(res.scores, ref_scores) < 1e-5
        assert torch.allclose(res.activations, ref_acts, atol=1e-6)
        assert not res.scores.requires_grad  # no autograd graph outlives the call


def test_reference_padded_like_the_released_code_gives_the_same_scores(kn):
    """Padding to 128 (the authors' max_seq_length) is masked out: only the cost changes."""
    for prompt in PROMPTS[:2]:
        plain, plain_acts = reference_attribution(kn, prompt, "Dublin", steps=5)
        padded, padded_acts = reference_attribution(kn, prompt, "Dublin", steps=5, pad_to=48)  # tiny: 64 positions
        assert rel_err(padded, plain) < 1e-5
        assert torch.allclose(padded_acts, plain_acts, atol=1e-6)


def test_batching_options_do_not_change_scores(kn):
    base = kn.attribute(PROMPTS, "Dublin")
    for ibs in (1, 20, 45, 1000):
        other = kn.attribute(PROMPTS, "Dublin", internal_batch_size=ibs)
        for a, b in zip(base, other):
            assert rel_err(b.scores, a.scores) < 1e-5
    single = kn.attribute(PROMPTS[2], "Dublin")
    assert rel_err(single.scores, base[2].scores) < 1e-5


def test_layer_subset_equals_full_rows(kn):
    full = kn.attribute(PROMPTS[0], "Dublin")
    part = kn.attribute(PROMPTS[0], "Dublin", layers=[kn.num_layers - 1])
    last = kn.num_layers - 1
    assert rel_err(part.scores[last], full.scores[last]) < 1e-5
    assert float(part.scores[:last].abs().max()) == 0.0


def test_probability_and_completeness(kn):
    res = kn.attribute(PROMPTS[0], "Dublin")
    assert res.probability == pytest.approx(kn.probability(PROMPTS[0], "Dublin"), rel=1e-5)
    # Completeness: with a fine quadrature the sum of a layer's scores is P(w) - P(0).
    fine = kn.attribute(PROMPTS[0], "Dublin", steps=300)
    scale = max(res.probability, 1e-6)
    assert float(fine.convergence_delta.abs().max()) < 0.05 * scale
    assert float(res.convergence_delta.abs().max()) >= float(fine.convergence_delta.abs().max())


def test_gauss_legendre_needs_fewer_points(kn):
    exact = kn.attribute(PROMPTS[1], "Dublin", rule="gauss_legendre", steps=64).scores
    gl = kn.attribute(PROMPTS[1], "Dublin", rule="gauss_legendre", steps=8).scores
    left = kn.attribute(PROMPTS[1], "Dublin", rule="riemann_left", steps=20).scores
    assert rel_err(gl, exact) < rel_err(left, exact)


def test_integration_points():
    a, c = integration_points("riemann_left", 4)
    assert a == [0.0, 0.25, 0.5, 0.75] and c == [0.25] * 4
    a, c = integration_points("riemann_right", 4)
    assert a == [0.25, 0.5, 0.75, 1.0]
    a, c = integration_points("gauss_legendre", 5)
    assert sum(c) == pytest.approx(1.0) and all(0 < x < 1 for x in a)
    a, c = integration_points("trapezoid", 5)
    assert a == [0.0, 0.25, 0.5, 0.75, 1.0] and c == [0.125, 0.25, 0.25, 0.25, 0.125]
    # exact for straight lines: the integral of 3x + 1 over [0, 1] is 2.5
    assert sum(ci * (3 * ai + 1) for ai, ci in zip(a, c)) == pytest.approx(2.5)
    with pytest.raises(KneuronError, match="trapezoid rule needs steps >= 2"):
        integration_points("trapezoid", 1)
    for bad in (0, -3, 2.5):
        with pytest.raises(KneuronError, match="steps"):
            integration_points("riemann_left", bad)
    with pytest.raises(KneuronError, match="unknown integration rule 'simpson'"):
        integration_points("simpson", 4)


@pytest.mark.parametrize("prompt,answer,match", [
    ("No blank here.", "Dublin", "no blank"),
    ("[MASK] and [MASK].", "Dublin", "2 blanks"),
    ("", "Dublin", "empty prompt"),
    ("The capital is [MASK].", "Dublinxyz", "not a single token"),
])
def test_bad_input_is_refused_and_model_unchanged(kn, prompt, answer, match):
    before = {k: v.clone() for k, v in kn.model.state_dict().items()}
    with pytest.raises(PromptError, match=match):
        kn.attribute(prompt, answer)
    after = kn.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in kn.model.modules())


def test_bad_options(kn):
    with pytest.raises(KneuronError, match="steps"):
        kn.attribute(PROMPTS[0], "Dublin", steps=0)
    with pytest.raises(KneuronError, match="layers"):
        kn.attribute(PROMPTS[0], "Dublin", layers=[kn.num_layers])
    with pytest.raises(KneuronError, match="prompt"):
        kn.find_neurons([], "Dublin")


def test_bf16_mode_agrees_on_top_neurons(kn):
    fp32 = kn.attribute(PROMPTS[0], "Dublin").scores.flatten()
    bf16 = kn.attribute(PROMPTS[0], "Dublin", precision="bf16").scores.flatten()
    top = set(torch.topk(fp32, 5).indices.tolist())
    assert len(top & set(torch.topk(bf16, 10).indices.tolist())) >= 4
