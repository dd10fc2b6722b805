"""`kneuron data stats|download` end to end, and single-token coverage with a real tokenizer."""

from __future__ import annotations

import json

import pytest

from kneuron.cli import main
from kneuron.data import Fact, FactSet, single_token_coverage


def _run(capsys, *args):
    rc = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(err: str, *phrases: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err
    for p in phrases:
        assert p in lines[0]


def _facts_file(tmp_path):
    rows = [
        {
            "relation": "capital",
            "subject": "France",
            "object": "Paris",
            "prompts": ["The capital of France is [MASK]."],
        },
        {
            "relation": "capital",
            "subject": "Ireland",
            "object": "Dublin",
            "prompts": ["The capital of Ireland is [MASK].", "Ireland's capital is [MASK]."],
        },
        {
            "relation": "lost",
            "subject": "Atlantis",
            "object": "Atlantis",
            "prompts": ["[MASK] is lost."],
            "relation_label": "lost city",
            "relation_type": "1-1",
        },
    ]
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- coverage --------------------------------------------------------------------------------


def test_single_token_coverage_counts(tiny_tokenizer):
    fs = FactSet(
        [
            Fact("capital", "France", "Paris", ["a [MASK]", "b [MASK]"]),
            Fact("capital", "Ireland", "Dublin", ["c [MASK]"]),  # Dub ##lin
            Fact("country", "Paris", "France", ["d [MASK]", "e [MASK]", "f [MASK]"]),
            Fact("country", "Atlantis", "Atlantis", ["g [MASK]"]),  # [UNK]
            Fact("country", "Dublin", "Paris", ["h [MASK]"]),
        ]
    )
    cov = single_token_coverage(fs, tiny_tokenizer)
    assert cov["relations"]["capital"] == {
        "facts": 2,
        "single_token_facts": 1,
        "prompts": 3,
        "single_token_prompts": 2,
    }
    assert cov["relations"]["country"] == {
        "facts": 3,
        "single_token_facts": 2,
        "prompts": 5,
        "single_token_prompts": 4,
    }
    assert cov["total"] == {"facts": 5, "single_token_facts": 3, "prompts": 8, "single_token_prompts": 6}


# --- stats -----------------------------------------------------------------------------------


def test_stats_shared_pararel(capsys, shared_data):
    rc, out, err = _run(capsys, "stats", shared_data / "pararel")
    assert rc == 0, err
    assert "34 relations" in out and "27,738 facts" in out and "253,448 prompts" in out
    assert "Total: 34 relations, 27,738 facts, 253,448 prompts" in out
    row = next(line for line in out.splitlines() if "P1376" in line)
    assert "capital of" in row and "1-1" in row and "14" in row and "234" in row and "3,276" in row


def test_stats_relations_option(capsys, shared_data):
    rc, out, _ = _run(capsys, "stats", f"pararel:{shared_data / 'pararel'}", "--relations", "P19,P36")
    assert rc == 0
    assert "Total: 2 relations, 1,647 facts, 22,114 prompts" in out
    assert "P1376" not in out


def test_stats_jsonl_with_tokenizer(capsys, tmp_path, tiny_tokenizer_dir):
    rc, out, err = _run(capsys, "stats", _facts_file(tmp_path), "--model", tiny_tokenizer_dir)
    assert rc == 0, err
    assert "Total: 2 relations, 3 facts, 4 prompts" in out
    assert "1 of 3 facts (33.3%), 1 of 4 prompts (25.0%)" in out
    capital = next(line for line in out.splitlines() if "capital" in line)
    assert "1.50" in capital  # prompts per fact vary, so the mean is shown
    lost = next(line for line in out.splitlines() if "lost city" in line)
    assert "0.0%" in lost


def test_stats_bad_path_is_one_line(capsys, tmp_path):
    rc, out, err = _run(capsys, "stats", tmp_path / "no-such-dir")
    assert rc == 2 and out == ""
    _assert_one_line_error(err, "no-such-dir", "expected 'world'")


def test_stats_corrupt_data_is_one_line(capsys, make_pararel):
    root = make_pararel(patterns={"P36": ["[X] is [Y].", "[X] has no object.", "[Y] of [X].", "[X]: [Y]."]})
    rc, _, err = _run(capsys, "stats", root)
    assert rc == 2
    _assert_one_line_error(err, "P36.jsonl:2", "[X] has no object.")


def test_stats_bad_model_is_one_line(capsys, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    rc, out, err = _run(capsys, "stats", _facts_file(tmp_path), "--model", empty)
    assert rc == 2
    _assert_one_line_error(err, "cannot load the tokenizer of", "not-a-model")


def test_stats_unknown_relation(capsys, make_pararel):
    rc, _, err = _run(capsys, "stats", make_pararel(), "-r", "P19")
    assert rc == 2
    _assert_one_line_error(err, "P19")


# --- download --------------------------------------------------------------------------------


def test_download_then_stats(capsys, pararel_mirror, tmp_path):
    dest = tmp_path / "pararel"
    rc, out, err = _run(capsys, "download", "pararel", "--dest", dest, "--base-url", pararel_mirror.as_uri())
    assert rc == 0, err
    assert "42 files verified" in out and "42 downloaded, 0 already present" in out
    rc, out, _ = _run(capsys, "download", "pararel", "--dest", dest, "--base-url", pararel_mirror.as_uri())
    assert rc == 0 and "0 downloaded, 42 already present" in out
    rc, out, _ = _run(capsys, "stats", dest)
    assert rc == 0 and "Total: 34 relations, 27,738 facts, 253,448 prompts" in out


def test_download_checksum_mismatch_is_one_line(capsys, pararel_mirror, tmp_path):
    from kneuron.data.download import PARAREL_COMMIT

    tampered = (
        pararel_mirror / "yanaiela/pararel" / PARAREL_COMMIT / "data/pattern_data/graphs_json/P19.jsonl"
    )
    tampered.write_text(tampered.read_text().replace("born", "borne"))
    rc, _, err = _run(
        capsys, "download", "pararel", "--dest", tmp_path / "d", "--base-url", pararel_mirror.as_uri()
    )
    assert rc == 2
    _assert_one_line_error(err, "graphs_json/P19.jsonl", "checksum mismatch")
    assert not (tmp_path / "d/raw/patterns/P19.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [(["lama"], "unknown dataset 'lama'"), (["bingrel", "-r", "P17"], "no BINGREL file for relation(s) P17")],
)
def test_download_bad_arguments(capsys, tmp_path, args, phrase):
    rc, _, err = _run(capsys, "download", *args, "--dest", tmp_path / "d", "--base-url", tmp_path.as_uri())
    assert rc == 2
    _assert_one_line_error(err, phrase)


def test_download_relations_only_for_bingrel(capsys, tmp_path):
    rc, _, err = _run(capsys, "download", "pararel", "-r", "P19", "--dest", tmp_path)
    assert rc == 2 and "--relations applies to bingrel only" in err


def test_error_keeps_square_brackets(tmp_path, capsys):
    from kneuron.cli import main

    bad = tmp_path / "facts.jsonl"
    bad.write_text('{"relation": "r", "subject": "s", "object": "o", "prompts": ["no blank"]}\n')
    assert main(["data", "stats", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "[MASK]" in err and f"{bad}:1" in err.replace("\n", "")


def test_stats_model_world_uses_the_cached_world(monkeypatch, tmp_path, capsys):
    from tiny_models import save_tiny_bert

    import kneuron.world as world
    from kneuron.cli import main

    model_dir = save_tiny_bert(tmp_path / "w")
    monkeypatch.setattr(world, "builtin_model_dir", lambda name, log=print: model_dir if name == "world" else None)
    facts = tmp_path / "f.jsonl"
    facts.write_text('{"relation": "r", "subject": "Ireland", "object": "Dublin", "prompts": ["[MASK] x"]}\n')
    assert main(["data", "stats", str(facts), "--model", "world"]) == 0
    assert "100.0%" in capsys.readouterr().out
