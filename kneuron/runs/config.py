"""What a discovery run is made of: its settings, and the facts they select (with a fingerprint)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import kneuron
from kneuron.data.facts import FactSet
from kneuron.selection.specific import SPECIFIC_FRACTION
from kneuron.selection.specific import SPECIFIC_RULES as NARROWING_RULES

# Ways to narrow a refined set beyond the paper's rule (see `kneuron.selection.specific`), or none.
SPECIFIC_RULES = ("none", *NARROWING_RULES)


@dataclass
class DiscoveryConfig:
    model: str = "world"
    data: str = "world"
    relations: list[str] | None = None
    limit_facts: int | None = None  # first N facts per relation (quick looks); None = all
    steps: int = 20
    method: str = "riemann_left"
    precision: str = "fp32"
    threshold: float = 0.2
    baseline_threshold: float = 0.5
    p_start: float = 0.7
    p_step: float = 0.05
    max_tries: int = 6
    target: tuple[float, float] = (2.0, 5.0)
    min_prompts: int = 3
    seed: int = 0
    tf32: bool = False  # TF32 matmuls on CUDA (Ampere+); no effect on CPU
    specific: str = "none"  # "other_relations" | "effect": also write method "kn_specific" (a named deviation)
    specific_fraction: float = SPECIFIC_FRACTION  # rule "effect": collateral / own effect allowed per neuron
    specific_other_prompts: int = 10  # rule "effect": other relations' prompts per fact it is judged on
    holdout: int = 0  # prompts per fact held out of discovery (seeded; kneuron.selection.heldout); 0 = none
    facts_fingerprint: str = ""
    kneuron_version: str = field(default=kneuron.__version__)

    def to_json(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d

    @classmethod
    def from_json(cls, d: dict) -> DiscoveryConfig:
        d = dict(d)
        d["target"] = tuple(d.get("target", (2.0, 5.0)))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


# Keys that may differ on resume without changing the result.
RESUME_FREE = {"kneuron_version"}


def fingerprint(facts: FactSet) -> str:
    h = hashlib.sha256()
    for f in facts.facts:
        h.update(json.dumps([f.relation, f.subject, f.object, f.prompts]).encode())
    return h.hexdigest()[:16]


def select_facts(facts: FactSet, relations, limit: int | None) -> FactSet:
    facts = facts.subset(relations)
    if limit is None:
        return facts
    kept = [f for group in facts.by_relation().values() for f in group[:limit]]
    return FactSet(kept, facts.relations, facts.source)
