import numpy as np
import pytest

from mfpo_data.backends.perturbers import (
    BlurPerturber,
    DiffusionNoisePerturber,
    GaussianNoisePerturber,
    OpenCVInpaintPerturber,
    linear_alpha_bar,
)
from mfpo_data.schema import Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage


def _sample(with_mask=True):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    s = Sample("s1", "test", "1", "caption", "q", "a", "b", image=image)
    if with_mask:
        s.mask = np.zeros((48, 64), bool)
        s.mask[10:30, 20:50] = True
    return s


def test_alpha_bar_matches_ddpm_linear_schedule():
    betas = np.linspace(1e-4, 0.02, 1000)
    assert linear_alpha_bar(500) == pytest.approx(np.cumprod(1 - betas)[500])
    assert 0.07 < linear_alpha_bar(500) < 0.085
    with pytest.raises(ValueError):
        linear_alpha_bar(1000)


@pytest.mark.parametrize("with_mask", [True, False])
def test_diffusion_noise_is_the_forward_process(with_mask):
    s = _sample(with_mask)
    edited, params = DiffusionNoisePerturber(t=500).perturb([s], [7])[0]
    ab = linear_alpha_bar(500)
    box = (slice(10, 30), slice(20, 50)) if with_mask else (slice(None), slice(None))  # noise is drawn for the mask's box
    eps = np.random.default_rng(7).standard_normal(s.image[box].shape, dtype=np.float32)
    x0 = s.image[box].astype(np.float32) / 127.5 - 1
    expected = np.rint((np.clip(np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, -1, 1) + 1) * 127.5)
    assert np.abs(edited[box].astype(np.int16) - expected).max() <= 1
    outside = np.ones(s.image.shape[:2], bool)
    outside[box] = False
    assert np.array_equal(edited[outside], s.image[outside])
    assert params["t"] == 500 and params["seed"] == 7


@pytest.mark.parametrize(
    "perturber", [DiffusionNoisePerturber(), GaussianNoisePerturber(), BlurPerturber(), OpenCVInpaintPerturber()],
    ids=lambda p: type(p).__name__,
)
def test_stage_keeps_outside_identical_and_changes_inside(perturber):
    s = _sample()
    stage = PerturbationStage(perturber, kind="x", seed=1)
    (out,) = list(stage.run([s]))
    assert out.rejected_image.shape == s.image.shape
    assert np.array_equal(out.rejected_image[~s.mask], s.image[~s.mask])
    changed = (out.rejected_image[s.mask] != s.image[s.mask]).any(axis=-1).mean()
    assert changed > 0.5
    assert out.perturbation_params["region"] == "key_object"


def test_no_mask_perturbs_the_whole_image_and_seed_decides_bytes():
    s1, s2 = _sample(with_mask=False), _sample(with_mask=False)
    (a,) = list(PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise", seed=1).run([s1]))
    (b,) = list(PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise", seed=1).run([s2]))
    assert a.perturbation_params["region"] == "whole_image"
    assert (a.rejected_image != a.image).any(axis=-1).mean() > 0.9
    assert np.array_equal(a.rejected_image, b.rejected_image)
    s3 = _sample(with_mask=False)
    (c,) = list(PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise", seed=2).run([s3]))
    assert not np.array_equal(a.rejected_image, c.rejected_image)
