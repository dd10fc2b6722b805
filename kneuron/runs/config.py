"""What a discovery run is made of: its settings, and the facts they select (with a fingerprint)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import kneuron
from kneuron.data.facts import FactSet
from kneuron.selection.coarse import BASELINE_THRESHOLD
from kneuron.selection.config import DEFAULT as SELECTION
from kneuron.selection.config import SelectionConfig, legacy_count_range
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
    rule: str = "riemann_left"  # IG's integration rule (kneuron.attribution.paths); "method" in older runs
    precision: str = "fp32"
    # The selection block (`SelectionConfig`), flat so that the run's config.json stays flat (old ones load).
    threshold: float = SELECTION.threshold
    baseline_threshold: float = BASELINE_THRESHOLD
    p_start: float = SELECTION.p_start
    p_step: float = SELECTION.p_step
    max_tries: int = SELECTION.max_tries
    count_range: tuple[float, float] = SELECTION.count_range  # neurons per fact that stop p's adaptation
    min_prompts: int = SELECTION.min_prompts
    seed: int = 0
    tf32: bool = False  # TF32 matmuls on CUDA (Ampere+); no effect on CPU
    specific: str = "none"  # "other_relations" | "effect": also write method "kn_specific" (a named deviation)
    specific_fraction: float = SPECIFIC_FRACTION  # rule "effect": collateral / own effect allowed per neuron
    specific_other_prompts: int = 10  # rule "effect": other relations' prompts per fact it is judged on
    holdout: int = 0  # prompts per fact held out of discovery (seeded; kneuron.selection.heldout); 0 = none
    facts_fingerprint: str = ""
    kneuron_version: str = field(default=kneuron.__version__)

    @property
    def selection(self) -> SelectionConfig:
        return SelectionConfig.of(self)

    def to_json(self) -> dict:
        d = asdict(self)
        d["count_range"] = list(self.count_range)
        return d

    @classmethod
    def from_json(cls, d: dict) -> DiscoveryConfig:
        d = legacy_count_range(d)  # runs written before the rename keep the range under "target"
        if "rule" not in d and "method" in d:  # runs written before the rename: the integration rule
            d["rule"] = d.pop("method")
        d["count_range"] = tuple(d.get("count_range", SELECTION.count_range))
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
