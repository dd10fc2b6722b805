"""BINGREL: web sentences about each PARAREL fact, for the activation experiment (spec 5.3).

A relation's file `final_distant_allbags_<REL>_new.json` is a JSON list with one element per fact
of that relation, in `query_pairs.json` order; the element's position is the only link to its
fact, so `check_alignment` must pass before the two are zipped together.  Each element holds
`th_bags` (sentences with the head and the tail) and `h_bags` (sentences with only the head).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kneuron.data.facts import Fact
from kneuron.data.pararel import relation_sort_key
from kneuron.errors import DataError
from kneuron.paths import cache_dir, default_data_dir

FILE_RE = re.compile(r"^final_distant_allbags_(P\d+)_new\.json$")


def bingrel_filename(relation: str) -> str:
    return f"final_distant_allbags_{relation}_new.json"


@dataclass
class SentenceBag:
    """The sentences found for one fact: `th` mention head and tail, `h` only the head."""

    th: list[str]
    h: list[str]


def _default_dir() -> Path:
    candidates = [default_data_dir() / "bingrel", cache_dir() / "data" / "bingrel"]
    for c in candidates:
        if c.is_dir() and any(FILE_RE.match(p.name) for p in c.iterdir()):
            return c
    raise DataError(
        f"no BINGREL data found in {candidates[0]} or {candidates[1]}; "
        "run `kneuron data download bingrel` or set KNEURON_DATA"
    )


def validate_bags(data: object, path: Path) -> list[SentenceBag]:
    """Parsed JSON -> bags, or a `DataError` naming the file and the first bad element."""
    if not isinstance(data, list):
        raise DataError(
            f"{path}: expected a JSON list of {{th_bags, h_bags}} objects, got {type(data).__name__}"
        )
    bags = []
    for i, elem in enumerate(data):
        if not isinstance(elem, dict):
            raise DataError(f"{path}: element {i}: expected an object, got {type(elem).__name__}")
        lists = []
        for key in ("th_bags", "h_bags"):
            if key not in elem:
                raise DataError(f"{path}: element {i}: missing key '{key}'")
            value = elem[key]
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise DataError(f"{path}: element {i}: '{key}' must be a list of strings")
            lists.append(value)
        bags.append(SentenceBag(*lists))
    return bags


def read_bingrel_file(path: str | Path) -> list[SentenceBag]:
    """One relation's bags, checked element by element."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"BINGREL file not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return validate_bags(data, path)


def load_bingrel(
    path_or_dir: str | Path | None = None,
    relation: str | Sequence[str] | None = None,
) -> dict[str, list[SentenceBag]]:
    """relation -> bags, from one file or a folder of them (relations in numeric id order).

    `relation` (an id or a list of ids) limits which files are read; with no path the shared copy
    or the downloaded one is used.
    """
    wanted = [relation] if isinstance(relation, str) else list(relation) if relation else None
    path = _default_dir() if path_or_dir is None else Path(path_or_dir).expanduser()
    if path.is_file():
        m = FILE_RE.match(path.name)
        if not m:
            raise DataError(f"{path}: not a BINGREL file (expected a name like {bingrel_filename('P19')})")
        if wanted and wanted != [m.group(1)]:
            raise DataError(f"{path} holds relation {m.group(1)}, not {', '.join(wanted)}")
        return {m.group(1): read_bingrel_file(path)}
    if not path.is_dir():
        raise DataError(f"BINGREL path not found: {path}")
    if wanted:
        files = {rel: path / bingrel_filename(rel) for rel in wanted}
    else:
        found = {m.group(1): p for p in path.iterdir() if (m := FILE_RE.match(p.name))}
        if not found:
            raise DataError(f"{path}: no {bingrel_filename('P*')} files")
        files = {rel: found[rel] for rel in sorted(found, key=relation_sort_key)}
    return {rel: read_bingrel_file(p) for rel, p in files.items()}


def check_alignment(
    bags: Sequence[SentenceBag], facts_of_relation: Sequence[Fact], relation: str = ""
) -> None:
    """Refuse to pair bags with facts unless there is exactly one bag per fact."""
    if len(bags) != len(facts_of_relation):
        rel = relation or (facts_of_relation[0].relation if facts_of_relation else "?")
        raise DataError(
            f"BINGREL {rel}: {len(bags)} sentence bags but {len(facts_of_relation)} facts; "
            "the files are aligned by position, so they must match one to one"
        )
    rels = {f.relation for f in facts_of_relation}
    if relation and rels - {relation}:
        raise DataError(
            f"BINGREL {relation}: facts of other relations given: {', '.join(sorted(rels - {relation}))}"
        )
