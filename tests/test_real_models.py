"""The catalogue's real models, when they are in the cache (`kneuron models fetch NAME`); skipped otherwise.

These never download; `.ci/run` fetches SmolLM2 (93 MB) first, so CI runs its tests (Gemma 3's
skip there).  A failed fetch prints one line in CI and these skip.
"""

from __future__ import annotations

import pytest
import torch

import kneuron
from kneuron.files import sha256_file
from kneuron.models import catalogue
from kneuron.models.adapters import adapter_for_type
from kneuron.paths import cache_dir


def _cached(name: str):
    entry = catalogue.get(name)
    if catalogue.cached_dir(entry) is None:
        pytest.skip(f"{name} is not in the cache {cache_dir()} (run `kneuron models fetch {name}`)")
    return entry


@pytest.mark.slow
@pytest.mark.parametrize("name", catalogue.names())
def test_fetched_file_matches_its_checksum(name):
    entry = catalogue.get(name)
    if not entry.is_fetched():
        pytest.skip(f"{name} is not in the cache {cache_dir()} (run `kneuron models fetch {name}`)")
    assert sha256_file(entry.gguf_path) == entry.sha256


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_japan():
    entry = _cached("smollm2-135m")
    kn = kneuron.load("smollm2-135m", device="cpu")
    assert (kn.adapter.family, kn.num_layers, kn.num_neurons) == ("llama", entry.layers, entry.neurons)
    assert kn.model.config.vocab_size == entry.vocab
    assert sum(p.numel() for p in kn.model.parameters()) == entry.parameters
    assert kn.tokenizer.convert_ids_to_tokens(kn.answer_ids("Tokyo")) == ["\u0120Tokyo"]  # one token, with its space
    assert kn.probability("The capital of Japan is", "Tokyo") > 0.5


@pytest.mark.slow
def test_gemma3_converted_like_its_catalogue_entry():
    """Config, size, BOS and one known fact; through kneuron where this checkout has the Gemma 3 adapter."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry = _cached("gemma3-270m")
    if adapter_for_type(entry.family) is not None:
        kn = kneuron.load("gemma3-270m", device="cpu")
        model, tok = kn.model, kn.tokenizer
        assert (kn.num_layers, kn.num_neurons) == (entry.layers, entry.neurons)
        assert kn.probability("Paris is the capital of", "France") > 0.5
    else:
        directory = catalogue.cached_dir(entry)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(directory)
    ids = tok("Paris is the capital of")["input_ids"]
    assert ids[0] == tok.bos_token_id == 2  # Gemma needs its BOS, and the GGUF's tokenizer adds it
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size) == (
        entry.family, entry.layers, entry.neurons, entry.vocab)
    assert sum(p.numel() for p in model.parameters()) == entry.parameters
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)
    assert tok.convert_ids_to_tokens(int(probs.argmax())) == "\u2581France" and probs.max() > 0.5  # 0.71


@pytest.mark.slow
def test_smollm2_fitted_edit_rewrites_the_fact_and_reverts_bit_for_bit():
    """The issue's case: Japan's capital Tokyo -> Kyoto on SmolLM2, through its knowledge neurons."""
    from kneuron.edits import fit_update

    _cached("smollm2-135m")
    kn = kneuron.load("smollm2-135m", device="cpu")
    prompts = ["The capital of Japan is", "The capital city of Japan is", "Japan's capital city is",
               "Japan's capital is"]
    neurons = kn.find_neurons(prompts, "Tokyo", min_prompts=3)
    assert neurons
    before = {k: v.clone() for k, v in kn.model.state_dict().items()}
    edit = fit_update(kn, neurons, "Tokyo", "Kyoto", prompts, margin=1.0)  # margin 1: top-1 on every prompt
    assert edit.info["direction"] == "signed" and edit.info["reached"]
    assert -1.0 in edit.info["signs"]  # gated MLP: some knowledge neurons fire negatively
    with edit.apply(kn):
        for p in prompts:
            assert kn.predict(p, 1)[0][0] == " Kyoto"
        assert kn.predict("The capital of France is", 1)[0][0] == " Paris"
    unedited = [(kn.probability(p, "Kyoto"), kn.probability(p, "Tokyo")) for p in prompts]
    with fit_update(kn, neurons, "Tokyo", "Kyoto", prompts).apply(kn):  # the default margin (0.75): a softer edit
        for p, (kyoto, tokyo) in zip(prompts, unedited):
            assert kn.probability(p, "Kyoto") > 5 * kyoto and kn.probability(p, "Tokyo") < tokyo
    assert all(torch.equal(before[k], v) for k, v in kn.model.state_dict().items())
