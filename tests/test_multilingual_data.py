"""Multilingual facts in the JSONL format: per-language prompts and answers, and their bad lines."""

from __future__ import annotations

import json

import pytest

from kneuron.data import FactSet, load_facts_jsonl, save_facts_jsonl
from kneuron.data.jsonl import load_multilingual_facts
from kneuron.errors import DataError

ML = {"relation": "capital", "subject": "Japan", "object": {"en": "Tokyo", "es": "Tokio"},
      "prompts": {"en": ["The capital of Japan is [MASK].", "Japan's capital is [MASK]."],
                  "es": ["La capital de Japón es [MASK]."]}}
PLAIN = {"relation": "capital", "subject": "Ireland", "object": "Dublin", "prompts": ["The capital of Ireland is [MASK]."]}


def _write(tmp_path, lines):
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return path


def test_a_multilingual_line_is_one_fact_per_language(tmp_path):
    facts = load_facts_jsonl(_write(tmp_path, [ML]))
    assert [(f.language, f.object, len(f.prompts)) for f in facts] == [("en", "Tokyo", 2), ("es", "Tokio", 1)]
    assert all(f.subject == "Japan" and f.relation == "capital" for f in facts)


def test_one_answer_for_all_languages_and_plain_lines_still_work(tmp_path):
    same = dict(ML, subject="Peru", object="Lima",
                prompts={"en": ["The capital of Peru is [MASK]."], "es": ["La capital de Perú es [MASK]."]})
    grouped = load_multilingual_facts(_write(tmp_path, [PLAIN, same]))
    assert grouped[0].answers == {"": "Dublin"} and grouped[0].prompts == {"": PLAIN["prompts"]}
    assert grouped[1].answers == {"en": "Lima", "es": "Lima"}
    assert grouped[1].languages == ["en", "es"]


def test_multilingual_round_trip(tmp_path):
    path = _write(tmp_path, [ML])
    facts = load_facts_jsonl(path)
    again = load_facts_jsonl(save_facts_jsonl(facts, tmp_path / "again.jsonl"))
    assert again.facts == facts.facts
    assert json.loads((tmp_path / "again.jsonl").read_text(encoding="utf-8"))["object"] == ML["object"]


def test_saving_a_mix_of_plain_and_language_facts_is_refused(tmp_path):
    facts = load_facts_jsonl(_write(tmp_path, [ML]))
    plain = load_facts_jsonl(_write(tmp_path, [PLAIN]))
    with pytest.raises(DataError, match="mix"):
        save_facts_jsonl(FactSet(facts.facts + plain.facts), tmp_path / "mixed.jsonl")


@pytest.mark.parametrize(
    "line, message",
    [
        (dict(ML, prompts={"en": ML["prompts"]["en"], "es": []}), r":2: language 'es' has no prompts"),
        (dict(ML, prompts={}), r":2: 'prompts' is an empty language map"),
        (dict(ML, object={"en": "Tokyo"}), r":2: 'object' has no answer for language\(s\) es that the prompts have"),
        (dict(ML, object={"en": "Tokyo", "es": "Tokio", "fr": "Tokyo"}),
         r":2: 'object' has an answer for language\(s\) fr without prompts"),
        (dict(ML, object={"en": "Tokyo", "es": ""}), r":2: 'object' of language 'es' must be a non-empty string"),
        (dict(ML, object=3), r":2: 'object' must be a string or a language -> answer map"),
        (dict(ML, prompts={"en": ["no blank here"], "es": ML["prompts"]["es"]}),
         r":2: prompt 0 of language 'en' must contain exactly one \[MASK\], found 0"),
        (dict(ML, prompts={"en": "The capital of Japan is [MASK].", "es": ML["prompts"]["es"]}),
         r":2: 'prompts' of language 'en' must be a non-empty list of strings"),
        (dict(PLAIN, object={"en": "Dublin"}), r":2: 'object' is a language map but 'prompts' is a list"),
    ],
)
def test_bad_multilingual_lines_name_file_line_and_problem(tmp_path, line, message):
    path = _write(tmp_path, [PLAIN, line])
    with pytest.raises(DataError, match=message) as err:
        load_facts_jsonl(path)
    assert str(err.value).startswith(f"{path}:2: ")


def test_the_shipped_real_facts_load():
    from kneuron.data.multilingual import REAL_FACTS

    facts = load_multilingual_facts(REAL_FACTS)
    assert len(facts) >= 25
    for fact in facts:
        assert set(fact.languages) == {"en", "fr", "es", "de"}
        assert all(p.rstrip(".").endswith("[MASK]") for ps in fact.prompts.values() for p in ps)
