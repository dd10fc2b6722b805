"""How much of a fact set a model can be probed on.

Attribution scores one vocabulary entry at [MASK], so a fact whose object spans several tokens
(or maps to [UNK]) in a given tokenizer cannot be used with that model.  The paper's facts were
chosen for bert-base-cased; other tokenizers lose some of them.
"""

from __future__ import annotations

from kneuron.data.facts import FactSet
from kneuron.models.tokens import is_single_token


def single_token_coverage(factset: FactSet, tokenizer) -> dict:
    """Counts of facts (and their prompts) whose object is one token for `tokenizer`.

    Returns `{"relations": {rel: counts}, "total": counts}` where counts has the keys
    `facts`, `single_token_facts`, `prompts`, `single_token_prompts`.
    """
    verdict: dict[str, bool] = {}  # objects repeat a lot (countries, languages): tokenize each once
    per_rel: dict[str, dict[str, int]] = {}
    for fact in factset.facts:
        ok = verdict.get(fact.object)
        if ok is None:
            ok = verdict[fact.object] = is_single_token(tokenizer, fact.object)
        c = per_rel.setdefault(
            fact.relation, {"facts": 0, "single_token_facts": 0, "prompts": 0, "single_token_prompts": 0}
        )
        c["facts"] += 1
        c["prompts"] += len(fact.prompts)
        if ok:
            c["single_token_facts"] += 1
            c["single_token_prompts"] += len(fact.prompts)
    total = {
        k: sum(c[k] for c in per_rel.values())
        for k in ("facts", "single_token_facts", "prompts", "single_token_prompts")
    }
    return {"relations": per_rel, "total": total}
