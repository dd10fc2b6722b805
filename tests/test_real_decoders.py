"""Gemma 3 270M and SmolLM2 135M, the real pretrained decoders, as plain Hugging Face directories.

Run when `$KNEURON_REAL_MODELS` holds `gemma3-270m/` and `smollm2-135m/` (converted from the
catalogue's GGUF files), or when the catalogue has them in its cache (`kneuron models fetch NAME`;
CI fetches SmolLM2); skipped with the reason otherwise.
"""

import os
import warnings
from pathlib import Path

import pytest
import torch
from tiny_decoders import replayed_suffix_logits

import kneuron
from kneuron.attribution.reference import reference_attribution
from kneuron.models.structural import structural_adapter

ROOT = Path(os.environ["KNEURON_REAL_MODELS"]) if os.environ.get("KNEURON_REAL_MODELS") else None
PROMPT = "The capital of Japan is"


def real(name):
    from kneuron.models import catalogue

    if ROOT is not None and (ROOT / name / "config.json").is_file():
        return kneuron.load(str(ROOT / name), device="cpu")
    if catalogue.cached_dir(catalogue.get(name)) is not None:
        return kneuron.load(name, device="cpu")
    pytest.skip(f"real model {name} is neither under $KNEURON_REAL_MODELS nor in the cache "
                f"(run `kneuron models fetch {name}`)")


@pytest.fixture(scope="module")
def gemma3():
    return real("gemma3-270m")


@pytest.fixture(scope="module")
def smollm2():
    return real("smollm2-135m")


def last_position_probability(kn, ids, token_id):
    with torch.no_grad():
        return float(torch.softmax(kn.model(input_ids=torch.tensor([ids])).logits[0, -1], -1)[token_id])


def test_gemma3_gets_its_bos_and_knows_tokyo(gemma3):
    enc = gemma3.encode(PROMPT, "Tokyo")
    bos = gemma3.tokenizer.bos_token_id
    assert gemma3.adapter.family == "gemma3" and enc.ids[0] == bos and enc.ids.count(bos) == 1
    p = gemma3.probability(PROMPT, "Tokyo")
    assert 0.2 < p < 0.3  # measured 0.248
    assert gemma3.predict(PROMPT, k=1)[0][0] == " Tokyo"
    without_bos = last_position_probability(gemma3, list(enc.ids[1:]), enc.target_ids[0])
    assert without_bos < 0.1  # measured 0.036: BOS is what makes Gemma's predictions sane


def test_smollm2_gets_no_bos(smollm2):
    enc = smollm2.encode(PROMPT, "Tokyo")
    assert list(enc.ids) == smollm2.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert smollm2.probability(PROMPT, "Tokyo") == pytest.approx(0.70, abs=0.02)
    assert smollm2.predict(PROMPT, k=1)[0][0] == " Tokyo"


@pytest.mark.parametrize("which", ["gemma3", "smollm2"])
def test_answers_match_in_context_and_digits_warn(which, request):
    kn = request.getfixturevalue(which)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kn.encode(PROMPT, "Tokyo")
    with pytest.warns(UserWarning, match="answer '1984' is tokenized"):
        kn.encode("He was born in the year", "1984")


@pytest.mark.parametrize("which", ["gemma3", "smollm2"])
def test_prefix_cache_equals_full_forward(which, request):
    kn = request.getfixturevalue(which)
    ids = torch.tensor([kn.encode(PROMPT, "Tokyo").ids])
    with torch.no_grad():
        full = kn.model(input_ids=ids).logits[0]
    for cut in (1, ids.shape[1] - 1):
        own, replayed = replayed_suffix_logits(kn, ids, cut, rows=2)
        assert float((own - full[cut:]).abs().max()) < 1e-4 * float(full.abs().max())
        assert float((replayed - full[cut:]).abs().max()) < 1e-4 * float(full.abs().max())


@pytest.mark.slow
def test_gemma3_sliding_window_prompt_through_the_prefix_cache(gemma3):
    """A prompt longer than Gemma 3's 512-token window: the sliding layers really slide, and the
    cached-prefix path still gives the full forward's logits."""
    text = " ".join(f"Fact {i}: the capital of country number {i} is city number {i * 7 % 101}."
                    for i in range(30)) + " " + PROMPT
    ids = torch.tensor([gemma3.encode(text, "Tokyo").ids])
    window = gemma3.model.config.sliding_window
    assert ids.shape[1] > window + 20
    with torch.no_grad():
        full = gemma3.model(input_ids=ids).logits[0]
    cut = ids.shape[1] - 3
    own, replayed = replayed_suffix_logits(gemma3, ids, cut, rows=1)
    for tail in (own, replayed[0]):
        assert float((tail - full[cut:]).abs().max()) < 1e-4 * float(full.abs().max())
    with torch.no_grad():
        gemma3.model.config.sliding_window = 100_000
        try:
            wide = gemma3.model(input_ids=ids, logits_to_keep=1).logits[0, -1]
        finally:
            gemma3.model.config.sliding_window = window
    assert float((wide - full[-1]).abs().max()) > 1.0  # measured 15: the window is in force


@pytest.mark.parametrize("which", ["gemma3", "smollm2"])
def test_structure_finds_the_registered_sites(which, request):
    kn = request.getfixturevalue(which)
    found = structural_adapter(kn.model)  # includes the load-time check on the real logits
    assert (found.layers, found.down_proj, found.embeddings) == (kn.adapter.layers, kn.adapter.down_proj,
                                                                 kn.adapter.embeddings)


@pytest.mark.slow
def test_gemma3_attribution_equals_reference(gemma3):
    res = gemma3.attribute(PROMPT, "Tokyo", steps=2)  # few steps: the reference is slow at 262k vocabulary
    ref, acts = reference_attribution(gemma3, PROMPT, "Tokyo", steps=2)
    assert float((res.scores - ref).abs().max() / ref.abs().max()) < 1e-5
    assert torch.allclose(res.activations, acts, atol=1e-4, rtol=1e-4)


def test_gemma3_interventions_match_a_manual_hook(gemma3):
    enc = gemma3.encode(PROMPT, "Tokyo")
    neurons = [(3, 10), (17, 5), (17, 900)]
    site = {n[0]: gemma3.adapter.down_projection(gemma3.model, n[0]) for n in neurons}
    for factor in (0.0, 2.0):
        handles = []
        for layer, module in site.items():
            idx = [n[1] for n in neurons if n[0] == layer]

            def hook(module, args, idx=idx, factor=factor):
                x = args[0].clone()
                x[0, enc.blank[0], idx] *= factor
                return (x,)
            handles.append(module.register_forward_pre_hook(hook))
        try:
            manual = last_position_probability(gemma3, list(enc.ids), enc.target_ids[0])
        finally:
            for h in handles:
                h.remove()
        with gemma3.amplify(neurons, factor):
            assert gemma3.probability(PROMPT, "Tokyo") == pytest.approx(manual, rel=1e-4)
