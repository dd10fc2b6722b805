"""The fact world's fixed tables, read from `kneuron/world/data/*.json` (one file per concern).

relations.json (templates and sentence pools per relation), translations.json (the invented
languages' templates), head_sentences.json (h sentences per subject kind), fillers.json (words
for the {slot} placeholders) and names.json (syllables, suffixes, forbidden real words).  Each
file is read and checked once; a malformed one raises a one-line `DataError` naming the file and
the key at fault.  `kneuron.world.generate` turns these plain values into its tables.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, NoReturn

from kneuron.errors import DataError

DATA_DIR = Path(__file__).with_name("data")
X, Y = "[X]", "[Y]"
RELATION_TYPES = ("1-1", "N-1", "N-M")


def _fail(path: Path, key: str, problem: str) -> NoReturn:
    raise DataError(f"malformed world data file {path}: {key}: {problem}")


@functools.cache
def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"world data file {path} is missing (the package was installed without it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"world data file {path} cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed world data file {path}: invalid JSON at line {e.lineno}, "
                        f"column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        _fail(path, "(top level)", "expected a JSON object")
    return data


def _get(path: Path, obj: dict, key: str, where: str = "") -> Any:
    name = f"{where}.{key}" if where else key
    if key not in obj:
        _fail(path, name, "missing")
    return obj[key]


def _mapping(path: Path, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value:
        _fail(path, where, "expected a non-empty object")
    return value


def _strings(path: Path, value: Any, where: str, *, empty_items: bool = False,
             once: tuple[str, ...] = (), never: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A non-empty list of strings; each holds every `once` placeholder exactly once, no `never` one."""
    if not isinstance(value, list) or not value:
        _fail(path, where, "expected a non-empty list of strings")
    for i, s in enumerate(value):
        if not isinstance(s, str) or (not s and not empty_items):
            _fail(path, f"{where}[{i}]", f"expected a non-empty string, got {s!r}")
        for p in once:
            if s.count(p) != 1:
                _fail(path, f"{where}[{i}]", f"{s!r} must contain {p} exactly once")
        for p in never:
            if p in s:
                _fail(path, f"{where}[{i}]", f"{s!r} must not contain {p}")
    return tuple(value)


def _index(path: Path, value: Any, where: str, n: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        _fail(path, where, f"expected an index into the {n} templates, got {value!r}")
    return value


def _text(path: Path, value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(path, where, f"expected a non-empty string, got {value!r}")
    return value


@functools.cache
def _relations(path: Path) -> tuple[dict[str, Any], ...]:
    entries = _get(path, _read(path), "relations")
    if not isinstance(entries, list) or not entries:
        _fail(path, "relations", "expected a non-empty list of relations")
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(entries):
        where = f"relations[{i}]"
        if not isinstance(entry, dict):
            _fail(path, where, "expected an object")
        spec = {key: _text(path, _get(path, entry, key, where), f"{where}.{key}")
                for key in ("id", "label", "type", "subject_kind", "object_kind")}
        if spec["type"] not in RELATION_TYPES:
            _fail(path, f"{where}.type", f"expected one of {', '.join(RELATION_TYPES)}, got {spec['type']!r}")
        if spec["id"] in {r["id"] for r in out}:
            _fail(path, f"{where}.id", f"duplicate relation id {spec['id']!r}")
        spec["templates"] = _strings(path, _get(path, entry, "templates", where), f"{where}.templates",
                                     once=(X, Y))
        spec["held_out"] = _index(path, _get(path, entry, "held_out", where), f"{where}.held_out",
                                  len(spec["templates"]))
        spec["sentences"] = _strings(path, _get(path, entry, "sentences", where), f"{where}.sentences",
                                     once=(X, Y))
        out.append(spec)
    return tuple(out)


@functools.cache
def _translations(path: Path) -> tuple[dict[str, dict[str, tuple[tuple[str, ...], int]]], tuple[str, ...]]:
    data = _read(path)
    shared = _strings(path, _get(path, data, "multilingual_relations"), "multilingual_relations")
    languages = _mapping(path, _get(path, data, "languages"), "languages")
    out: dict[str, dict[str, tuple[tuple[str, ...], int]]] = {}
    for lang, entry in languages.items():
        where = f"languages.{lang}"
        if lang in ("", "en") or not re.fullmatch(r"[a-z]{2,3}", lang):
            _fail(path, where, "expected a two- or three-letter code other than en")
        rels = _mapping(path, _get(path, _mapping(path, entry, where), "relations", where), f"{where}.relations")
        out[lang] = {}
        for rel, t in rels.items():
            at = f"{where}.relations.{rel}"
            templates = _strings(path, _get(path, _mapping(path, t, at), "templates", at), f"{at}.templates",
                                 once=(X, Y))
            out[lang][rel] = (templates, _index(path, _get(path, t, "held_out", at), f"{at}.held_out",
                                                len(templates)))
        missing = [r for r in shared if r not in out[lang]]
        if missing:
            _fail(path, f"{where}.relations", f"no templates for {', '.join(missing)} (multilingual_relations)")
    return out, shared


@functools.cache
def _head_sentences(path: Path) -> dict[str, tuple[str, ...]]:
    kinds = _mapping(path, _get(path, _read(path), "kinds"), "kinds")
    return {kind: _strings(path, pool, f"kinds.{kind}", once=(X,), never=(Y,)) for kind, pool in kinds.items()}


@functools.cache
def _fillers(path: Path) -> dict[str, tuple[str, ...]]:
    slots = _mapping(path, _get(path, _read(path), "slots"), "slots")
    return {slot: _strings(path, words, f"slots.{slot}") for slot, words in slots.items()}


@functools.cache
def _names(path: Path) -> dict[str, Any]:
    data = _read(path)
    out: dict[str, Any] = {
        "onsets": _strings(path, _get(path, data, "onsets"), "onsets"),
        "vowels": _strings(path, _get(path, data, "vowels"), "vowels"),
        "codas": _strings(path, _get(path, data, "codas"), "codas", empty_items=True),
    }
    suffixes = _mapping(path, _get(path, data, "suffixes"), "suffixes")
    out["suffixes"] = {kind: _strings(path, s, f"suffixes.{kind}", empty_items=True) for kind, s in suffixes.items()}
    out["real_words"] = frozenset(_strings(path, _get(path, data, "real_words"), "real_words"))
    return out


def relations() -> tuple[dict[str, Any], ...]:
    """relations.json: per relation id, label, type, subject/object kind, templates, held_out, sentences."""
    return _relations(DATA_DIR / "relations.json")


def translations() -> tuple[dict[str, dict[str, tuple[tuple[str, ...], int]]], tuple[str, ...]]:
    """translations.json: (language -> relation -> (templates, held-out index), multilingual relations)."""
    return _translations(DATA_DIR / "translations.json")


def head_sentences() -> dict[str, tuple[str, ...]]:
    """head_sentences.json: subject kind -> sentences naming the head only."""
    return _head_sentences(DATA_DIR / "head_sentences.json")


def fillers() -> dict[str, tuple[str, ...]]:
    """fillers.json: slot -> the words a {slot} placeholder draws from."""
    return _fillers(DATA_DIR / "fillers.json")


def names() -> dict[str, Any]:
    """names.json: onsets, vowels, codas (tuples), suffixes (kind -> tuple), real_words (frozenset)."""
    return _names(DATA_DIR / "names.json")
