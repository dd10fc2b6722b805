"""The decoder staircase (blocks replayed on the suffix after a key/value-cached prefix) against the
per-layer reference loop: sliding windows shorter than the prompt, logit soft-capping, a blank at
position 0 (no prefix), long teacher-forced answers, small internal batches, and the real models."""

import os
from pathlib import Path

import pytest
import torch
from tiny_decoders import _tokenizer
from tiny_models import spread_init

import kneuron
from kneuron.attribution.reference import reference_attribution
from kneuron.models.adapters import Adapter, adapter_for_type, register_adapter

# fp32 fast path against the slow reference: sums over steps and thousands of neurons differ in their
# last bits by kernel; 1.3e-5 was seen on AMD Zen 4 (AVX-512) where Zen 3 gave < 1e-5.
FP32_REL = 5e-5

LONG = "Berlin is the capital of Germany and Rome is in Italy and the capital of France is [MASK]"


def _configs(vocab: int) -> dict:
    from transformers import Gemma2Config, Gemma3TextConfig, GPTNeoConfig, MistralConfig

    small = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=1)
    llama_like = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, **small)
    return {
        # windows of 4 to 8 positions: the cached prefix is truncated by the cache itself
        "mistral_window": MistralConfig(sliding_window=4, **llama_like),
        "gemma2_softcap": Gemma2Config(head_dim=8, sliding_window=4, final_logit_softcapping=5.0, **llama_like),
        "gemma3_text": Gemma3TextConfig(head_dim=8, sliding_window=4, **llama_like),
        "gpt_neo_local": GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48,
                                      attention_types=[[["local", "global"], 1]], window_size=5,
                                      max_position_embeddings=128, **small),
    }


@pytest.fixture(scope="module", params=["mistral_window", "gemma2_softcap", "gemma3_text", "gpt_neo_local"])
def kn(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    if request.param == "gemma3_text" and adapter_for_type("gemma3_text") is None:
        register_adapter(Adapter(family="gemma3", model_types=("gemma3_text",), objective="causal",
                                 layers="model.layers", down_proj="mlp.down_proj",
                                 embeddings="model.embed_tokens"))
    out = tmp_path_factory.mktemp(request.param)
    tok = _tokenizer(out)
    cfg = _configs(len(tok))[request.param]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    spread_init(model, 0.3)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return kneuron.load(str(out), device="cpu")


def assert_matches_reference(kn, prompt, answer, steps=6, **options):
    res = kn.attribute(prompt, answer, steps=steps, **options)
    ref, ref_acts = reference_attribution(kn, prompt, answer, steps=steps)
    assert float((res.scores - ref).abs().max() / ref.abs().max()) < FP32_REL
    assert torch.allclose(res.activations, ref_acts, atol=1e-4, rtol=1e-4)
    assert res.probability == pytest.approx(kn.probability(prompt, answer), rel=1e-4)
    return res


def test_long_prompt_beyond_the_window(kn):
    assert len(kn.encode(LONG, "Paris").ids) > 12  # longer than every window above
    assert_matches_reference(kn, LONG, "Paris")


def test_three_token_answer_teacher_forced_in_small_batches(kn):
    answer = "Paris Texas Rome"
    enc = kn.encode(LONG, answer)
    assert len(enc.targets) >= 3 and len(enc.ids) == enc.blank[0] + len(enc.targets)
    assert_matches_reference(kn, LONG, answer, internal_batch_size=6)  # one layer per pass


def test_blank_at_position_zero_has_no_prefix(kn):
    prompt = "The [MASK]"
    enc = kn.encode(prompt, "is")
    assert enc.blank == (0,)
    assert_matches_reference(kn, prompt, "is")
    assert_matches_reference(kn, prompt, "is the capital")


def test_right_riemann_and_gauss_legendre(kn):
    for rule in ("riemann_right", "gauss_legendre"):
        res = kn.attribute(LONG, "Paris", steps=4, rule=rule)
        ref, _ = reference_attribution(kn, LONG, "Paris", steps=4, rule=rule)
        assert float((res.scores - ref).abs().max() / ref.abs().max()) < FP32_REL


def _real(name):
    """The converted real model under `$KNEURON_REAL_MODELS`, else the catalogue's cached copy
    (as tests/test_real_decoders.py looks for it); skipped with the reason when neither is there."""
    from kneuron.models import catalogue

    root = os.environ.get("KNEURON_REAL_MODELS")
    if root and (Path(root) / name / "config.json").is_file():
        return kneuron.load(str(Path(root) / name), device="cpu")
    if catalogue.cached_dir(catalogue.get(name)) is not None:
        return kneuron.load(name, device="cpu")
    pytest.skip(f"real model {name} is neither under $KNEURON_REAL_MODELS nor in the cache "
                f"(run `kneuron models fetch {name}`)")


@pytest.fixture(scope="module")
def smollm2():  # the name puts the test in the slow lane (tests/conftest.py: SLOW_FIXTURES)
    return _real("smollm2-135m")


def test_real_smollm2_matches_reference(smollm2):
    res = smollm2.attribute("The capital of Japan is [MASK]", "Tokyo", steps=2)
    ref, _ = reference_attribution(smollm2, "The capital of Japan is [MASK]", "Tokyo", steps=2)
    assert float((res.scores - ref).abs().max() / ref.abs().max()) < FP32_REL


def test_rows_attend_to_the_shared_prefix_without_copying_it(kn, monkeypatch):
    """Families whose attention goes through transformers' AttentionInterface replay with
    kneuron's shared-prefix attention (no per-row copy of the prefix); GPT-Neo, whose attention
    does not, keeps the sdpa route.  Both match the reference."""
    from kneuron.models import replay

    copies = []
    joined = replay.PrefixKeysValues.joined
    monkeypatch.setattr(replay.PrefixKeysValues, "joined", lambda self, *a: copies.append(1) or joined(self, *a))
    assert_matches_reference(kn, LONG, "Paris")
    assert_matches_reference(kn, "The capital of France is [MASK]", "Paris is the capital")
    shared = kn.adapter.family != "gpt_neo"
    assert (len(copies) == 0) == shared


def test_probabilities_read_only_the_tail_of_the_logits(kn):
    """`kn.probabilities` asks a causal LM for the logits of the positions it reads only
    (`logits_to_keep`); the values equal those of a full forward pass."""
    from kneuron.attribution.targets import target_values

    prompts = ["The capital of France is [MASK]", LONG, "Rome is in [MASK]"]
    for answer in ("Paris", "Paris is the capital"):
        got = kn.probabilities(prompts, answer)
        for prompt, value in zip(prompts, got):
            e = kn.encode(prompt, answer)
            with torch.no_grad():
                logits = kn.model(input_ids=torch.tensor([e.ids])).logits[0]
            want = target_values(logits[list(e.targets)][None], torch.tensor(e.target_ids))[0]
            assert float(value) == pytest.approx(float(want), rel=1e-5)
    assert kn._keeps_logits
