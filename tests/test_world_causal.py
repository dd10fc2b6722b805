"""The fact world's decoder: a Llama-shaped model with a gated MLP, built, cached and used like the BERT."""

from pathlib import Path

import pytest
import torch
from tiny_world_config import TINY_WORLD

import kneuron
from kneuron.cli import main
from kneuron.data.facts import ends_at_blank
from kneuron.world import (
    CausalTrainConfig,
    build_world,
    default_world_dir,
    ensure_world,
    generate_world,
    is_world_dir,
    load_world_facts,
    load_world_meta,
    train_causal_world_model,
)
from kneuron.world import store as world_store

TINY_CAUSAL = CausalTrainConfig(num_layers=2, hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                max_position_embeddings=64, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("causal-world") / "w"
    return build_world(out, seed=0, world_config=TINY_WORLD, train_config=TINY_CAUSAL, log=None)


def test_build_writes_a_loadable_decoder_world(built):
    assert is_world_dir(built)
    meta = load_world_meta(built)
    assert meta["model_kind"] == "causal" and CausalTrainConfig.from_dict(meta["train_config"]) == TINY_CAUSAL
    kn = kneuron.load(str(built), device="cpu")
    assert kn.adapter.family == "llama" and not kn.is_masked and kn.num_neurons == TINY_CAUSAL.intermediate_size
    facts = load_world_facts(built)
    for f in facts.facts:  # every answer is one token, and a prompt starts with BOS
        assert len(kn.answer_ids(f.object)) == 1
    enc = kn.encode(facts.facts[0].prompts[0], facts.facts[0].object)
    assert enc.ids[0] == kn.tokenizer.bos_token_id
    m = meta["metrics"]
    n_prompts = sum(len(f.prompts) for f in facts.facts)
    n_ok = sum(ends_at_blank(p) for f in facts.facts for p in f.prompts)
    assert m["train_prompts"] + m["held_out_prompts"] == n_ok
    assert m["prompts_not_ending_at_blank"] == n_prompts - n_ok > 0
    assert 0.0 <= m["train_accuracy"] <= 1.0 and set(m["per_relation"]) == set(TINY_WORLD.relations)
    # The accuracies, recomputed by hand: top-1 after the text before the blank, on the prompts that
    # end at it, split by each relation's held-out template.
    from kneuron.world import load_world_relations

    held = {r.id: r.held_out_template for r in load_world_relations(built)}
    hits = {True: [], False: []}
    per_rel: dict[str, list[bool]] = {}
    for f in facts.facts:
        gold = kn.tokenizer.convert_tokens_to_ids(f.object)
        for i, p in enumerate(f.prompts):
            if not ends_at_blank(p):
                continue
            ids = kn.tokenizer(p.partition("[MASK]")[0].rstrip())["input_ids"]
            with torch.no_grad():
                hit = int(kn.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()) == gold
            hits[i == held[f.relation]].append(hit)
            if i != held[f.relation]:
                per_rel.setdefault(f.relation, []).append(hit)
    assert m["train_prompts"] == len(hits[False]) and m["held_out_prompts"] == len(hits[True])
    assert m["train_accuracy"] == pytest.approx(sum(hits[False]) / len(hits[False]), abs=6e-5)
    assert m["held_out_accuracy"] == pytest.approx(sum(hits[True]) / len(hits[True]), abs=6e-5)
    for rel, got in per_rel.items():
        assert m["per_relation"][rel]["train_accuracy"] == pytest.approx(sum(got) / len(got), abs=6e-5), rel


def test_decoder_training_is_bit_identical(tmp_path):
    from transformers import AutoModelForCausalLM

    w = generate_world(TINY_WORLD, seed=0)
    m1 = train_causal_world_model(w, tmp_path / "a", TINY_CAUSAL, log=None)
    m2 = train_causal_world_model(w, tmp_path / "b", TINY_CAUSAL, log=None)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m1["final_loss"] == m2["final_loss"]


def test_world_causal_is_a_builtin_model_with_its_own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(world_store, "CausalTrainConfig",
                        lambda seed=0: CausalTrainConfig(**{**TINY_CAUSAL.to_dict(), "seed": seed}))
    monkeypatch.setattr(world_store, "WorldConfig", lambda: TINY_WORLD)
    target = default_world_dir(0, "causal")
    assert target.name.endswith("-causal") and target != default_world_dir(0)
    kn = kneuron.load("world-causal", device="cpu")
    assert kn.adapter.family == "llama" and is_world_dir(target)
    assert ensure_world(kind="causal", log=None) == target  # reused, not rebuilt
    with pytest.raises(kneuron.KneuronError, match="unknown fact-world model kind"):
        default_world_dir(0, "seq2seq")


def test_discovery_and_one_fact_probe_on_the_decoder_world(built, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["discover", "--model", str(built), "--data", str(built), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "prompts skipped: their blank is not at the end" in text
    kn = kneuron.load(str(built), device="cpu")
    fact = next(f for f in load_world_facts(built).facts if sum(ends_at_blank(p) for p in f.prompts) >= 3)
    prompts = [p for p in fact.prompts if ends_at_blank(p)]
    probe = kn.probe_fact(prompts, fact.object)
    assert len(probe.neurons["random"]) == len(probe.neurons["kn"])
    assert len(probe.effects) == 3 * len(prompts)
