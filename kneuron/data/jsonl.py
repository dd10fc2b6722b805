"""Users' own facts: one JSON object per line.

    {"relation": "capital", "subject": "Ireland", "object": "Dublin",
     "prompts": ["The capital of Ireland is [MASK].", "Ireland's capital, [MASK], ..."]}

`relation`, `subject`, `object` are non-empty strings; `prompts` is a non-empty list of strings,
each holding exactly one "[MASK]" where the object goes.  Optional keys: `relation_label`,
`relation_type` ("1-1", "N-1", "N-M").  Blank lines and lines starting with '#' are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from kneuron.data.facts import MASK, Fact, FactSet, Relation
from kneuron.errors import DataError

REQUIRED = ("relation", "subject", "object", "prompts")


def _parse_line(obj: object, where: str) -> tuple[Fact, Relation]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in ("relation", "subject", "object"):
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise DataError(f"{where}: '{key}' must be a non-empty string, got {obj[key]!r}")
    prompts = obj["prompts"]
    if not isinstance(prompts, list) or not prompts:
        raise DataError(f"{where}: 'prompts' must be a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise DataError(f"{where}: prompt {i} is not a string: {p!r}")
        n = p.count(MASK)
        if n != 1:
            raise DataError(f"{where}: prompt {i} must contain exactly one {MASK}, found {n}: {p!r}")
    rel = Relation(obj["relation"], str(obj.get("relation_label", "")), str(obj.get("relation_type", "")))
    return Fact(obj["relation"], obj["subject"], obj["object"], list(prompts)), rel


def load_facts_jsonl(path: str | Path) -> FactSet:
    """Read a facts file; any bad line raises `DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"facts file not found: {path}")
    facts: list[Fact] = []
    relations: dict[str, Relation] = {}
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
            fact, rel = _parse_line(obj, where)
            facts.append(fact)
            if rel.id not in relations or (rel.label or rel.type) and not relations[rel.id].label:
                relations[rel.id] = rel
    if not facts:
        raise DataError(f"{path}: no facts found")
    return FactSet(facts, relations, str(path))


def save_facts_jsonl(facts: FactSet, path: str | Path, header: list[str] | None = None) -> Path:
    """Write a `FactSet` in the same format (relation label and type included when known).

    `header` lines are written first as `#` comments (provenance); the file appears atomically.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in header or []:
            fh.write(f"# {line}\n")
        for f in facts.facts:
            rel = facts.relations.get(f.relation, Relation(f.relation))
            row = {"relation": f.relation, "subject": f.subject, "object": f.object, "prompts": f.prompts}
            if rel.label:
                row["relation_label"] = rel.label
            if rel.type:
                row["relation_type"] = rel.type
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
