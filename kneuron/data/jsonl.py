"""Users' own facts: one JSON object per line.

    {"relation": "capital", "subject": "Ireland", "object": "Dublin",
     "prompts": ["The capital of Ireland is [MASK].", "Ireland's capital, [MASK], ..."]}

`relation`, `subject`, `object` are non-empty strings; `prompts` is a non-empty list of strings,
each holding exactly one "[MASK]" where the object goes.  Optional keys: `relation_label`,
`relation_type` ("1-1", "N-1", "N-M").  Blank lines and lines starting with '#' are skipped.

A fact may come in several languages: `prompts` is then a map from language code to a non-empty
list of prompts, and `object` is one string (the same answer everywhere) or a map from language to
answer covering exactly the prompts' languages:

    {"relation": "capital", "subject": "Japan", "object": {"en": "Tokyo", "es": "Tokio"},
     "prompts": {"en": ["The capital of Japan is [MASK]."], "es": ["La capital de Japón es [MASK]."]}}

Such a line becomes one `Fact` per language (`Fact.language` set), so every single-language tool
reads it unchanged; `load_multilingual_facts` gathers the languages of each fact again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from kneuron.data.facts import MASK, Fact, FactSet, MultilingualFact, Relation, group_languages
from kneuron.errors import DataError

REQUIRED = ("relation", "subject", "object", "prompts")


def _check_prompts(prompts: object, where: str, language: str | None = None) -> list[str]:
    of = "" if language is None else f" of language {language!r}"
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{where}: 'prompts'{of} must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise DataError(f"{where}: prompt {i}{of} is not a string: {p!r}")
        n = p.count(MASK)
        if n != 1:
            raise DataError(f"{where}: prompt {i}{of} must contain exactly one {MASK}, found {n}: {p!r}")
    return list(prompts)


def _check_string(value: object, where: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {what} must be a non-empty string, got {value!r}")
    return value


def _language_prompts(prompts: dict, where: str) -> dict[str, list[str]]:
    if not prompts:
        raise DataError(f"{where}: 'prompts' is an empty language map")
    out = {}
    for lang, ps in prompts.items():
        if not lang.strip():
            raise DataError(f"{where}: 'prompts' has an empty language code")
        if isinstance(ps, list) and not ps:
            raise DataError(f"{where}: language {lang!r} has no prompts")
        out[lang] = _check_prompts(ps, where, lang)
    return out


def _language_answers(obj: object, languages: list[str], where: str) -> dict[str, str]:
    if isinstance(obj, str):
        answer = _check_string(obj, where, "'object'")
        return {lang: answer for lang in languages}
    if not isinstance(obj, dict):
        raise DataError(f"{where}: 'object' must be a string or a language -> answer map, got {obj!r}")
    missing = [lang for lang in languages if lang not in obj]
    if missing:
        raise DataError(f"{where}: 'object' has no answer for language(s) {', '.join(missing)} "
                        "that the prompts have")
    extra = [lang for lang in obj if lang not in languages]
    if extra:
        raise DataError(f"{where}: 'object' has an answer for language(s) {', '.join(extra)} without prompts")
    return {lang: _check_string(obj[lang], where, f"'object' of language {lang!r}") for lang in languages}


def _parse_line(obj: object, where: str) -> tuple[list[Fact], Relation]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in ("relation", "subject"):
        _check_string(obj[key], where, f"'{key}'")
    rel = Relation(obj["relation"], str(obj.get("relation_label", "")), str(obj.get("relation_type", "")))
    prompts = obj["prompts"]
    if isinstance(prompts, dict):
        by_lang = _language_prompts(prompts, where)
        answers = _language_answers(obj["object"], list(by_lang), where)
        fact = MultilingualFact(obj["relation"], obj["subject"], by_lang, answers)
        return fact.per_language(), rel
    if isinstance(obj["object"], dict):
        raise DataError(f"{where}: 'object' is a language map but 'prompts' is a list; "
                        "give 'prompts' as a language -> list map too")
    _check_string(obj["object"], where, "'object'")
    prompts = _check_prompts(prompts, where)
    return [Fact(obj["relation"], obj["subject"], obj["object"], prompts)], rel


def json_lines(path: Path, what: str) -> Iterator[tuple[str, object]]:
    """("FILE:LINE", parsed object) for each line of a JSON Lines file, blank and `#` lines skipped;
    a missing file, text that is not UTF-8 or a line that is not JSON raises a one-line `DataError`."""
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                yield where, obj
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_facts_jsonl(path: str | Path) -> FactSet:
    """Read a facts file; any bad line raises `DataError` naming the file and line."""
    path = Path(path)
    facts: list[Fact] = []
    relations: dict[str, Relation] = {}
    for where, obj in json_lines(path, "facts file"):
        line_facts, rel = _parse_line(obj, where)
        facts.extend(line_facts)
        if rel.id not in relations or (rel.label or rel.type) and not relations[rel.id].label:
            relations[rel.id] = rel
    if not facts:
        raise DataError(f"{path}: no facts found")
    return FactSet(facts, relations, str(path))


def load_multilingual_facts(path: str | Path) -> list[MultilingualFact]:
    """The facts of a file with their languages gathered (a plain line is one fact in language "")."""
    return group_languages(load_facts_jsonl(path).facts)


def save_facts_jsonl(facts: FactSet, path: str | Path, header: list[str] | None = None) -> Path:
    """Write a `FactSet` in the same format (relation label and type included when known).

    Facts with a language are written back as one multilingual line per (relation, subject).
    `header` lines are written first as `#` comments (provenance); the file appears atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = [f for f in facts.facts if not f.language]
    rows = [(f.relation, f.subject, f.object, f.prompts) for f in plain]
    if len(plain) != len(facts.facts):
        if plain:
            raise DataError("cannot save a mix of facts with and without a language in one file")
        rows = [(m.relation, m.subject, m.answers, m.prompts) for m in group_languages(facts.facts)]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in header or []:
            fh.write(f"# {line}\n")
        for relation, subject, obj, prompts in rows:
            rel = facts.relations.get(relation, Relation(relation))
            row = {"relation": relation, "subject": subject, "object": obj, "prompts": prompts}
            if rel.label:
                row["relation_label"] = rel.label
            if rel.type:
                row["relation_type"] = rel.type
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
