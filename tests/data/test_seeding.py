"""`seeding.py` itself: a seed depends on the recipe seed, the sample id and the purpose, and on nothing else."""

import hashlib

import numpy as np

from mfpo_data.seeding import rng, sample_seed


def test_seed_is_the_documented_hash():
    digest = hashlib.sha256(b"7/train2017:42:caption:0/perturbation").digest()
    assert sample_seed(7, "train2017:42:caption:0", "perturbation") == int.from_bytes(digest[:8], "little") >> 1
    assert 0 <= sample_seed(0, "a", "b") < 2**63


def test_each_input_changes_the_seed():
    base = sample_seed(0, "s1", "perturbation")
    assert sample_seed(0, "s1", "perturbation") == base  # stable across calls
    assert sample_seed(0, "s2", "perturbation") != base  # the sample id
    assert sample_seed(1, "s1", "perturbation") != base  # the recipe seed
    assert sample_seed(0, "s1", "region") != base  # the purpose
    ids = [f"img:{i}" for i in range(1000)]
    assert len({sample_seed(0, i, "perturbation") for i in ids}) == len(ids)


def test_rng_draws_from_the_sample_seed():
    a, b = rng(0, "s1", "region"), rng(0, "s1", "region")
    assert np.array_equal(a.integers(0, 2**31, 8), b.integers(0, 2**31, 8))
    assert not np.array_equal(rng(0, "s1", "region").integers(0, 2**31, 8), rng(0, "s2", "region").integers(0, 2**31, 8))
    assert np.array_equal(rng(3, "x", "p").random(4), np.random.default_rng(sample_seed(3, "x", "p")).random(4))
