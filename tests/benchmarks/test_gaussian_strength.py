"""`gaussian_noise`'s default strength: the measurement behind it, and the numbers DATASHEET.md gives for it."""

from __future__ import annotations

import re

import pytest

from benchmarks.gaussian_strength import BLURS, LIMIT, appearance_table, key_regions
from mfpo_data.backends.perturbers import DiffusionNoisePerturber, GaussianNoisePerturber
from tests.paths import REPO


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    regions, _ = key_regions(LIMIT, tmp_path_factory.mktemp("gaussian-strength") / "build")
    perturbers = {"diffusion": DiffusionNoisePerturber(t=500), "default": GaussianNoisePerturber(),
                  "weak": GaussianNoisePerturber(sigma=50), "grid step below": GaussianNoisePerturber(sigma=320)}
    return len(regions), {name: appearance_table(regions, p) for name, p in perturbers.items()}


def test_the_default_sigma_hides_the_object_as_the_papers_negative_does(tables):
    _, t = tables
    assert GaussianNoisePerturber().sigma == 400.0
    for blur in BLURS:
        assert abs(t["default"]["mean"][blur] - t["diffusion"]["mean"][blur]) <= 0.011, blur
        assert t["weak"]["mean"][blur] > t["diffusion"]["mean"][blur] + 0.15, blur  # sigma 50 leaves the object
    assert t["grid step below"]["mean"][2.0] > t["diffusion"]["mean"][2.0] + 0.05  # the benchmark's next sigma down


def test_the_datasheet_gives_the_measured_numbers(tables):
    n, t = tables
    text = " ".join((REPO / "DATASHEET.md").read_text().split())
    fmt = lambda name: ", ".join(f"{t[name]['mean'][b]:.2f}" for b in BLURS[:-1]) + f" and {t[name]['mean'][BLURS[-1]]:.2f}"  # noqa: E731
    assert f"bundled sample's {n} distinct key masks" in text
    assert f"{fmt('default')} at sigma 400 against {fmt('diffusion')} for the diffusion noise at t=500" in text
    assert f"about {t['default']['clipped']:.0%} of the region's pixels end up clipped to 0 or 255 ({t['diffusion']['clipped']:.0%} for" in text
    assert re.search(rf"At sigma 50 it is {re.escape(fmt('weak'))}:", text)
