"""The answer split that keeps a specific rule's judges apart from the collateral measurement.

A specific rule (`kneuron.selection.specific`) judges a fact's neurons on other relations' facts,
and the collateral damage of the sets it keeps is measured on other relations' facts too.  Were
the two to share a fact, or only a gold answer, the rule would have chosen the neurons on part of
the test.  So per fact the candidates are split by case-folded gold answer into two seeded halves:
one measures, the other alone may judge.  `kneuron compare` (`collateral_samples`) and `kneuron
discover --specific effect` both call `answer_split`, so a discovery run's halves are those compare
draws for the same fact, candidates and seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneuron.seeds import derived_seed


def answer_key(answer) -> str:
    """A gold answer as the split compares it: stripped and case-folded."""
    return str(answer).strip().casefold()


def answer_split(i: int, candidates: Sequence[int], answers: Sequence[str], seed: int
                 ) -> tuple[list[int], list[int]]:
    """(measuring facts, judging facts) of fact i: `candidates` (facts of other relations, in the
    caller's order; `answers[n]` is the gold answer of `candidates[n]`) split by `answer_key` into
    two halves, seeded by `derived_seed(seed, "collateral", i)`; the measuring half takes the larger
    (ceil of half the distinct answers).  No answer is in both halves; both keep the caller's order."""
    if len(candidates) != len(answers):
        raise ValueError("one answer per candidate fact is needed")
    keys = [answer_key(a) for a in answers]
    distinct = sorted(set(keys))
    order = np.random.default_rng(derived_seed(seed, "collateral", int(i))).permutation(len(distinct))
    measuring = {distinct[int(t)] for t in order[: (len(distinct) + 1) // 2]}
    return ([j for j, k in zip(candidates, keys) if k in measuring],
            [j for j, k in zip(candidates, keys) if k not in measuring])


__all__ = ["answer_key", "answer_split"]
