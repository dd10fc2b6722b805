"""PARAREL as the Knowledge Neurons paper used it: 34 relations, 27,738 facts, 253,448 prompts.

The authors' preprocessing (spec section 6) is rebuilt from three inputs under `raw/`:
`patterns/P*.jsonl` (ParaRel templates), `knowledge-neurons/query_pairs.json` (the paper's
(subject, object) pairs in LAMA T-REx file order) and `knowledge-neurons/relations.jsonl` (LAMA
relation labels and types).  A relation is kept when it has pairs, a pattern file and at least
`min_templates` templates.  Each template, in file order, becomes one prompt by
`pattern.replace('[X]', subject).replace('[Y]', '[MASK]')`, exactly as the authors did.

Order matters because neuron files and BINGREL files are aligned with it: facts keep the
`query_pairs.json` order within a relation.  The authors' relation order came from a directory
listing and is not reproducible, so relations here are sorted by the number in their id
(P19, P20, ..., P1412); pass `relations=[...]` to get another order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kneuron.data.facts import MASK, Fact, FactSet, Relation
from kneuron.errors import DataError
from kneuron.paths import cache_dir, default_data_dir

SUBJECT, OBJECT = "[X]", "[Y]"
PATTERNS_DIR = "patterns"
QUERY_PAIRS = "knowledge-neurons/query_pairs.json"
RELATIONS_FILE = "knowledge-neurons/relations.jsonl"
_REL_ID = re.compile(r"^P(\d+)$")


def relation_sort_key(rel: str) -> tuple[int, str]:
    """Numeric order of Wikidata ids, so P20 comes before P101; odd ids go last, by name."""
    m = _REL_ID.match(rel)
    return (int(m.group(1)), rel) if m else (1 << 62, rel)


def pararel_root(path: str | Path | None = None) -> Path:
    """The `raw/` folder of a PARAREL copy: accepts the dataset folder or `raw/` itself.

    With no path, the shared copy (`default_data_dir()/pararel`) is used, else the one that
    `kneuron data download pararel` puts in the cache.
    """
    if path is None:
        candidates = [default_data_dir() / "pararel", cache_dir() / "data" / "pararel"]
        for c in candidates:
            if (c / "raw" / PATTERNS_DIR).is_dir():
                return c / "raw"
        raise DataError(
            f"no PARAREL data found in {candidates[0]} or {candidates[1]}; "
            "run `kneuron data download pararel` or set KNEURON_DATA"
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"PARAREL directory not found: {path}")
    if (path / "raw" / PATTERNS_DIR).is_dir():
        return path / "raw"
    if (path / PATTERNS_DIR).is_dir():
        return path
    raise DataError(f"{path} is not a PARAREL directory (expected {path / 'raw' / PATTERNS_DIR})")


def is_pararel_dir(path: str | Path) -> bool:
    path = Path(path)
    """Whether `path` looks like a PARAREL copy (the dataset folder or its `raw/`)."""
    return (path / "raw" / PATTERNS_DIR).is_dir() or (
        (path / PATTERNS_DIR).is_dir() and (path / "knowledge-neurons").is_dir()
    )


def _read_json(path: Path):
    if not path.is_file():
        raise DataError(f"PARAREL file not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; bad lines name file and line."""
    if not path.is_file():
        raise DataError(f"PARAREL file not found: {path}")
    rows = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
                    ) from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                rows.append((lineno, obj))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    return rows


def read_templates(path: str | Path) -> list[str]:
    """The templates of one pattern file, in file order, each checked to have [X] and one [Y]."""
    path = Path(path)
    templates = []
    for lineno, obj in _read_jsonl(path):
        pattern = obj.get("pattern")
        if not isinstance(pattern, str):
            raise DataError(f"{path}:{lineno}: missing string field 'pattern'")
        if SUBJECT not in pattern or pattern.count(OBJECT) != 1:
            raise DataError(f"{path}:{lineno}: template needs [X] and exactly one [Y]: {pattern!r}")
        if MASK in pattern:
            raise DataError(f"{path}:{lineno}: template already contains {MASK}: {pattern!r}")
        templates.append(pattern)
    return templates


def read_query_pairs(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """relation -> [(subject, object), ...] in the file's order."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object relation -> [[subject, object], ...]")
    out: dict[str, list[tuple[str, str]]] = {}
    for rel, pairs in data.items():
        if not isinstance(pairs, list):
            raise DataError(f"{path}: relation {rel}: expected a list of [subject, object] pairs")
        checked = []
        for i, pair in enumerate(pairs):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(isinstance(x, str) and x for x in pair)
            ):
                raise DataError(f"{path}: relation {rel}, pair {i}: expected [subject, object], got {pair!r}")
            checked.append((pair[0], pair[1]))
        out[rel] = checked
    return out


def read_relations(path: str | Path) -> dict[str, Relation]:
    """LAMA relation metadata: id -> Relation(id, label, type)."""
    path = Path(path)
    out = {}
    for lineno, obj in _read_jsonl(path):
        rel = obj.get("relation")
        if not isinstance(rel, str) or not rel:
            raise DataError(f"{path}:{lineno}: missing string field 'relation'")
        out[rel] = Relation(rel, str(obj.get("label", "")), str(obj.get("type", "")))
    return out


def load_pararel(
    path: str | Path | None = None,
    relations: list[str] | None = None,
    min_templates: int = 4,
) -> FactSet:
    """The paper's PARAREL facts, one `Fact` per (subject, object) pair with one prompt per template.

    `relations` picks and orders relations; asking for one that the selection rule drops raises a
    `DataError` saying why.
    """
    raw = pararel_root(path)
    pairs = read_query_pairs(raw / QUERY_PAIRS)
    meta = read_relations(raw / RELATIONS_FILE)
    pattern_dir = raw / PATTERNS_DIR
    available = {p.stem for p in pattern_dir.glob("P*.jsonl")}

    def templates_of(rel: str) -> list[str] | None:
        return read_templates(pattern_dir / f"{rel}.jsonl") if rel in available else None

    chosen: list[tuple[str, list[str]]] = []
    if relations:
        for rel in relations:
            if rel not in pairs:
                raise DataError(f"relation {rel} has no facts in {raw / QUERY_PAIRS}")
            templates = templates_of(rel)
            if templates is None:
                raise DataError(f"relation {rel} has no pattern file {pattern_dir / (rel + '.jsonl')}")
            if len(templates) < min_templates:
                raise DataError(f"relation {rel} has {len(templates)} templates, fewer than {min_templates}")
            chosen.append((rel, templates))
    else:
        for rel in sorted(pairs, key=relation_sort_key):
            templates = templates_of(rel)
            if templates is not None and len(templates) >= min_templates:
                chosen.append((rel, templates))
        if not chosen:
            raise DataError(f"{raw}: no relation has both facts and at least {min_templates} templates")

    facts: list[Fact] = []
    rels: dict[str, Relation] = {}
    for rel, templates in chosen:
        rels[rel] = meta.get(rel, Relation(rel))
        for sub, obj in pairs[rel]:
            prompts = [t.replace(SUBJECT, sub).replace(OBJECT, MASK) for t in templates]
            facts.append(Fact(rel, sub, obj, prompts))
    return FactSet(facts, rels, str(raw.parent if raw.name == "raw" else raw))


def relation_tag(relation: Relation) -> str:
    """The authors' relation tag, e.g. "P1376(capital of)"."""
    return f"{relation.id}({relation.label})"


def kn_bags(facts: FactSet) -> list[list[list[str]]]:
    """Facts as the authors' bags: one bag per fact, `[prompt, object, "REL(label)"]` per prompt.

    This is the format of the official `data_11.json` / `data_all.json`, for comparing with them.
    """
    tags = {rel: relation_tag(facts.relations.get(rel, Relation(rel))) for rel in facts.by_relation()}
    return [[[p, f.object, tags[f.relation]] for p in f.prompts] for f in facts.facts]
