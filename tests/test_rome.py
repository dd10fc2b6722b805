"""ROME (kneuron.edits.rome) on tiny models: k* -> v* exactly, P(new) up, bit-exact undo, refusals, cache."""

import random

import pytest
import torch
from tiny_decoders import CORPUS
from tiny_models import WORDS

import kneuron
from kneuron.edits import Edit, compute_rome, key_covariance, plan_rome, rome_edit
from kneuron.edits.rome import default_layer
from kneuron.errors import KneuronError
from kneuron.models.replay import read_activations
from kneuron.neurons import Neuron

# Varied text, so that the keys' second moment has full rank (d_ff = 48 or 64 here).
_rng = random.Random(0)
TEXTS = CORPUS + [" ".join(_rng.choice(WORDS) for _ in range(10)) for _ in range(150)]
FAST = dict(texts=TEXTS, prefixes=["", "In summary,"], cache=False)
PROMPT = {"llama": "The capital of Ireland is", "gpt2": "The capital of Ireland is",
          "bert": "The capital of Ireland is [MASK]."}


@pytest.fixture
def paths(edit_family_dirs):
    return edit_family_dirs


def load(path):
    return kneuron.load(str(path), device="cpu")


def state(kn):
    return {k: v.detach().clone() for k, v in kn.model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def changed_keys(a, b):
    return sorted(k for k in a if not torch.equal(a[k], b[k]))


def expected_key(kn, layer, texts, subject):
    """The down-projection input at the subject's last token, read independently of kneuron.edits.rome."""
    keys = []
    for text in texts:
        if kn.is_masked:  # the tiny WordPiece vocabulary holds the subject as one token
            ids = list(kn.encode(text).ids)
            pos = ids.index(kn.tokenizer.convert_tokens_to_ids(subject))
            acts, _ = read_activations(kn.model, kn.adapter, torch.tensor([ids]))
            keys.append(acts[0, layer, pos])
        else:  # causal: the key at the subject's last token is the last one of the text cut after it
            cut = text[:text.index(subject) + len(subject)]
            keys.append(kn.activations(cut)[layer])
    return torch.stack(keys).double().mean(0)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
def test_update_maps_key_to_value_and_leaves_orthogonal_keys(paths, family):
    kn = load(paths[family])
    layer, prompt = 1, PROMPT[family]
    site = kn.adapter.down_projection(kn.model, layer)
    upd = compute_rome(kn, "Ireland", [prompt], "France" if kn.is_masked else "capital", layer=layer, steps=5, **FAST)
    # k*: the mean over the prefixed prompts of the key at the subject's last token
    assert torch.allclose(upd.key, expected_key(kn, layer, [prompt, "In summary, " + prompt], "Ireland"),
                          rtol=1e-4, atol=1e-5)
    # direction = C^-1 k* / (k*^T C^-1 k*), with C the ridged second moment of the texts' keys
    cov, _ = key_covariance(kn, layer, TEXTS, cache=False)
    a = cov + 1e-4 * torch.diagonal(cov).mean() * torch.eye(cov.shape[0], dtype=torch.float64)
    assert float(upd.direction @ upd.key) == pytest.approx(1.0, rel=1e-9)
    assert float(torch.cosine_similarity(a @ upd.direction, upd.key, dim=0)) == pytest.approx(1.0, abs=1e-9)
    # v* = W k* + b + delta (the original output at the mean key, plus the optimised delta)
    with torch.no_grad():
        h0 = site(upd.key.float()[None])[0].double()
    assert torch.allclose(upd.value, h0 + upd.delta, atol=1e-4)
    assert float(upd.delta.norm()) > 0
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, kn.num_neurons, generator=gen, dtype=torch.float64) * float(upd.key.abs().mean())
    x = x - torch.outer(x @ upd.direction, upd.key)  # (C^-1 k*)^T x = 0: orthogonal to k* in the C^-1 metric
    with torch.no_grad():
        out_x = site(x.float())
    before = state(kn)

    edit = upd.to_edit(kn).apply(kn)
    assert isinstance(edit, Edit) and edit.kind == "rome" and edit.applied
    assert edit.neurons == [Neuron(layer, j) for j in range(kn.num_neurons)]
    weight_name = [k for k, v in kn.model.state_dict().items() if v.data_ptr() ==
                   kn.adapter.value_slots(kn.model, layer).data_ptr()]
    assert changed_keys(before, state(kn)) == weight_name
    with torch.no_grad():
        out_key = site(upd.key.float()[None])[0].double()
        out_x_after = site(x.float())
    assert float((out_key - upd.value).norm() / upd.value.norm()) < 1e-4  # k* -> v*
    assert float((out_key - h0).norm()) > 0.5 * float(upd.delta.norm())
    assert torch.allclose(out_x_after, out_x, rtol=1e-4, atol=1e-4 * float(out_x.abs().max()))
    edit.undo()
    assert same(before, state(kn))


@pytest.mark.parametrize("family,prompt,target,layer", [
    ("llama", "Dublin is the capital of Ireland", "capital", 1),
    ("gpt2", "Dublin is the capital of Ireland", "capital", 1),
    ("bert", "The capital of Ireland is [MASK].", "France", 0),
])
def test_edit_raises_the_new_answer(paths, family, prompt, target, layer):
    # Random tiny models barely pass a subject token on to a later position, so the decoders' prompts
    # end at the subject; BERT's [MASK] reads it through attention.
    kn = load(paths[family])
    p_before = kn.probability(prompt, target)
    edit = rome_edit(kn, "Ireland", [prompt], target, layer=layer, **FAST)
    p_after = kn.probability(prompt, target)
    assert p_after > max(10 * p_before, 0.05)
    assert kn.predict(prompt, 1)[0][0].strip() == target
    info = edit.info
    assert info["p_before"] == [pytest.approx(p_before)] and info["layer"] == layer and info["seed"] == 0
    assert 1 <= info["steps_run"] <= 20 and info["cov_source"] == "texts" and info["cov_count"] > kn.num_neurons
    # deterministic: the same call plans the same edit, bit for bit
    edit.undo()
    again = plan_rome(kn, "Ireland", [prompt], target, layer=layer, **FAST)
    assert torch.equal(again.values, edit.values) and again.base_fingerprint == edit.base_fingerprint


@pytest.mark.parametrize("family,prompt,target", [
    ("llama", "Dublin is the capital of Ireland", "Paris"),  # two teacher-forced target tokens
    ("gpt2", "Dublin is the capital of Ireland", "capital"),
    ("bert", "The capital of Ireland is [MASK].", "France"),
])
def test_head_on_the_answer_positions_only_matches_the_full_head(paths, family, prompt, target):
    # the fast path runs the output head on the positions read; the reference on every position
    kn = load(paths[family])
    fast = compute_rome(kn, "Ireland", [prompt, f"In Ireland, {prompt}"], target, layer=1 if family != "bert" else 0,
                        **FAST)
    slow = compute_rome(kn, "Ireland", [prompt, f"In Ireland, {prompt}"], target, layer=1 if family != "bert" else 0,
                        full_logits=True, **FAST)
    assert fast.info["steps_run"] == slow.info["steps_run"] > 1
    for a, b in zip(fast.info["history"], slow.info["history"]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-7)
    assert torch.equal(fast.key, slow.key)  # read before any logits
    assert torch.allclose(fast.value, slow.value, rtol=1e-4, atol=1e-6 * float(slow.value.norm()))


def test_defaults_and_multi_token_target(paths):
    kn = load(paths["llama"])
    assert default_layer(kn) == 1 and default_layer(type("K", (), {"num_layers": 48})()) == 17
    prompt = "Dublin is the capital of Ireland"
    upd = compute_rome(kn, "Ireland", prompt, "Paris", texts=TEXTS, cache=False)  # default prefixes and layer
    assert upd.layer == 1 and len(upd.info["prefixes"]) == 6 and len(upd.info["target_ids"]) == 2
    p_before = kn.probability(prompt, "Paris")  # product over the two teacher-forced tokens
    with upd.to_edit(kn).apply(kn):
        assert kn.probability(prompt, "Paris") > 10 * p_before


def test_undo_save_inverse_and_refusals(paths, tmp_path):
    kn = load(paths["llama"])
    prompt = PROMPT["llama"]
    base = state(kn)
    edit = rome_edit(kn, "Ireland", [prompt], "capital", steps=3, **FAST)
    edited = state(kn)
    assert not same(base, edited)
    edit.undo()
    assert same(base, state(kn))
    # saved, re-applied to a fresh copy, and reverted from the file: bit for bit
    path = edit.save(tmp_path / "rome.kedit")
    other = load(paths["llama"])
    loaded = Edit.load(path)
    assert loaded.kind == "rome" and loaded.info["subject"] == "Ireland"
    loaded.apply(other)
    assert same(edited, state(other))
    Edit.load(path).inverse().apply(other)  # reverted from the file alone
    assert same(base, state(other))

    # refusals leave the weights, modes and requires_grad flags untouched
    first = next(kn.model.parameters())
    first.requires_grad_(True)
    flags = [p.requires_grad for p in kn.model.parameters()]
    with pytest.raises(KneuronError, match="'Dublin' is not in the prompt 'The capital of Ireland is'"):
        plan_rome(kn, "Dublin", [prompt], "capital", **FAST)
    with pytest.raises(KneuronError, match="layer"):
        plan_rome(kn, "Ireland", [prompt], "capital", layer=3, **FAST)
    with pytest.raises(KneuronError, match="empty answer"):
        plan_rome(kn, "Ireland", [prompt], " ", **FAST)
    with pytest.raises(KneuronError, match="non-empty text"):
        plan_rome(kn, "Ireland", [prompt], "capital", texts=["", " "], cache=False)
    bert = load(paths["bert"])
    bert_base = state(bert)
    with pytest.raises(KneuronError, match="unknown"):
        plan_rome(bert, "Ireland", [PROMPT["bert"]], "Zürich", **FAST)
    with pytest.raises(KneuronError, match="blank"):
        plan_rome(bert, "Ireland", ["The capital of Ireland is Paris."], "France", **FAST)
    assert same(bert_base, state(bert))

    # a failure inside the optimisation: hooks removed, flags and modes restored
    kn.model.train()
    calls = []

    def boom(module, args, output):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")

    handle = kn.adapter.blocks(kn.model)[-1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            plan_rome(kn, "Ireland", [prompt], "capital", **FAST)
    finally:
        handle.remove()
    assert all(not kn.adapter.down_projection(kn.model, i)._forward_hooks for i in range(kn.num_layers))
    assert [p.requires_grad for p in kn.model.parameters()] == flags and first.requires_grad
    assert all(m.training for m in kn.model.modules()) and first.grad is None
    assert same(base, state(kn))


def test_covariance_is_cached_and_keyed_by_upstream_weights(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    kn = load(paths["gpt2"])
    layer = 1
    c1, i1 = key_covariance(kn, layer, TEXTS, cov_tokens=600)
    assert not i1["cached"] and i1["count"] == 600 and i1["source"] == "texts"
    files = list((tmp_path / "cache" / "rome").iterdir())
    assert [f.name for f in files] == [f"cov-gpt2-layer{layer}-{i1['key'][:32]}.pt"]  # no temp file left
    c2, i2 = key_covariance(kn, layer, TEXTS, cov_tokens=600)
    assert i2["cached"] and i2["key"] == i1["key"] and torch.equal(c1, c2)
    # C = E[k k^T] over every token of the texts (checked on one text)
    one, info = key_covariance(kn, layer, [TEXTS[0]], cache=False)
    ids = kn.encode(TEXTS[0]).ids
    acts, _ = read_activations(kn.model, kn.adapter, torch.tensor([ids]))
    k = acts[0, layer].double()
    assert info["count"] == len(ids)
    assert torch.allclose(one, k.T @ k / len(ids), rtol=1e-5, atol=1e-6)
    assert torch.allclose(c1, c1.T) and float(torch.linalg.eigvalsh(c1).min()) > -1e-6

    def key_after(change):
        saved = change.detach().clone()
        with torch.no_grad():
            change.add_(0.01)
        try:
            return key_covariance(kn, layer, TEXTS, cov_tokens=600)
        finally:
            with torch.no_grad():
                change.copy_(saved)

    blocks = kn.adapter.blocks(kn.model)
    # the edited matrix itself and later blocks do not change the keys: same cache entry
    for change in (kn.adapter.value_slots(kn.model, layer), blocks[2].mlp.c_fc.weight):
        c, info = key_after(change)
        assert info["cached"] and info["key"] == i1["key"]
    c3, i3 = key_after(blocks[0].mlp.c_fc.weight)  # an earlier block: new key, new statistics
    assert not i3["cached"] and i3["key"] != i1["key"] and not torch.equal(c3, c1)
    _, i4 = key_covariance(kn, layer, TEXTS, cov_tokens=500)  # other settings: another key
    assert i4["key"] != i1["key"]
    # an edit's plan reads the cache too
    upd = compute_rome(kn, "Ireland", PROMPT["gpt2"], "capital", layer=layer, texts=TEXTS, cov_tokens=600,
                       prefixes=[""], steps=2)
    assert upd.info["cov_cached"] and upd.info["cov_key"] == i1["key"]


def test_default_text_is_bingrel(paths, bingrel_dir, monkeypatch):
    monkeypatch.setenv("KNEURON_DATA", str(bingrel_dir.parent))
    kn = load(paths["bert"])
    c, info = key_covariance(kn, 1, cov_tokens=300, cache=False)
    assert info["source"] == "bingrel" and info["count"] == 300 and c.shape == (kn.num_neurons,) * 2


def test_masked_subject_after_several_blanks(paths):
    # A two-token answer gets two [MASK]s; the subject after them moves one position to the right.
    kn = kneuron.load(str(paths["bert"]), device="cpu", multi_token=True)
    prompt, target = "[MASK] is the capital of Ireland.", "Parisx"
    ids = list(kn.encode(prompt, target).ids)
    assert len(kn.answer_ids(target)) == 2 and ids.count(kn.tokenizer.mask_token_id) == 2
    upd = compute_rome(kn, "Ireland", prompt, target, layer=1, steps=1, texts=TEXTS, prefixes=[""], cache=False)
    acts, _ = read_activations(kn.model, kn.adapter, torch.tensor([ids]))
    pos = ids.index(kn.tokenizer.convert_tokens_to_ids("Ireland"))
    assert torch.allclose(upd.key, acts[0, 1, pos].double(), rtol=1e-4, atol=1e-5)
