"""A built fact world on disk, and the user cache that holds the default one.

Layout of a world directory (model files at the root so that `AutoModelForMaskedLM` and
`AutoTokenizer.from_pretrained(dir)` work on it directly):

    config.json, model.safetensors, tokenizer.json, tokenizer_config.json, vocab.txt
    facts.jsonl          all facts with all templates (users' JSONL format), relation then fact order
    relations.jsonl      {"relation", "label", "type", "templates", "held_out_template", ...} per line
    bingrel/final_distant_allbags_<REL>_new.json   BINGREL bags aligned with that relation's facts
    world.json           written last: format version, configs, seeds, metrics, timings, versions

A build writes into a temporary sibling directory and renames it into place, so an interrupted
build never leaves a half world; a lock file keeps two processes from training the same cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from kneuron.data.facts import FactSet, Relation
from kneuron.data.jsonl import load_facts_jsonl, save_facts_jsonl
from kneuron.errors import DataError
from kneuron.files import entry_lock, staged
from kneuron.paths import cache_dir
from kneuron.world.generate import (
    GENERATOR_REVISION,
    World,
    WorldConfig,
    WorldRelation,
    generate_world,
    multilingual_world_config,
)
from kneuron.world.train import TrainConfig, train_world_model
from kneuron.world.train_causal import CausalTrainConfig, train_causal_world_model

FORMAT_VERSION = 1
WORLD_FILE = "world.json"
FACTS_FILE = "facts.jsonl"
RELATIONS_FILE = "relations.jsonl"
BINGREL_DIR = "bingrel"
_MODEL_FILES = ("config.json", "tokenizer.json")

Log = Callable[[str], None]

# The world's model comes in two kinds: a masked LM (the paper's setting) and a gated-MLP decoder.
KINDS = ("masked", "causal")
# Model names that mean "the cached default world of this kind", wherever a model is named.
BUILTIN_MODELS = {"world": "masked", "world-causal": "causal",
                  "world-multilingual": "masked", "world-multilingual-causal": "causal"}
# ... and those of them that are the multilingual world (`multilingual_world_config`).
MULTILINGUAL_MODELS = frozenset({"world-multilingual", "world-multilingual-causal"})


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise DataError(f"unknown fact-world model kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


# The multilingual BERT needs more epochs: at 20 it learns only "located in" (40% of the training
# prompts right), at 40 every relation (the decoder learns everything in its usual 25).
MULTILINGUAL_MASKED_EPOCHS = 40


def _default_train_config(kind: str, seed: int, multilingual: bool = False):
    """Today's default settings for a kind (looked up at call time, so tests can shrink them)."""
    if kind == "masked":
        return TrainConfig(seed=seed, epochs=MULTILINGUAL_MASKED_EPOCHS) if multilingual else TrainConfig(seed=seed)
    return CausalTrainConfig(seed=seed)


def kind_of(train_config) -> str:
    return getattr(train_config, "kind", "masked")


def default_world_config(multilingual: bool = False) -> WorldConfig:
    """The settings of the cached default world (English), or of the multilingual one."""
    return multilingual_world_config() if multilingual else WorldConfig()


def default_world_dir(seed: int = 0, kind: str = "masked", multilingual: bool = False) -> Path:
    """Where the cached world for `seed` lives (versioned, so a format change rebuilds)."""
    suffix = ("-multilingual" if multilingual else "") + ("" if _kind(kind) == "masked" else f"-{kind}")
    return cache_dir() / "world" / f"v{FORMAT_VERSION}-seed{seed}{suffix}"


def builtin_model_dir(name: str, log: Log | None = print) -> Path | None:
    """The directory of a built-in model name ('world', 'world-causal', 'world-multilingual',
    'world-multilingual-causal'), trained on first use; else None."""
    kind = BUILTIN_MODELS.get(str(name))
    return None if kind is None else ensure_world(log=log, kind=kind, multilingual=name in MULTILINGUAL_MODELS)


def bingrel_file(world_dir: str | Path, relation: str) -> Path:
    """The BINGREL bag file of one relation, named like the authors' files."""
    return Path(world_dir) / BINGREL_DIR / f"final_distant_allbags_{relation}_new.json"


def is_world_dir(path: str | Path) -> bool:
    """True only for a complete world of the current format (world.json is written last)."""
    path = Path(path)
    try:
        meta = json.loads((path / WORLD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        return False
    needed = [*_MODEL_FILES, FACTS_FILE, RELATIONS_FILE]
    if not all((path / name).is_file() for name in needed):
        return False
    has_weights = (path / "model.safetensors").is_file() or (path / "pytorch_model.bin").is_file()
    return has_weights and all(bingrel_file(path, r).is_file() for r in meta.get("relations", []))


# --------------------------------------------------------------------------------------------
# Writing


def save_world_data(world: World, out_dir: str | Path) -> None:
    """Facts, relations and BINGREL bags of a generated world (not the model, not world.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    order = {r.id: i for i, r in enumerate(world.relations)}
    facts = sorted(world.facts, key=lambda f: order[f.relation])  # stable: fact order kept
    save_facts_jsonl(FactSet(facts, {r.id: r.relation for r in world.relations}), out_dir / FACTS_FILE)
    bags = _bags_per_fact(world, facts)
    with (out_dir / RELATIONS_FILE).open("w", encoding="utf-8") as fh:
        for r in world.relations:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    for r in world.relations:
        path = bingrel_file(out_dir, r.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(bags[r.id], ensure_ascii=False), encoding="utf-8")


def _bags_per_fact(world: World, facts) -> dict[str, list[dict[str, list[str]]]]:
    """Bags aligned with each relation's facts as `load_world_facts` reads them.

    The sentences are English: in a multilingual world the English fact keeps them and the same
    fact in another language gets empty bags (there is no open-domain text in those languages).
    """
    if not any(f.language for f in facts):
        return world.bags
    out: dict[str, list[dict[str, list[str]]]] = {}
    for r in world.relations:
        english = iter(world.bags[r.id])
        out[r.id] = [next(english) if f.language == "en" else {"th_bags": [], "h_bags": []}
                     for f in facts if f.relation == r.id]
    return out


def _counts(world: World) -> dict:
    bags = [b for rel in world.bags.values() for b in rel]
    return {
        "relations": len(world.relations),
        "facts": len(world.facts),
        "prompts": sum(len(f.prompts) for f in world.facts),
        "th_sentences": sum(len(b["th_bags"]) for b in bags),
        "h_sentences": sum(len(b["h_bags"]) for b in bags),
        "by_type": {t: sum(1 for r in world.relations if r.type == t) for t in ("1-1", "N-1", "N-M")},
    }


def build_world(
    out_dir: str | Path | None = None,
    seed: int = 0,
    world_config: WorldConfig | None = None,
    train_config: TrainConfig | CausalTrainConfig | None = None,
    force: bool = False,
    log: Log | None = print,
    kind: str | None = None,
) -> Path:
    """Generate a world, train its model and save both; reuse a complete world unless `force`.

    `seed` seeds the generator and, when no `train_config` is given, the trainer too.  `kind`
    ("masked", the default, or "causal") follows `train_config` when one is given.
    Refuses to replace a non-empty directory that is not a fact world (it may be the user's).
    """
    log = log or (lambda _msg: None)
    kind = _kind(kind or (kind_of(train_config) if train_config is not None else "masked"))
    if train_config is not None and kind_of(train_config) != kind:
        raise DataError(f"kind {kind!r} does not match the {type(train_config).__name__} given")
    world_config = world_config or WorldConfig()
    out_dir = Path(out_dir) if out_dir is not None else default_world_dir(seed, kind, world_config.multilingual)
    out_dir = out_dir.expanduser().absolute()
    train_config = train_config or _default_train_config(kind, seed, world_config.multilingual)

    def reusable() -> bool:
        if force or not is_world_dir(out_dir):
            return False
        meta = load_world_meta(out_dir)
        if meta.get("seed") != seed or meta.get("world_config") != world_config.to_dict() \
                or meta.get("train_config") != train_config.to_dict():
            log(f"note: {out_dir} was built with other settings; reusing it (rebuild with force/--force)")
        return True

    return _build(out_dir, seed, world_config, train_config, reusable, log)


def _build(out_dir: Path, seed: int, world_config: WorldConfig, train_config: TrainConfig | CausalTrainConfig,
           reusable: Callable[[], bool], log: Log) -> Path:
    """Build under the lock unless `reusable()` says the world there will do (checked again after waiting)."""
    if reusable():
        log(f"fact world already built: {out_dir}")
        return out_dir
    if out_dir.exists() and not (out_dir / WORLD_FILE).is_file():  # an old or broken world may go
        if not out_dir.is_dir() or any(out_dir.iterdir()):
            raise DataError(f"{out_dir} exists and is not a fact world; choose another output directory")

    with entry_lock(out_dir, log):
        if reusable():  # built by another process while we waited
            log(f"fact world already built: {out_dir}")
            return out_dir
        with staged(out_dir) as tmp:
            t0 = time.perf_counter()
            world = generate_world(world_config, seed)
            t_gen = time.perf_counter() - t0
            counts = _counts(world)
            log(
                f"generated a world of {counts['relations']} relations, {counts['facts']} facts, "
                f"{counts['prompts']} prompts, {counts['th_sentences'] + counts['h_sentences']} sentences (seed {seed})"
            )
            save_world_data(world, tmp)
            t1 = time.perf_counter()
            trainer = train_causal_world_model if kind_of(train_config) == "causal" else train_world_model
            metrics = trainer(world, tmp, train_config, log=log)
            t_train = time.perf_counter() - t1
            _write_meta(tmp, world, seed, world_config, train_config, metrics,
                        {"generate_s": round(t_gen, 2), "train_s": round(t_train, 2),
                         "total_s": round(time.perf_counter() - t0, 2)}, counts)
    log(f"fact world saved to {out_dir}")
    return out_dir


def _write_meta(path: Path, world: World, seed: int, wc: WorldConfig, tc: TrainConfig | CausalTrainConfig,
                metrics: dict,
                timings: dict, counts: dict) -> None:
    import tokenizers
    import torch
    import transformers

    from kneuron import __version__

    meta = {
        "format_version": FORMAT_VERSION,
        "kneuron_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "generator_revision": GENERATOR_REVISION,
        "model_kind": kind_of(tc),
        "world_config": wc.to_dict(),
        "train_config": tc.to_dict(),
        "relations": [r.id for r in world.relations],
        "counts": counts,
        "metrics": metrics,
        "timings": timings,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
    (path / WORLD_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _is_current_default(meta: dict, seed: int, kind: str = "masked", multilingual: bool = False) -> bool:
    """Built by this generator with today's default settings (defaults may change between releases)."""
    return (
        meta.get("seed") == seed
        and meta.get("model_kind", "masked") == kind
        and meta.get("generator_revision") == GENERATOR_REVISION
        and meta.get("world_config") == default_world_config(multilingual).to_dict()
        and meta.get("train_config") == _default_train_config(kind, seed, multilingual).to_dict()
    )


def ensure_world(seed: int = 0, log: Log | None = print, kind: str = "masked", multilingual: bool = False) -> Path:
    """The cached default world, trained on first use (about two minutes on a CPU), then reused.

    `kind="causal"` gives the same world with a Llama-shaped decoder instead of the BERT;
    `multilingual=True` the multilingual world (`multilingual_world_config`).
    """
    out_dir = default_world_dir(seed, kind, multilingual)

    def current() -> bool:
        return is_world_dir(out_dir) and _is_current_default(load_world_meta(out_dir), seed, kind, multilingual)

    if current():
        return out_dir
    log = log or (lambda _msg: None)
    what = "The cached fact world is out of date: retraining" if is_world_dir(out_dir) else \
        "No fact world cached yet: training"
    log(f"{what} it once (under 2 minutes on a CPU); it will be kept in {out_dir}")
    return _build(out_dir, seed, default_world_config(multilingual), _default_train_config(kind, seed, multilingual),
                  current, log)


# --------------------------------------------------------------------------------------------
# Reading


def _require_world(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not is_world_dir(path):
        raise DataError(f"{path} is not a built fact world (run `kneuron world build --out {path}`)")
    return path


def load_world_meta(path: str | Path) -> dict:
    """The contents of world.json (configs, seeds, metrics, timings, counts)."""
    path = _require_world(path)
    return json.loads((path / WORLD_FILE).read_text(encoding="utf-8"))


def load_world_relations(path: str | Path) -> list[WorldRelation]:
    """Relations with their templates and the index of the held-out template, in file order."""
    path = _require_world(path)
    out = []
    for line in (path / RELATIONS_FILE).read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(WorldRelation.from_dict(json.loads(line)))
    return out


def load_world_facts(path: str | Path) -> FactSet:
    """All facts of a built world (every template, the held-out one included), relations typed."""
    path = _require_world(path)
    facts = load_facts_jsonl(path / FACTS_FILE)
    relations: dict[str, Relation] = {r.id: r.relation for r in load_world_relations(path)}
    return FactSet(facts.facts, relations, str(path))


def load_world_bingrel(path: str | Path, relation: str) -> list[dict[str, list[str]]]:
    """BINGREL bags of one relation, aligned with its facts in `load_world_facts` order."""
    path = _require_world(path)
    file = bingrel_file(path, relation)
    if not file.is_file():
        raise DataError(f"{path}: no BINGREL file for relation {relation!r}")
    return json.loads(file.read_text(encoding="utf-8"))


__all__ = [
    "BUILTIN_MODELS",
    "MULTILINGUAL_MODELS",
    "default_world_config",
    "FORMAT_VERSION",
    "builtin_model_dir",
    "bingrel_file",
    "build_world",
    "default_world_dir",
    "ensure_world",
    "is_world_dir",
    "load_world_bingrel",
    "load_world_facts",
    "load_world_meta",
    "load_world_relations",
    "save_world_data",
]
