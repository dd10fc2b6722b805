"""The multilingual fact world: the same facts in English and two invented languages."""

from __future__ import annotations

import dataclasses

import pytest

from kneuron.data.facts import group_languages
from kneuron.world import (
    BUILTIN_MODELS,
    MULTILINGUAL_MODELS,
    TrainConfig,
    WorldConfig,
    build_world,
    default_world_config,
    default_world_dir,
    generate_world,
    is_world_dir,
    load_world_bingrel,
    load_world_facts,
    load_world_meta,
    load_world_relations,
)
from kneuron.world.generate import TRANSLATIONS

TINY_ML = dataclasses.replace(default_world_config(multilingual=True), n_countries=6, n_continents=2, n_languages=3,
                              cities_per_country=2, n_companies=3, n_persons=8, n_instruments=3,
                              n_organizations=3, facts_per_relation=6, th_per_fact=(1, 2), h_per_fact=(1, 2))
TINY_TRAIN = TrainConfig(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64,
                         max_position_embeddings=64, epochs=2, batch_size=16)


def test_every_fact_in_every_language_with_shared_names():
    world = generate_world(default_world_config(multilingual=True), seed=0)
    grouped = group_languages(world.facts)
    assert len(grouped) * 3 == len(world.facts)
    for fact in grouped:
        assert fact.languages == ["en", "lu", "te"]
        assert len(set(fact.answers.values())) == 1  # entity names are shared
        assert all(fact.subject in p for prompts in fact.prompts.values() for p in prompts)
    # the languages have their own words: no template word is shared between the invented ones
    words = {lang: {w for ts, _ in TRANSLATIONS[lang].values() for t in ts for w in t.replace(".", " ").split()
                    if "[" not in w} for lang in TRANSLATIONS}
    assert not words["lu"] & words["te"]
    for rel in world.relations:
        for lang in ("en", "lu", "te"):
            templates, held_out = rel.templates_in(lang)
            assert len(templates) == 6 and 0 <= held_out < 6


def test_the_english_world_is_unchanged_by_the_option():
    english = generate_world(WorldConfig(), seed=0)
    assert all(f.language == "" for f in english.facts)
    assert "languages" not in WorldConfig().to_dict()  # so cached English worlds stay current
    ml = generate_world(default_world_config(multilingual=True), seed=0)
    assert english.entities["country"] == ml.entities["country"]
    assert WorldConfig.from_dict(ml.config.to_dict()) == ml.config


def test_bad_language_options():
    with pytest.raises(ValueError, match="unknown world language"):
        WorldConfig(languages=("en", "xx"))
    with pytest.raises(ValueError, match="exist only in English"):
        generate_world(WorldConfig(languages=("en", "lu"), relations=("W1", "W7")), seed=0)


def test_built_multilingual_world_round_trips_and_reports_each_language(tmp_path):
    out = build_world(tmp_path / "ml", seed=0, world_config=TINY_ML, train_config=TINY_TRAIN, log=None)
    assert is_world_dir(out)
    facts = load_world_facts(out)
    assert {f.language for f in facts} == {"en", "lu", "te"}
    assert facts.facts == [f for f in generate_world(TINY_ML, 0).facts]
    relations = load_world_relations(out)
    assert relations[0].translations["lu"] == (list(TRANSLATIONS["lu"]["W1"][0]), TRANSLATIONS["lu"]["W1"][1])
    bags = load_world_bingrel(out, "W1")
    w1 = [f for f in facts if f.relation == "W1"]
    assert len(bags) == len(w1)  # aligned with the per-language facts
    assert all(not b["th_bags"] and not b["h_bags"] for b, f in zip(bags, w1) if f.language != "en")
    per_language = load_world_meta(out)["metrics"]["per_language"]
    assert set(per_language) == {"en", "lu", "te"}
    for m in per_language.values():
        assert m["held_out_prompts"] > 0 and 0 <= m["train_accuracy"] <= 1 and m["held_out_accuracy"] is not None


def test_builtin_names_and_cache_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path))
    assert {"world-multilingual", "world-multilingual-causal"} == set(MULTILINGUAL_MODELS)
    assert BUILTIN_MODELS["world-multilingual"] == "masked" and BUILTIN_MODELS["world-multilingual-causal"] == "causal"
    assert default_world_dir(0, "causal", multilingual=True).name == "v1-seed0-multilingual-causal"
    assert default_world_dir(0, "masked").name == "v1-seed0"


def test_the_multilingual_bert_trains_longer_and_the_english_one_does_not_change():
    from kneuron.world.store import MULTILINGUAL_MASKED_EPOCHS, _default_train_config

    assert _default_train_config("masked", 0, multilingual=True).epochs == MULTILINGUAL_MASKED_EPOCHS
    assert _default_train_config("masked", 0) == TrainConfig(seed=0)
    assert _default_train_config("causal", 0, multilingual=True) == _default_train_config("causal", 0)


def test_data_specs_name_every_builtin_world():
    from kneuron.data import WORLD_SPECS

    assert set(WORLD_SPECS) == set(BUILTIN_MODELS)
