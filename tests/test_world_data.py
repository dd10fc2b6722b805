"""The fact world's tables as data files (kneuron/world/data/*.json): their shape, the world they make, their errors."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil

import pytest
from tiny_world_config import TINY_WORLD

from kneuron.errors import DataError, KneuronError
from kneuron.world import WorldConfig, generate_world, multilingual_world_config, tables
from kneuron.world import generate as g

X, Y = "[X]", "[Y]"
SLOT = re.compile(r"\{(\w+)\}")
DATA_FILES = ("relations.json", "translations.json", "head_sentences.json", "fillers.json", "names.json")


def world_sha256(world) -> str:
    """sha256 of everything a generated world holds: config, relations, facts and prompts, bags, entities."""
    dump = {
        "config": world.config.to_dict(),
        "seed": world.seed,
        "relations": [r.to_dict() for r in world.relations],
        "facts": [dataclasses.asdict(f) for f in world.facts],
        "bags": world.bags,
        "entities": world.entities,
        "all_objects": [[list(k), v] for k, v in world.all_objects.items()],
        "texts": world.texts(),
    }
    return hashlib.sha256(json.dumps(dump, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


TINY_ML = dataclasses.replace(TINY_WORLD, relations=g.MULTILINGUAL_RELATIONS, languages=("en", "lu", "te"))

# These pin the worlds generate.py made BEFORE its tables moved to kneuron/world/data/*.json (the
# literals then lived in generate.py; computed with that version).  The move must not change a single
# name, prompt or sentence.  Change a pin only together with GENERATOR_REVISION, on purpose.
PINNED_WORLDS = [
    ("tiny", TINY_WORLD, 0, "0d126908ff98b496dd85bfcdcdb905f48d8423e7639d444cf808a51f6cc239d1"),
    ("tiny-multilingual", TINY_ML, 0, "19036722094506d0f175b7d16678bcf9e2a7a39f5ad5732f4450cbbc6def034f"),
    ("default", WorldConfig(), 0, "1d73f41a81e55b3a3d4edbfb394c6b3157dd02dd79a10b6e5d580c8782327efc"),
    ("multilingual", multilingual_world_config(), 1,
     "397cd6533b30d08dce66b28069311ff95dccfa36186f8780bd67f415d5c1a053"),
]


@pytest.mark.parametrize("name,config,seed,sha", PINNED_WORLDS, ids=[p[0] for p in PINNED_WORLDS])
def test_generated_world_is_the_one_made_before_the_tables_moved(name, config, seed, sha):
    assert world_sha256(generate_world(config, seed)) == sha
    assert g.GENERATOR_REVISION == 1  # same world, so cached worlds stay current


def test_relations_have_the_templates_and_sentences_generation_needs():
    assert len(g.RELATIONS) == 12 and len({s.id for s in g.RELATIONS}) == 12
    for spec in g.RELATIONS:
        assert isinstance(spec, g.RelationSpec) and spec.type in ("1-1", "N-1", "N-M")
        assert isinstance(spec.templates, tuple) and isinstance(spec.sentences, tuple)
        assert len(spec.templates) >= 5 and len(set(spec.templates)) == len(spec.templates)
        assert 0 <= spec.held_out < len(spec.templates)
        for t in spec.templates + spec.sentences:
            assert t.count(X) == 1 and t.count(Y) == 1, (spec.id, t)
        assert spec.sentences
        for s in spec.sentences:
            for slot in SLOT.findall(s):
                assert slot in g.FILLERS or slot in g.ENTITY_SLOTS or (slot == "alt" and spec.type == "N-M"), s
        assert spec.subject_kind in g.HEAD_SENTENCES and spec.subject_kind in g._SUFFIXES
        assert spec.object_kind in g._SUFFIXES


def test_translations_cover_the_multilingual_relations():
    english = {s.id: s for s in g.RELATIONS}
    assert g.MULTILINGUAL_RELATIONS == ("W1", "W2", "W4", "W5")
    assert set(g.TRANSLATIONS) == {"lu", "te"}
    for lang, rels in g.TRANSLATIONS.items():
        assert set(rels) == set(g.MULTILINGUAL_RELATIONS)
        for rel, (templates, held_out) in rels.items():
            assert isinstance(templates, tuple) and len(templates) == len(english[rel].templates)
            assert 0 <= held_out < len(templates)
            assert all(t.count(X) == 1 and t.count(Y) == 1 for t in templates), (lang, rel)


def test_head_sentences_fillers_and_names_are_complete():
    for kind, pool in g.HEAD_SENTENCES.items():
        assert isinstance(pool, tuple) and pool, kind
        for s in pool:
            assert s.count(X) == 1 and Y not in s, s
            assert all(slot in g.FILLERS or slot in g.ENTITY_SLOTS for slot in SLOT.findall(s)), s
    assert not set(g.FILLERS) & set(g.ENTITY_SLOTS)
    assert all(isinstance(words, tuple) and words and all(words) for words in g.FILLERS.values())
    for syllables in (g._ONSETS, g._VOWELS, g._CODAS):
        assert isinstance(syllables, tuple) and any(syllables)
    assert all(g._ONSETS) and all(g._VOWELS)
    kinds = {"continent", "country", "city", "currency", "language", "company", "person", "instrument",
             "organization"}
    assert set(g._SUFFIXES) == kinds and all(isinstance(s, tuple) and s for s in g._SUFFIXES.values())
    assert isinstance(g._REAL_WORDS, frozenset) and "poland" in g._REAL_WORDS


def test_tables_are_read_once():
    assert tables.relations() is tables.relations()
    assert tables.names() is tables.names()
    assert g.FILLERS is tables.fillers()


@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A writable copy of the data files that the loader reads instead of the package's."""
    copy = tmp_path / "data"
    shutil.copytree(tables.DATA_DIR, copy)
    monkeypatch.setattr(tables, "DATA_DIR", copy)
    return copy


def test_data_files_ship_beside_the_loader():
    assert sorted(p.name for p in tables.DATA_DIR.glob("*.json")) == sorted(DATA_FILES)


def test_a_copy_of_the_data_loads_the_same_tables(data_copy):
    assert tables.relations() == tuple(dataclasses.asdict(s) for s in g.RELATIONS)
    assert tables.translations() == (g.TRANSLATIONS, g.MULTILINGUAL_RELATIONS)
    assert tables.head_sentences() == g.HEAD_SENTENCES


def _edit(path, change):
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize("file,change,load,key", [
    ("relations.json", lambda d: d["relations"][2]["templates"].__setitem__(1, "[X] lies somewhere."),
     tables.relations, "relations[2].templates[1]"),
    ("relations.json", lambda d: d["relations"][0].pop("held_out"), tables.relations, "relations[0].held_out"),
    ("relations.json", lambda d: d["relations"][4].__setitem__("held_out", 9), tables.relations,
     "relations[4].held_out"),
    ("relations.json", lambda d: d["relations"][5].__setitem__("sentences", []), tables.relations,
     "relations[5].sentences"),
    ("translations.json", lambda d: d["languages"]["te"]["relations"].pop("W4"), tables.translations,
     "languages.te.relations"),
    ("head_sentences.json", lambda d: d["kinds"]["city"].append("[X] and [Y] meet."), tables.head_sentences,
     "kinds.city[8]"),
    ("fillers.json", lambda d: d["slots"].__setitem__("year", "1990"), tables.fillers, "slots.year"),
    ("names.json", lambda d: d.pop("vowels"), tables.names, "vowels"),
])
def test_malformed_data_file_names_the_file_and_the_key(data_copy, file, change, load, key):
    _edit(data_copy / file, change)
    with pytest.raises(KneuronError) as err:
        load()
    message = str(err.value)
    assert isinstance(err.value, DataError) and "\n" not in message
    assert str(data_copy / file) in message and key in message, message


def test_invalid_or_missing_data_file(data_copy):
    (data_copy / "fillers.json").write_text('{"slots": {"year": ["1990",]}}', encoding="utf-8")
    with pytest.raises(DataError, match=r"fillers\.json: invalid JSON at line 1"):
        tables.fillers()
    (data_copy / "names.json").unlink()
    with pytest.raises(DataError, match=r"names\.json is missing"):
        tables.names()
