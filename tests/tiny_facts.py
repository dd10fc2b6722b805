"""A small fact file and tiny model for discovery-run tests: 10 facts, one with a multi-token answer."""

from __future__ import annotations

from pathlib import Path

from tiny_models import save_tiny_bert

from kneuron.data import save_facts_jsonl
from kneuron.data.facts import Fact, FactSet, Relation

TEMPLATES = ["The capital of [X] is [MASK].", "[X] is the capital of [MASK] .", "the city [X] is in [MASK]",
             "[X] lives in [MASK] .", "[MASK] is the country of [X] ."]
PAIRS = {"capital": [("Ireland", "Dublin"), ("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin")],
         "located": [("Dublin", "Ireland"), ("Paris", "France"), ("Rome", "Italy"), ("Berlin", "Germany"),
                     ("Edmonton", "Alberta")]}


def build_discovery_setup(root: Path) -> tuple[Path, Path, Path]:
    """(root, model directory, facts.jsonl); "Paris Texas" is not a single token, so it is skipped."""
    model_dir = save_tiny_bert(root / "model", layers=2, hidden=32, intermediate=48)
    facts = [Fact(rel, s, o, [t.replace("[X]", s) for t in TEMPLATES]) for rel, pairs in PAIRS.items()
             for s, o in pairs]
    facts.append(Fact("located", "Paris", "Paris Texas", [t.replace("[X]", "Paris") for t in TEMPLATES]))
    fs = FactSet(facts, {"capital": Relation("capital", "capital", "1-1"), "located": Relation("located")})
    return root, model_dir, save_facts_jsonl(fs, root / "facts.jsonl")

N_FACTS = sum(len(p) for p in PAIRS.values()) + 1
