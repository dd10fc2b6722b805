"""BINGREL files load as one sentence bag per fact, aligned with the PARAREL facts."""

from __future__ import annotations

import json

import pytest

from kneuron.data import Fact, SentenceBag, check_alignment, load_bingrel
from kneuron.data.bingrel import bingrel_filename
from kneuron.errors import DataError

SHARED_SIZES = {"P463": 225, "P937": 954, "P1376": 234}


def test_loads_shared_slice_in_numeric_order(bingrel_dir):
    bags = load_bingrel(bingrel_dir)
    assert list(bags) == ["P463", "P937", "P1376"]
    assert {rel: len(b) for rel, b in bags.items()} == SHARED_SIZES
    assert all(isinstance(b, SentenceBag) for b in bags["P463"])


@pytest.mark.parametrize("rel", sorted(SHARED_SIZES))
def test_aligned_with_pararel_facts(bingrel_dir, pararel, rel):
    bags = load_bingrel(bingrel_dir, relation=rel)[rel]
    facts = pararel.by_relation()[rel]
    check_alignment(bags, facts, rel)
    # Alignment is by position: the th sentences of fact i mention its tail (the spec checked all of them).
    with_th = [(b, f) for b, f in zip(bags, facts, strict=True) if b.th]
    assert with_th
    assert all(f.object in s for b, f in with_th for s in b.th)


def test_first_p1376_bag_is_about_edmonton(bingrel_dir):
    bag = load_bingrel(bingrel_dir / bingrel_filename("P1376"))["P1376"][0]
    assert bag.th and "Edmonton" in bag.th[0] and "Alberta" in bag.th[0]
    assert len(bag.th) <= 10 and len(bag.h) <= 10


def test_relation_filter_list(bingrel_dir):
    assert list(load_bingrel(bingrel_dir, relation=["P1376", "P463"])) == ["P1376", "P463"]


def test_misalignment_is_refused():
    facts = [Fact("P36", "France", "Paris", ["[MASK]"]), Fact("P36", "Ireland", "Dublin", ["[MASK]"])]
    with pytest.raises(DataError, match="P36: 1 sentence bags but 2 facts"):
        check_alignment([SentenceBag([], [])], facts)
    with pytest.raises(DataError, match="other relations given: P36"):
        check_alignment([SentenceBag([], [])] * 2, facts, "P19")
    check_alignment([SentenceBag(["Paris is the capital of France."], [])] * 2, facts, "P36")


def _write(tmp_path, content, rel="P36"):
    path = tmp_path / bingrel_filename(rel)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_tiny_file_roundtrip(tmp_path):
    path = _write(
        tmp_path, [{"th_bags": ["Paris, France."], "h_bags": []}, {"th_bags": [], "h_bags": ["Dublin."]}]
    )
    assert load_bingrel(path) == {"P36": [SentenceBag(["Paris, France."], []), SentenceBag([], ["Dublin."])]}
    assert load_bingrel(tmp_path, relation="P36") == load_bingrel(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('[\n  {"th_bags": [],\n   "h_bags": [}\n]', r"_new\.json:3: invalid JSON"),
        ({"th_bags": [], "h_bags": []}, "expected a JSON list"),
        ([{"th_bags": [], "h_bags": []}, ["x"]], "element 1: expected an object"),
        ([{"th_bags": [], "h_bags": []}, {"th_bags": []}], "element 1: missing key 'h_bags'"),
        ([{"th_bags": "Paris", "h_bags": []}], "element 0: 'th_bags' must be a list of strings"),
        ([{"th_bags": [], "h_bags": ["ok", 3]}], "element 0: 'h_bags' must be a list of strings"),
    ],
)
def test_structure_errors_name_file_and_element(tmp_path, content, match):
    path = _write(tmp_path, content)
    with pytest.raises(DataError, match=match) as err:
        load_bingrel(path)
    assert str(path) in str(err.value)


def test_path_errors(tmp_path):
    with pytest.raises(DataError, match="BINGREL path not found"):
        load_bingrel(tmp_path / "missing")
    with pytest.raises(DataError, match="no final_distant_allbags_P\\*_new.json files"):
        load_bingrel(tmp_path)
    with pytest.raises(DataError, match="BINGREL file not found: .*P19_new.json"):
        load_bingrel(tmp_path, relation="P19")
    other = tmp_path / "bags.json"
    other.write_text("[]")
    with pytest.raises(DataError, match="not a BINGREL file"):
        load_bingrel(other)
    path = _write(tmp_path, [])
    with pytest.raises(DataError, match="holds relation P36, not P19"):
        load_bingrel(path, relation="P19")
