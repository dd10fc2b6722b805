"""The fact world: generation invariants, tokenizer, deterministic training, the on-disk store."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from tiny_world_config import TINY_WORLD

from kneuron.data.facts import MASK
from kneuron.errors import DataError
from kneuron.world import (
    TrainConfig,
    WorldConfig,
    build_tokenizer,
    build_world,
    default_world_dir,
    ensure_world,
    fill_template,
    generate_world,
    is_world_dir,
    load_world_bingrel,
    load_world_facts,
    load_world_meta,
    load_world_relations,
    train_world_model,
)
from kneuron.world import store as world_store

TINY_TRAIN = TrainConfig(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                         max_position_embeddings=64, epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KNEURON_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def tiny_built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "world"
    return build_world(out, seed=0, world_config=TINY_WORLD, train_config=TINY_TRAIN, log=None)


def _snapshot(w):
    return ([(f.relation, f.subject, f.object, f.prompts) for f in w.facts], w.bags,
            [r.to_dict() for r in w.relations])


# --------------------------------------------------------------------------------------------
# Generation


def test_generation_is_deterministic(world):
    assert _snapshot(generate_world(seed=0)) == _snapshot(world)
    other = generate_world(seed=1)
    assert _snapshot(other) != _snapshot(world)
    assert other.entities["person"] != world.entities["person"]


def test_relations_templates_and_types(world):
    assert len(world.relations) >= 8
    assert {r.type for r in world.relations} == {"1-1", "N-1", "N-M"}
    assert len({r.id for r in world.relations}) == len(world.relations)
    y_not_last = 0
    for r in world.relations:
        assert r.label
        assert len(r.templates) >= 5
        assert 0 <= r.held_out_template < len(r.templates)
        assert len(r.train_templates) == len(r.templates) - 1
        for t in r.templates:
            assert t.count("[X]") == 1 and t.count("[Y]") == 1, t
            y_not_last += not t.rstrip(".").endswith("[Y]")
    assert y_not_last >= len(world.relations)  # PARAREL-like: the blank is often mid-sentence


def test_facts_and_prompts(world):
    assert len(world.facts) >= 300
    keys = Counter((f.relation, f.subject) for f in world.facts)
    assert max(keys.values()) == 1  # one object per (relation, subject), like LAMA
    for f in world.facts:
        templates = world.relation(f.relation).templates
        assert f.prompts == [fill_template(t, f.subject) for t in templates]
        assert all(p.count(MASK) == 1 for p in f.prompts)
        assert f.object not in " ".join(f.prompts)


def test_object_distributions_follow_relation_types(world):
    by_rel = defaultdict(list)
    for f in world.facts:
        by_rel[f.relation].append(f)
    nm_subjects = Counter()
    for r in world.relations:
        facts = by_rel[r.id]
        objects = Counter(f.object for f in facts)
        if r.type == "1-1":
            assert len(objects) == len(facts)  # bijective
        elif r.type == "N-1":
            assert len(objects) < len(facts) and objects.most_common(1)[0][1] >= 3
        else:
            assert len(objects) < len(facts)
            nm_subjects.update(f.subject for f in facts)
            # several true objects per subject; the fact list shows the first one
            assert any(len(world.all_objects[(r.id, f.subject)]) > 1 for f in facts)
            assert all(world.all_objects[(r.id, f.subject)][0] == f.object for f in facts)
    assert max(nm_subjects.values()) >= 2  # people appear in several N-M relations


def test_entity_names(world):
    names = [n for group in world.entities.values() for n in group]
    assert len(names) == len(set(names))
    template_words = {w.lower() for r in world.relations for t in r.templates for w in re.findall(r"[A-Za-z]+", t)}
    for n in names:
        assert n[0].isupper() and n[1:].islower() and n.isalpha(), n
        assert n.lower() not in template_words
    lowered = [n.lower() for n in names]
    for a in lowered[:200]:
        assert sum(a in b for b in lowered) == 1  # no name inside another: substring tests are exact


def test_bingrel_bags(world):
    by_rel = defaultdict(list)
    for f in world.facts:
        by_rel[f.relation].append(f)
    n_th = n_h = 0
    for r in world.relations:
        bags = world.bags[r.id]
        assert len(bags) == len(by_rel[r.id])  # aligned index by index
        cloze = {fill_template(t, "").replace(MASK, "") for t in r.templates}
        for f, bag in zip(by_rel[r.id], bags):
            assert set(bag) == {"th_bags", "h_bags"}
            assert len(bag["th_bags"]) <= 5 and len(bag["h_bags"]) <= 5
            for s in bag["th_bags"]:
                assert f.subject in s and f.object in s
                assert s.replace(f.subject, "").replace(f.object, "") not in cloze
            for s in bag["h_bags"]:
                assert f.subject in s and f.object not in s
            n_th += len(bag["th_bags"])
            n_h += len(bag["h_bags"])
    assert n_th > 2 * len(world.facts) and n_h > 2 * len(world.facts)


def test_held_out_template_words_are_known(world):
    """The held-out paraphrase must be new as a sentence, not made of words never trained."""
    from tokenizers.pre_tokenizers import BertPreTokenizer

    def words(text):
        return {w for w, _ in BertPreTokenizer().pre_tokenize_str(text.replace("[X]", " ").replace("[Y]", " "))}

    seen = set()
    for r in world.relations:
        for t in r.train_templates:
            seen |= words(t)
    for bags in world.bags.values():
        for b in bags:
            for s in b["th_bags"] + b["h_bags"]:
                seen |= words(s)
    for r in world.relations:
        assert words(r.templates[r.held_out_template]) <= seen, r.id


def test_small_world_config_selects_relations():
    w = generate_world(TINY_WORLD, seed=3)
    assert [r.id for r in w.relations] == list(TINY_WORLD.relations)
    with pytest.raises(ValueError):
        generate_world(WorldConfig(relations=("W99",)))
    assert WorldConfig.from_dict(TINY_WORLD.to_dict()) == TINY_WORLD


# --------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer(world):
    tok = build_tokenizer(world)
    assert tok.pad_token_id == 0 and tok.convert_ids_to_tokens(0) == "[PAD]"
    assert len(tok) < 3000
    for obj in {f.object for f in world.facts} | {f.subject for f in world.facts}:
        ids = tok(obj, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != tok.unk_token_id, obj
    prompt = world.facts[0].prompts[0]
    assert tok.tokenize(prompt).count("[MASK]") == 1
    pieces = tok.tokenize("Zyxwq Quorbly")  # unseen words split into characters, never [UNK]
    assert "[UNK]" not in pieces and any(p.startswith("##") for p in pieces)
    assert tok.tokenize("capital") != tok.tokenize("Capital") or "Capital" not in tok.get_vocab()  # cased


# --------------------------------------------------------------------------------------------
# Training (tiny config) and the store


def test_tiny_build_writes_a_loadable_world(tiny_built):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    assert is_world_dir(tiny_built)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "facts.jsonl", "relations.jsonl", "world.json"):
        assert (tiny_built / name).is_file(), name
    model = AutoModelForMaskedLM.from_pretrained(tiny_built)
    tok = AutoTokenizer.from_pretrained(tiny_built)
    assert model.config.num_hidden_layers == TINY_TRAIN.num_layers
    facts = load_world_facts(tiny_built)
    enc = tok(facts.facts[0].prompts[0], return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == len(tok)
    assert tok.convert_tokens_to_ids(facts.facts[0].object) != tok.unk_token_id

    meta = load_world_meta(tiny_built)
    m = meta["metrics"]
    for key in ("train_accuracy", "held_out_accuracy", "held_out_chance", "median_gold_prob", "per_relation"):
        assert key in m
    assert 0.0 <= m["train_accuracy"] <= 1.0 and 0.0 < m["median_gold_prob"] < 1.0
    assert set(m["per_relation"]) == set(TINY_WORLD.relations)
    # The accuracies and the median gold probability, recomputed by hand prompt by prompt (no
    # padding), split by each relation's held-out template.
    held = {r.id: r.held_out_template for r in load_world_relations(tiny_built)}
    hits, probs = {True: [], False: []}, []
    model.eval()
    for f in facts.facts:
        gold = tok.convert_tokens_to_ids(f.object)
        for i, p in enumerate(f.prompts):
            enc = tok(p, return_tensors="pt")
            with torch.no_grad():
                row = model(**enc).logits[0, enc["input_ids"][0].tolist().index(tok.mask_token_id)].float()
            hits[i == held[f.relation]].append(int(row.argmax()) == gold)
            if i != held[f.relation]:
                probs.append(float(row.softmax(-1)[gold]))
    assert m["train_prompts"] == len(hits[False]) and m["held_out_prompts"] == len(hits[True])
    assert m["train_accuracy"] == pytest.approx(sum(hits[False]) / len(hits[False]), abs=6e-5)
    assert m["held_out_accuracy"] == pytest.approx(sum(hits[True]) / len(hits[True]), abs=6e-5)
    assert m["median_gold_prob"] == pytest.approx(statistics.median(probs), abs=6e-5)
    assert meta["seed"] == 0 and meta["format_version"] == world_store.FORMAT_VERSION
    assert WorldConfig.from_dict(meta["world_config"]) == TINY_WORLD
    assert TrainConfig.from_dict(meta["train_config"]) == TINY_TRAIN
    assert meta["timings"]["total_s"] > 0
    assert "counts" in meta and meta["counts"]["facts"] == len(facts)


def test_training_is_bit_identical(tmp_path):
    from transformers import AutoModelForMaskedLM

    w = generate_world(TINY_WORLD, seed=0)
    m1 = train_world_model(w, tmp_path / "a", TINY_TRAIN, log=None)
    m2 = train_world_model(w, tmp_path / "b", TINY_TRAIN, log=None)
    a = AutoModelForMaskedLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForMaskedLM.from_pretrained(tmp_path / "b").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert m1["final_loss"] == m2["final_loss"] and m1["train_accuracy"] == m2["train_accuracy"]
    assert not torch.are_deterministic_algorithms_enabled()  # global setting restored

    train_world_model(w, tmp_path / "c", TrainConfig(**{**TINY_TRAIN.to_dict(), "seed": 1}), log=None)
    c = AutoModelForMaskedLM.from_pretrained(tmp_path / "c").state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_store_round_trip(tiny_built):
    w = generate_world(TINY_WORLD, seed=0)
    loaded = load_world_facts(tiny_built)
    expected = w.fact_set()
    order = {r.id: i for i, r in enumerate(w.relations)}
    expected_facts = sorted(expected.facts, key=lambda f: order[f.relation])
    assert [(f.relation, f.subject, f.object, f.prompts) for f in loaded.facts] == \
        [(f.relation, f.subject, f.object, f.prompts) for f in expected_facts]
    assert loaded.relations == expected.relations
    assert all(r.label and r.type for r in loaded.relations.values())
    assert loaded.source == str(tiny_built)
    rels = load_world_relations(tiny_built)
    assert [r.to_dict() for r in rels] == [r.to_dict() for r in w.relations]
    for r in w.relations:
        assert load_world_bingrel(tiny_built, r.id) == w.bags[r.id]
    with pytest.raises(DataError):
        load_world_bingrel(tiny_built, "W99")
    with pytest.raises(DataError):
        load_world_facts(tiny_built.parent)


def test_build_reuses_and_force_rebuilds(tmp_path, monkeypatch):
    out = tmp_path / "w"
    build_world(out, seed=0, world_config=TINY_WORLD, train_config=TINY_TRAIN, log=None)
    marker = out / "marker"
    marker.write_text("x")
    logs = []

    def no_training(*args, **kwargs):
        raise AssertionError("a complete world must be reused, not retrained")

    monkeypatch.setattr(world_store, "train_world_model", no_training)
    assert build_world(out, seed=0, world_config=TINY_WORLD, train_config=TINY_TRAIN, log=logs.append) == out.absolute()
    assert marker.exists() and any("already built" in line for line in logs)
    monkeypatch.undo()

    build_world(out, seed=0, world_config=TINY_WORLD, train_config=TINY_TRAIN, force=True, log=None)
    assert is_world_dir(out) and not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".w.")) == [".w.lock"]


def test_interrupted_build_leaves_no_world(tmp_path, monkeypatch):
    def boom(world, out_dir, *args, **kwargs):
        (Path(out_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(world_store, "train_world_model", boom)
    out = tmp_path / "w"
    with pytest.raises(KeyboardInterrupt):
        build_world(out, world_config=TINY_WORLD, train_config=TINY_TRAIN, log=None)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [".w.lock"]


def test_build_refuses_foreign_directory(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(DataError):
        build_world(foreign, world_config=TINY_WORLD, train_config=TINY_TRAIN, force=True, log=None)
    assert (foreign / "notes.txt").read_text() == "precious"


def test_ensure_world_uses_the_cache(cache, monkeypatch):
    target = default_world_dir(7)
    assert target == cache / "world" / f"v{world_store.FORMAT_VERSION}-seed7"
    logs = []
    defaults = {"train": TINY_TRAIN}
    monkeypatch.setattr(world_store, "TrainConfig",
                        lambda seed=0: TrainConfig(**{**defaults["train"].to_dict(), "seed": seed}))
    monkeypatch.setattr(world_store, "WorldConfig", lambda: TINY_WORLD)
    assert ensure_world(seed=7, log=logs.append) == target
    assert is_world_dir(target)
    assert any("once" in line and str(target) in line for line in logs)
    assert load_world_meta(target)["train_config"]["seed"] == 7

    real_train = world_store.train_world_model

    def no_training(*args, **kwargs):
        raise AssertionError("cached world must be reused")

    monkeypatch.setattr(world_store, "train_world_model", no_training)
    logs.clear()
    assert ensure_world(seed=7, log=logs.append) == target
    assert logs == []

    # New default settings make the cached world stale: it is rebuilt in place.
    monkeypatch.setattr(world_store, "train_world_model", real_train)
    defaults["train"] = TrainConfig(**{**TINY_TRAIN.to_dict(), "epochs": 1})
    assert ensure_world(seed=7, log=logs.append) == target
    assert any("out of date" in line for line in logs)
    assert load_world_meta(target)["train_config"]["epochs"] == 1


def test_cli_info_and_build_reuse(tiny_built, capsys):
    from kneuron.cli import main

    assert main(["world", "info", str(tiny_built)]) == 0
    out = capsys.readouterr().out
    assert "W10" in out and "held-out" in out and "facts" in out
    assert main(["world", "build", "--out", str(tiny_built)]) == 0  # reuses, does not retrain
    assert "already built" in capsys.readouterr().out
    assert main(["world", "info", str(tiny_built.parent / "nope")]) == 2


def test_a_world_directory_is_a_data_spec(tiny_world, tmp_path):
    import shutil

    from kneuron.data import load_facts
    from kneuron.world import load_world_facts

    facts = load_facts(str(tiny_world))
    assert [(f.relation, f.subject, f.object, f.prompts) for f in facts.facts] == [
        (f.relation, f.subject, f.object, f.prompts) for f in load_world_facts(tiny_world).facts]
    assert {f.relation for f in load_facts(str(tiny_world), relations=["W3"]).facts} == {"W3"}
    broken = tmp_path / "broken"
    shutil.copytree(tiny_world, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(DataError, match="incomplete or older fact world"):
        load_facts(str(broken))
