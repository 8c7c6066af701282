"""Seeds derived from (recipe seed, sample id, purpose) by a stable hash.

No stage touches global random state: every random choice about a sample takes a generator seeded
here, so a build gives the same rows whether it runs as 1 task or 64.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_seed(recipe_seed: int, sample_id: str, purpose: str) -> int:
    """A 63-bit seed from the first 8 bytes of sha256("{recipe_seed}/{sample_id}/{purpose}")."""
    digest = hashlib.sha256(f"{recipe_seed}/{sample_id}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng(recipe_seed: int, sample_id: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng(sample_seed(recipe_seed, sample_id, purpose))
