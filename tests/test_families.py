"""Every supported family on a tiny random model: the neuron definition and exact attribution."""

import pytest
import torch
from tiny_decoders import family_configs, replayed_suffix_logits, save_tiny_decoder, structural_configs
from tiny_models import save_tiny_bert

import kneuron
from kneuron.attribution.reference import reference_attribution
from kneuron.errors import PromptError
from kneuron.models.replay import as_3d

# fp32 fast path against the slow reference: sums over steps and thousands of neurons differ in their
# last bits by kernel; 1.3e-5 was seen on AMD Zen 4 (AVX-512) where Zen 3 gave < 1e-5.
FP32_REL = 5e-5

DECODERS = list(family_configs(100)) + list(structural_configs(100))
ENCODERS = ["bert", "distilbert"]


@pytest.fixture(scope="module", params=ENCODERS + DECODERS)
def kn(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    if request.param in ENCODERS:
        path = save_tiny_bert(out, family=request.param)
        return kneuron.load(str(path), device="cpu", multi_token=True)
    return kneuron.load(str(save_tiny_decoder(request.param, out)), device="cpu")


def capture_mlp(kn, layer, prompt):
    """Input and output of the down projection of one layer on a clean pass."""
    site = kn.adapter.down_projection(kn.model, layer)
    seen = {}
    h = site.register_forward_hook(lambda m, a, o: seen.update(x=a[0].detach(), y=o.detach()))
    try:
        kn.probability(prompt, "Dublin")
    finally:
        h.remove()
    return as_3d(seen["x"], 1)[0], as_3d(seen["y"], 1)[0]


def test_mlp_output_is_sum_of_activation_times_value_slot(kn):
    x, y = capture_mlp(kn, 1, "The capital of Ireland is [MASK].")
    slots = kn.adapter.value_slots(kn.model, 1)
    if kn.adapter.slot_axis == 0:
        slots = slots.T  # Conv1D: (in, out) -> (out, in)
    assert slots.shape[1] == kn.num_neurons
    bias = getattr(kn.adapter.down_projection(kn.model, 1), "bias", None)
    manual = sum(x[:, i:i + 1] * slots[:, i] for i in range(kn.num_neurons))  # neuron by neuron
    if bias is not None:
        manual = manual + bias
    assert torch.allclose(manual, y, atol=1e-4, rtol=1e-4)


def test_gated_neuron_is_act_gate_times_up(kn):
    mlp = getattr(kn.adapter.blocks(kn.model)[0], "mlp", None)
    if not hasattr(mlp, "gate_proj"):
        pytest.skip("gated MLPs only")
    seen = {}
    h = mlp.register_forward_hook(lambda m, a, o: seen.update(inp=a[0].detach()))
    x, _ = capture_mlp(kn, 0, "The capital of Ireland is [MASK].")
    h.remove()
    inp = seen["inp"][0]
    expected = mlp.act_fn(mlp.gate_proj(inp)) * mlp.up_proj(inp)
    assert torch.allclose(x, expected, atol=1e-5)
    assert not torch.allclose(x, mlp.act_fn(mlp.gate_proj(inp)), atol=1e-3)  # not the gate alone


@pytest.mark.parametrize("prompt,answer", [("The capital of Ireland is [MASK].", "Dublin"),
                                           ("The capital of France is [MASK]", "Paris Texas")])
def test_attribution_equals_reference(kn, prompt, answer):
    res = kn.attribute(prompt, answer)
    ref_scores, ref_acts = reference_attribution(kn, prompt, answer)
    assert float((res.scores - ref_scores).abs().max() / ref_scores.abs().max()) < FP32_REL
    assert torch.allclose(res.activations, ref_acts, atol=1e-4, rtol=1e-4)
    assert res.probability == pytest.approx(kn.probability(prompt, answer), rel=1e-4)


def test_targets_first_and_mean_logprob(kn):
    prompt, answer = "The capital of France is [MASK]", "Paris Texas"
    for target in ("first", "mean_logprob"):
        res = kn.attribute(prompt, answer, target=target, steps=6)
        ref, _ = reference_attribution(kn, prompt, answer, steps=6, target=target)
        assert float((res.scores - ref).abs().max() / ref.abs().max()) < FP32_REL
    p_first = kn.probability(prompt, answer, target="first")
    assert p_first >= kn.probability(prompt, answer)  # the product is smaller than its first factor


def manual_probability(kn, prompt, answer, neurons, factor):
    """Independent path: scale the down projection's input at the blank with a hook written here."""
    enc = kn.encode(prompt, answer)
    handles = []
    for layer in {n[0] for n in neurons}:
        idx = [n[1] for n in neurons if n[0] == layer]

        def hook(module, args, idx=idx):
            x = args[0].clone()
            view = x.view(1, len(enc.ids), -1)
            for b in enc.blank:
                view[0, b, idx] = view[0, b, idx] * factor
            return (x,)
        handles.append(kn.adapter.down_projection(kn.model, layer).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            logits = kn.model(input_ids=torch.tensor([enc.ids])).logits[0]
    finally:
        for h in handles:
            h.remove()
    logp = torch.log_softmax(logits[list(enc.targets)].float(), -1)
    return float(logp[range(len(enc.targets)), list(enc.target_ids)].sum().exp())


@pytest.mark.parametrize("answer", ["Dublin", "Paris Texas"])
def test_suppress_amplify_match_manual_and_restore(kn, answer):
    prompt = "The capital of Ireland is [MASK]."
    neurons = [(0, 3), (kn.num_layers - 1, 5), (kn.num_layers - 1, 7), (1, 11)]
    p = kn.probability(prompt, answer)
    for factor in (0.0, 2.0):
        with kn.amplify(neurons, factor):
            ours = kn.probability(prompt, answer)
        assert ours == pytest.approx(manual_probability(kn, prompt, answer, neurons, factor), rel=1e-4)
        assert abs(ours - p) > 1e-6 * p
    assert kn.probability(prompt, answer) == p
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in kn.model.modules())


LONG_PROMPT = "Berlin is the capital of Germany. She speaks French and the capital of Ireland is"


def test_prefix_cache_gives_the_full_forward_logits(kn):
    """The causal engine runs answers after a cached prefix; sliding-window layers (Gemma 2/3,
    windows of 4 tokens here) must see the same context as in one full pass."""
    if kn.is_masked:
        pytest.skip("causal LMs only")
    ids = torch.tensor([kn.encode(LONG_PROMPT, "Paris Texas").ids])
    assert ids.shape[1] > 12
    with torch.no_grad():
        full = kn.model(input_ids=ids).logits[0]
    for cut in (1, 6, ids.shape[1] - 2):
        own, replayed = replayed_suffix_logits(kn, ids, cut, rows=3)
        assert torch.allclose(own, full[cut:], atol=1e-4, rtol=1e-4), cut
        assert torch.allclose(replayed, full[cut:].expand(3, -1, -1), atol=1e-4, rtol=1e-4), cut


def test_sliding_window_is_in_force(kn):
    """Guard for the test above: with a window of 4, distant tokens must not reach sliding layers."""
    window = getattr(kn.model.config, "sliding_window", None)
    if "sliding_attention" not in (getattr(kn.model.config, "layer_types", None) or []) or window is None:
        pytest.skip("no sliding-window layers")
    ids = torch.tensor([kn.encode(LONG_PROMPT).ids])
    with torch.no_grad():
        slid = kn.model(input_ids=ids).logits[0, -1]
        kn.model.config.sliding_window = 10_000
        try:
            wide = kn.model(input_ids=ids).logits[0, -1]
        finally:
            kn.model.config.sliding_window = window
    assert not torch.allclose(slid, wide, atol=1e-4)


def test_causal_prompt_must_end_at_blank(kn):
    if kn.is_masked:
        pytest.skip("causal LMs only")
    with pytest.raises(PromptError, match="end at the blank"):
        kn.encode("[MASK] is the capital of Ireland.", "Dublin")
    assert kn.ends_at_blank("The capital of Ireland is [MASK] .")


def test_masked_multi_token_uses_one_mask_per_token(tmp_path):
    kn = kneuron.load(str(save_tiny_bert(tmp_path)), device="cpu")
    with pytest.raises(PromptError, match="not a single token"):
        kn.encode("The capital is [MASK].", "Paris Texas")
    kn.multi_token = True
    enc = kn.encode("The capital is [MASK].", "Paris Texas")
    mask = kn.tokenizer.mask_token_id
    assert len(enc.blank) == len(enc.target_ids) > 1
    assert [enc.ids[b] for b in enc.blank] == [mask] * len(enc.blank)


def test_cached_prefixes_match_the_plain_pass(kn):
    """Inside `prefix_caches` a causal LM computes each prefix once and stacks equal-shaped rows;
    the values must be those of the plain forward pass (masked LMs keep the plain route)."""
    from kneuron.interventions import prefix_caches, scaled_probabilities
    from kneuron.interventions.cached import active_store
    from kneuron.neurons import Neuron

    prompts = ["The capital of Ireland is [MASK].", "The capital of France is [MASK].", "Rome is in [MASK].",
               "The capital of Ireland is [MASK].", "Rome is in [MASK]."]
    if not kn.is_masked:
        prompts = [p.replace("[MASK].", "[MASK]") for p in prompts] + ["The capital of Ireland is [MASK]"]
    answers = ["Dublin", "Paris", "Italy", "Dublin", "Italy", "Paris"][: len(prompts)]
    sets = [[Neuron(0, 1), Neuron(2, 5)], [Neuron(1, 3)], [], [Neuron(1, 3)], [Neuron(0, 7), Neuron(1, 7)],
            [Neuron(2, 0)]][: len(prompts)]
    for factor in (0.0, 2.0):
        plain = kneuron.interventions.scaled_probabilities(kn, prompts, answers, sets, factor)
        with prefix_caches(kn):
            first = scaled_probabilities(kn, prompts, answers, sets, factor)
            again = scaled_probabilities(kn, prompts, answers, sets, factor)  # every prefix from the store
            used = active_store(kn) is not None
        assert used == (not kn.is_masked)
        assert torch.allclose(first, plain, rtol=1e-4, atol=1e-7), (first, plain)
        assert torch.equal(first, again)
    clean = kn.probabilities(prompts, answers)
    assert float(((plain - clean).abs() / clean).max()) > 1e-3  # the neurons do move the values
