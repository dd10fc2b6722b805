"""Users' JSONL facts, and `load_facts` resolving every kind of data spec."""

from __future__ import annotations

import json
import sys
import types

import pytest

from kneuron.data import Fact, FactSet, Relation, load_facts, load_facts_jsonl, save_facts_jsonl
from kneuron.errors import DataError

GOOD = {
    "relation": "capital",
    "subject": "Ireland",
    "object": "Dublin",
    "prompts": ["The capital of Ireland is [MASK]."],
}


def _write(tmp_path, lines, name="facts.jsonl"):
    path = tmp_path / name
    path.write_text(
        "".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines), encoding="utf-8"
    )
    return path


def test_reads_facts_skipping_blanks_and_comments(tmp_path):
    other = dict(
        GOOD,
        subject="France",
        object="Paris",
        prompts=["[MASK] is the capital of France.", "France: [MASK]."],
        relation_label="capital city",
        relation_type="1-1",
    )
    fs = load_facts_jsonl(_write(tmp_path, ["# my facts", GOOD, "", other]))
    assert [f.key for f in fs] == [("capital", "Ireland", "Dublin"), ("capital", "France", "Paris")]
    assert fs.num_prompts == 3
    assert fs.relations["capital"] == Relation("capital", "capital city", "1-1")


def test_round_trip(tmp_path, make_pararel):
    from kneuron.data import load_pararel

    original = load_pararel(make_pararel())
    path = save_facts_jsonl(original, tmp_path / "out" / "facts.jsonl")
    again = load_facts_jsonl(path)
    assert again.facts == original.facts
    assert again.relations == original.relations


def test_round_trip_keeps_unicode(tmp_path):
    fs = FactSet(
        [Fact("P19", "Zoë Ørsted", "Århus", ["Zoë Ørsted was born in [MASK]."])], {"P19": Relation("P19")}
    )
    path = save_facts_jsonl(fs, tmp_path / "u.jsonl")
    assert "Århus" in path.read_text(encoding="utf-8")
    assert load_facts_jsonl(path).facts == fs.facts


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"relation": "capital", "subject": ', r"facts\.jsonl:2: invalid JSON"),
        ('["capital", "Ireland"]', r"facts\.jsonl:2: expected a JSON object"),
        (
            {"relation": "capital", "subject": "Ireland", "prompts": ["[MASK]."]},
            r"facts\.jsonl:2: missing key\(s\) object",
        ),
        (dict(GOOD, subject=""), r":2: 'subject' must be a non-empty string"),
        (dict(GOOD, prompts=[]), r":2: 'prompts' must be a non-empty list"),
        (
            dict(GOOD, prompts=["The capital of Ireland is Dublin."]),
            r":2: prompt 0 must contain exactly one \[MASK\], found 0",
        ),
        (
            dict(GOOD, prompts=["ok [MASK].", "[MASK] and [MASK]."]),
            r":2: prompt 1 must contain exactly one \[MASK\], found 2",
        ),
        (dict(GOOD, prompts=["ok [MASK].", 7]), r":2: prompt 1 is not a string"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    path = _write(tmp_path, [GOOD, line])
    with pytest.raises(DataError, match=match) as err:
        load_facts_jsonl(path)
    assert str(path) in str(err.value)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no facts found"):
        load_facts_jsonl(_write(tmp_path, ["# only a comment", ""]))
    with pytest.raises(DataError, match="facts file not found"):
        load_facts_jsonl(tmp_path / "absent.jsonl")


# --- load_facts ------------------------------------------------------------------------------


def test_load_facts_jsonl_with_relations(tmp_path):
    path = _write(tmp_path, [GOOD, dict(GOOD, relation="born", object="Cork")])
    assert len(load_facts(path)) == 2
    assert [f.object for f in load_facts(str(path), relations=["born"])] == ["Cork"]
    with pytest.raises(DataError, match="relation\\(s\\) not in .*: P19"):
        load_facts(path, relations=["P19"])


def test_load_facts_pararel_forms(make_pararel):
    root = make_pararel()
    for spec in (str(root), root, f"pararel:{root}", str(root / "raw")):
        fs = load_facts(spec)
        assert [f.subject for f in fs] == ["France", "Ireland"], spec
    assert len(load_facts(f"pararel:{root}", relations=["P36"])) == 2


def test_load_facts_shared_pararel(shared_data):
    fs = load_facts(str(shared_data / "pararel"), relations=["P1376", "P463"])
    assert list(fs.relations) == ["P1376", "P463"] and len(fs) == 234 + 225


def test_load_facts_default_pararel(make_pararel, monkeypatch):
    monkeypatch.setenv("KNEURON_DATA", str(make_pararel().parent))
    assert len(load_facts("pararel")) == 2


def test_load_facts_world_is_lazy(monkeypatch):
    calls = []
    world_facts = FactSet(
        [
            Fact("capital", "Zubrowka", "Lutz", ["The capital of Zubrowka is [MASK]."]),
            Fact("river", "Lutz", "Orva", ["[MASK] flows through Lutz."]),
        ],
        source="world",
    )
    fake = types.ModuleType("kneuron.world")
    fake.ensure_world = lambda: calls.append("ensure") or "/cache/world"
    fake.load_world_facts = lambda path: calls.append(path) or world_facts
    monkeypatch.setitem(sys.modules, "kneuron.world", fake)
    assert load_facts("world") is world_facts
    assert calls == ["ensure", "/cache/world"]
    assert [f.relation for f in load_facts("world", relations=["river"])] == ["river"]


@pytest.mark.parametrize("spec", ["nowhere/facts.txt", "wrld", "pararel.csv"])
def test_load_facts_unknown_spec(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="expected 'world', 'real'.*'pararel'.*a .jsonl facts file"):
        load_facts(spec)


def test_load_facts_existing_file_of_wrong_kind(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("a,b\n")
    with pytest.raises(DataError, match="cannot load facts from .*facts.csv"):
        load_facts(path)
    with pytest.raises(DataError, match="cannot load facts from"):
        load_facts(tmp_path)  # a directory that is not PARAREL
