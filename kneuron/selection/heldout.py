"""Held-out prompts: a seeded part of each fact's prompts that chooses nothing and only measures.

A fact's neurons are chosen on its *selection* prompts; its *held-out* prompts are left aside so
that an effect measured on them (suppress / amplify) is not measured on the prompts that chose the
neurons.  A fact is split only when it has at least `k + MIN_SELECTION_PROMPTS` prompts (5 for the
default k = 2), so that the selection part keeps the refinement floor of 3 prompts; a fact with
fewer keeps all its prompts for selection and has no held-out prompt.

`kneuron compare` and `kneuron discover --holdout K` split with this one function, so the same
seed, fact index and prompt list give the same split in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneuron.errors import KneuronError

HELDOUT_PROMPTS = 2  # held-out prompts per fact, by default
MIN_SELECTION_PROMPTS = 3  # a fact is split only when this many selection prompts remain


def check_heldout(k: int, flag: str = "--heldout") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise KneuronError(f"{flag} must be an integer >= 0, got {k!r}")
    return k


def heldout_split(prompts: Sequence[int], k: int, seed: int) -> tuple[list[int], list[int]]:
    """(selection, held out): `k` of `prompts` drawn with `numpy.random.default_rng(seed)` when at least
    `k + MIN_SELECTION_PROMPTS` are given, else (all of them, []).  Both parts keep the given order."""
    prompts = list(prompts)
    if k <= 0 or len(prompts) < k + MIN_SELECTION_PROMPTS:
        return prompts, []
    held = {int(t) for t in np.random.default_rng(seed).choice(len(prompts), size=k, replace=False)}
    return ([p for t, p in enumerate(prompts) if t not in held], [p for t, p in enumerate(prompts) if t in held])
