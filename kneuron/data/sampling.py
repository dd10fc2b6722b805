"""A seeded, model-aware sample of a fact set, for running the paper on a real model.

A full PARAREL run is out of reach on a CPU for a decoder (about 200,000 prompts); a sample keeps
every relation, draws the same number of facts from each, and keeps only what the model can be
scored on: objects that are one token for its tokenizer and, for a causal LM, the prompts that end
at the blank.  The result is an ordinary `FactSet`, saved as the users' JSONL format with the
sampling settings as `#` comment lines, so that a run over it is reproducible from the file alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from kneuron.data.facts import Fact, FactSet, ends_at_blank
from kneuron.errors import DataError


@dataclass(frozen=True)
class SampleReport:
    """What the sample kept and why it dropped the rest, per relation."""

    relation: str
    facts: int  # in the source
    eligible: int  # single-token object and at least `min_prompts` usable prompts
    sampled: int
    prompts_per_fact: int  # usable prompts of the relation's first eligible fact (templates are shared)


def sample_facts(facts: FactSet, per_relation: int, seed: int, tokenizer=None, causal: bool = False,
                 min_prompts: int = 1) -> tuple[FactSet, list[SampleReport]]:
    """Up to `per_relation` facts of every relation, drawn with `random.Random(seed)`.

    A fact is eligible when its object is one token for `tokenizer` (when given) and it keeps at
    least `min_prompts` prompts; with `causal`, only prompts ending at the blank are kept.  The
    sampled facts keep their order in the source.
    """
    if per_relation < 1:
        raise DataError(f"facts per relation must be >= 1, got {per_relation}")
    if min_prompts < 1:
        raise DataError(f"min_prompts must be >= 1, got {min_prompts}")
    single = _single_token_check(tokenizer)
    kept: list[Fact] = []
    reports = []
    for rel, group in facts.by_relation().items():
        eligible = []
        for fact in group:
            prompts = [p for p in fact.prompts if ends_at_blank(p)] if causal else list(fact.prompts)
            if len(prompts) >= min_prompts and single(fact.object):
                eligible.append(Fact(fact.relation, fact.subject, fact.object, prompts))
        rng = random.Random(f"{seed}:{rel}")  # one stream per relation: adding a relation changes no other
        chosen = sorted(rng.sample(range(len(eligible)), min(per_relation, len(eligible))))
        kept += [eligible[i] for i in chosen]
        reports.append(SampleReport(rel, len(group), len(eligible), len(chosen),
                                    len(eligible[0].prompts) if eligible else 0))
    sample = FactSet(kept, {r: facts.relations[r] for r in facts.by_relation() if r in facts.relations},
                     facts.source)
    return sample, reports


def _single_token_check(tokenizer) -> Callable[[str], bool]:
    if tokenizer is None:
        return lambda _: True
    from kneuron.models.tokens import is_single_token

    verdict: dict[str, bool] = {}

    def check(answer: str) -> bool:
        if answer not in verdict:
            verdict[answer] = is_single_token(tokenizer, answer)
        return verdict[answer]

    return check
