"""PARAREL must come out exactly as the authors built it: same facts, same prompts, same order."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from kneuron.data import MASK, kn_bags, load_pararel
from kneuron.data.pararel import relation_sort_key
from kneuron.errors import DataError

# templates / facts per relation, from the spec's section 6 table
SPEC_COUNTS = {
    "P19": (13, 944),
    "P20": (8, 953),
    "P36": (14, 703),
    "P108": (4, 383),
    "P138": (20, 645),
    "P264": (17, 429),
    "P463": (5, 225),
    "P937": (5, 954),
    "P1376": (14, 234),
    "P1412": (8, 969),
}


# --- the shared data -------------------------------------------------------------------------


def test_paper_totals(pararel):
    assert len(pararel.relations) == 34
    assert len(pararel) == 27_738
    assert pararel.num_prompts == 253_448
    assert pararel.stats() == {"relations": 34, "facts": 27_738, "prompts": 253_448}


def test_relations_sorted_by_number(pararel):
    ids = list(pararel.by_relation())
    assert ids == list(pararel.relations)
    assert ids[:5] == ["P19", "P20", "P27", "P30", "P36"]
    assert ids[-3:] == ["P1303", "P1376", "P1412"]
    assert ids == sorted(ids, key=relation_sort_key)
    dropped = {"P17", "P31", "P131", "P276", "P361", "P527", "P1001"}
    assert not dropped & set(ids)


@pytest.mark.parametrize("rel", sorted(SPEC_COUNTS))
def test_per_relation_counts(pararel, rel):
    templates, n_facts = SPEC_COUNTS[rel]
    facts = pararel.by_relation()[rel]
    assert len(facts) == n_facts
    assert {len(f.prompts) for f in facts} == {templates}


def test_relation_metadata_and_types(pararel):
    assert pararel.relations["P1376"].label == "capital of"
    assert pararel.relations["P1376"].type == "1-1"
    assert pararel.relations["P19"].label == "place of birth"
    facts_by_type = Counter(pararel.relations[f.relation].type for f in pararel)
    rels_by_type = Counter(r.type for r in pararel.relations.values())
    assert rels_by_type == {"1-1": 2, "N-1": 19, "N-M": 13}
    assert facts_by_type == {"1-1": 937, "N-1": 16_304, "N-M": 10_497}


def test_prompt_construction_example(pararel):
    fact = pararel.by_relation()["P1376"][0]
    assert (fact.subject, fact.object) == ("Edmonton", "Alberta")
    assert fact.prompts[0] == "Edmonton is the capital of [MASK]."
    assert fact.prompts[1] == "The capital of [MASK] is Edmonton."  # [Y] before [X]
    bag = kn_bags(pararel.subset(["P1376"]))[0]
    assert bag[0] == ["Edmonton is the capital of [MASK].", "Alberta", "P1376(capital of)"]
    assert len(bag) == 14


def test_every_prompt_has_one_mask_and_the_subject(pararel):
    for fact in pararel:
        for p in fact.prompts:
            assert p.count(MASK) == 1, p
            assert fact.subject in p, p


def test_fact_order_follows_query_pairs(pararel, shared_data):
    pairs = json.loads((shared_data / "pararel/raw/knowledge-neurons/query_pairs.json").read_text())
    for rel, facts in pararel.by_relation().items():
        assert [[f.subject, f.object] for f in facts] == pairs[rel]


def test_reproduces_data_11_exactly(pararel, shared_data):
    """The authors' processed 1-1 bags: P1376 first, then P36, entry by entry."""
    data_11 = json.loads((shared_data / "pararel/raw/knowledge-neurons/data_11.json").read_text())
    assert len(data_11) == 937
    assert data_11[0][0][2] == "P1376(capital of)" and data_11[-1][0][2] == "P36(capital)"
    ours = kn_bags(pararel.subset(["P1376", "P36"]))
    assert len(ours) == len(data_11)
    for i, (mine, theirs) in enumerate(zip(ours, data_11, strict=True)):
        assert mine == theirs, f"bag {i} differs"


def test_relations_argument_picks_and_orders(shared_data):
    fs = load_pararel(shared_data / "pararel", relations=["P1376", "P36"])
    assert list(fs.relations) == ["P1376", "P36"]
    assert len(fs) == 937 and fs.num_prompts == 13_118


@pytest.mark.parametrize(
    ("rel", "reason"),
    [("P17", "no facts"), ("P31", "no facts"), ("P9999", "no facts")],
)
def test_relations_argument_rejects_dropped(shared_data, rel, reason):
    with pytest.raises(DataError, match=f"{rel} has {reason}"):
        load_pararel(shared_data / "pararel", relations=[rel])


def test_accepts_the_raw_folder(shared_data):
    fs = load_pararel(shared_data / "pararel" / "raw", relations=["P463"])
    assert len(fs) == 225


def test_loads_fast(shared_data):
    t0 = time.perf_counter()
    load_pararel(shared_data / "pararel")
    assert time.perf_counter() - t0 < 2.0


# --- tiny fixtures ----------------------------------------------------------------------------


def test_tiny_selection_rule(make_pararel):
    fs = load_pararel(make_pararel())
    assert list(fs.relations) == ["P36"]  # P17 has only 3 templates
    assert [f.prompts[2] for f in fs] == [
        "[MASK] is the capital of France.",
        "[MASK] is the capital of Ireland.",
    ]
    assert fs.relations["P36"].type == "1-1"
    fs3 = load_pararel(make_pararel(), min_templates=3)
    assert list(fs3.relations) == ["P17", "P36"]
    with pytest.raises(DataError, match="P17 has 3 templates, fewer than 4"):
        load_pararel(make_pararel(), relations=["P17"])


def test_relation_without_pattern_file_is_dropped(make_pararel):
    root = make_pararel(pairs={"P36": [["France", "Paris"]], "P30": [["Kenya", "Africa"]]})
    assert list(load_pararel(root).relations) == ["P36"]
    with pytest.raises(DataError, match="P30 has no pattern file"):
        load_pararel(root, relations=["P30"])


def test_relation_missing_from_metadata_gets_empty_label(make_pararel):
    fs = load_pararel(make_pararel(relations=[{"relation": "P17", "label": "country"}]))
    assert fs.relations["P36"].label == "" and fs.relations["P36"].id == "P36"


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not found.*nope"):
        load_pararel(tmp_path / "nope")


def test_directory_without_patterns(tmp_path):
    with pytest.raises(DataError, match="not a PARAREL directory"):
        load_pararel(tmp_path)


@pytest.mark.parametrize("name", ["query_pairs.json", "relations.jsonl"])
def test_missing_file_is_named(make_pararel, name):
    root = make_pararel()
    (root / "raw/knowledge-neurons" / name).unlink()
    with pytest.raises(DataError, match=f"not found: .*{name}"):
        load_pararel(root)


def test_corrupt_query_pairs_names_line(make_pararel):
    root = make_pararel()
    path = root / "raw/knowledge-neurons/query_pairs.json"
    path.write_text('{\n  "P36": [\n    ["France", "Paris"],\n    ["Ireland" "Dublin"]\n  ]\n}\n')
    with pytest.raises(DataError, match=r"query_pairs\.json:4: invalid JSON"):
        load_pararel(root)


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([["France", "Paris"]], "expected a JSON object"),
        ({"P36": "France"}, "relation P36: expected a list"),
        ({"P36": [["France", "Paris"], ["Ireland"]]}, "relation P36, pair 1"),
        ({"P36": [["France", ""]]}, "relation P36, pair 0"),
    ],
)
def test_malformed_query_pairs(make_pararel, pairs, match):
    with pytest.raises(DataError, match=match):
        load_pararel(make_pararel(pairs=pairs))


def test_corrupt_pattern_line_names_file_and_line(make_pararel):
    root = make_pararel()
    write = root / "raw/patterns/P36.jsonl"
    lines = write.read_text().splitlines()
    lines[2] = '{"pattern": "[Y] is the capital of [X]."'
    write.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"P36\.jsonl:3: invalid JSON"):
        load_pararel(root)


@pytest.mark.parametrize(
    "bad",
    ["The capital of France is [Y].", "The capital of [X] is Paris.", "[X] and [X] or [Y] [Y]."],
)
def test_template_without_placeholders(make_pararel, bad):
    patterns = {"P36": ["The capital of [X] is [Y].", "[X]: [Y].", bad, "[Y] is in [X]."]}
    with pytest.raises(DataError, match=r"P36\.jsonl:3: template needs \[X\] and exactly one \[Y\]") as err:
        load_pararel(make_pararel(patterns=patterns))
    assert repr(bad) in str(err.value)


def test_pattern_line_without_pattern_field(make_pararel):
    patterns = {"P36": ["[X]: [Y].", {"lemma": "capital"}, "[X], [Y].", "[Y] of [X]."]}
    with pytest.raises(DataError, match=r"P36\.jsonl:2: missing string field 'pattern'"):
        load_pararel(make_pararel(patterns=patterns))


def test_default_location_from_env(make_pararel, monkeypatch, tmp_path):
    root = make_pararel()
    monkeypatch.setenv("KNEURON_DATA", str(root.parent))
    monkeypatch.setenv("KNEURON_CACHE", str(tmp_path / "cache"))
    assert len(load_pararel()) == 2
    monkeypatch.setenv("KNEURON_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="kneuron data download pararel"):
        load_pararel()
