"""Seeds derived from a run's one recorded seed, so every random choice is reproducible."""

from __future__ import annotations

import hashlib


def derived_seed(*parts) -> int:
    """A 63-bit seed from any parts (stable across runs and machines, unlike hash())."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
