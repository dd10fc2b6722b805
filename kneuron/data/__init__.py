"""Facts and the datasets they come from.

`load_facts(spec)` is the one entry point the CLI and the pipeline use, so that "world", a
PARAREL folder and a user's JSONL file are interchangeable everywhere a fact set is expected.
"""

from __future__ import annotations

from pathlib import Path

from kneuron.data.bingrel import SentenceBag, check_alignment, load_bingrel
from kneuron.data.coverage import single_token_coverage
from kneuron.data.facts import MASK, Fact, FactSet, Relation
from kneuron.data.jsonl import load_facts_jsonl, save_facts_jsonl
from kneuron.data.pararel import is_pararel_dir, kn_bags, load_pararel, relation_tag
from kneuron.errors import DataError

__all__ = [
    "MASK",
    "REAL_FACTS",
    "Fact",
    "FactSet",
    "Relation",
    "SentenceBag",
    "check_alignment",
    "kn_bags",
    "load_bingrel",
    "load_facts",
    "load_facts_jsonl",
    "load_pararel",
    "relation_tag",
    "save_facts_jsonl",
    "single_token_coverage",
]

REAL_FACTS = Path(__file__).with_name("real_facts.jsonl")

# The built-in worlds' names (`kneuron.world.BUILTIN_MODELS`), spelled here so that reading other
# data never imports the world package.
WORLD_SPECS = ("world", "world-causal", "world-multilingual", "world-multilingual-causal")

SPECS_HELP = (
    "'world', 'real' (21 real facts shipped with kneuron), 'real-multilingual' (30 capitals in en/fr/es/de), 'pararel' (the shared or downloaded copy), 'pararel:DIR', "
    "a PARAREL directory (containing raw/patterns), a fact-world directory (`kneuron world build --out DIR`) "
    "or a .jsonl facts file"
)


def load_facts(spec: str | Path, relations: list[str] | None = None) -> FactSet:
    """The fact set named by `spec`: one of `SPECS_HELP`; `relations` keeps only those relations."""
    text = str(spec)
    if text in WORLD_SPECS:  # a built-in world's facts (the same whichever model it was built with)
        from kneuron.world import ensure_world, load_world_facts  # imported only when asked for

        variant = {} if text == "world" else {"kind": "causal" if text.endswith("-causal") else "masked",
                                              "multilingual": text.startswith("world-multilingual")}
        facts = load_world_facts(ensure_world(**variant))
    elif text == "real":
        facts = load_facts_jsonl(REAL_FACTS)
    elif text == "real-multilingual":
        from kneuron.data.multilingual import REAL_FACTS as MULTILINGUAL_FACTS

        facts = load_facts_jsonl(MULTILINGUAL_FACTS)
    elif text == "pararel":
        return load_pararel(None, relations=relations)
    elif text.startswith("pararel:"):
        return load_pararel(text[len("pararel:") :], relations=relations)
    else:
        path = Path(text).expanduser()
        if path.is_dir() and is_pararel_dir(path):
            return load_pararel(path, relations=relations)
        if path.is_dir() and (path / "world.json").is_file():
            from kneuron.world import is_world_dir, load_world_facts

            if not is_world_dir(path):
                raise DataError(f"{path}: an incomplete or older fact world; rebuild it with `kneuron world build`")
            return load_world_facts(path).subset(relations)
        if path.suffix == ".jsonl":
            facts = load_facts_jsonl(path)
        elif not path.exists():
            raise DataError(f"no such file or directory: {text!r}; expected {SPECS_HELP}")
        else:
            raise DataError(f"cannot load facts from {text!r}; expected {SPECS_HELP}")
    return facts.subset(relations)
