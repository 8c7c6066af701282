"""`perturbation.region_shape`: which pixels a key-region perturber may change. Outside the shaped region
every pixel is bit-identical to m; inside it the perturber's edit is kept."""

import numpy as np
import pytest

from mfpo_data.backends.perturbers import (
    BlurPerturber,
    BoxOcclusionPerturber,
    DiffusionNoisePerturber,
    GaussianNoisePerturber,
    OpenCVInpaintPerturber,
)
from mfpo_data.errors import ConfigError
from mfpo_data.imaging import dilate_mask
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage
from tests.data.test_negatives import _recipe


H, W = 48, 64


def _disc_sample():
    rng = np.random.default_rng(0)
    s = Sample("s1", "test", "1", "caption", "q", "a dog", "b", image=rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    yy, xx = np.mgrid[:H, :W]
    s.mask = (yy - 24) ** 2 + (xx - 30) ** 2 <= 100  # a disc of radius 10: bbox rows 14..34, cols 20..40
    s.key_objects = [KeyObject("dog", (18.0, 12.0, 44.0, 38.0), 0.9, category="dog")]  # the grounder's box, looser
    return s


def _expected_region(shape):
    s = _disc_sample()
    if shape == "mask":
        return s.mask
    if shape == "dilated":
        return dilate_mask(s.mask, 3)
    region = s.mask.copy()
    region[12:38, 18:44] = True
    return region


PERTURBERS = [DiffusionNoisePerturber(), GaussianNoisePerturber(), BlurPerturber(sigma=4), OpenCVInpaintPerturber(dilate=0),
              BoxOcclusionPerturber(fill="noise")]


@pytest.mark.parametrize("shape", ["mask", "dilated", "box"])
@pytest.mark.parametrize("perturber", PERTURBERS, ids=lambda p: p.backend)
def test_outside_the_shaped_region_is_bit_identical_and_inside_is_edited(perturber, shape):
    stage = PerturbationStage(perturber, kind=perturber.backend, seed=3, region_shape=shape, region_dilation=3)
    (out,) = stage.run([_disc_sample()])
    region = _expected_region(shape)
    if perturber.backend == "box_occlusion":  # it occludes the bounding box of each part of the shaped region
        rows, cols = np.nonzero(region)
        region = np.zeros_like(region)
        region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
    assert np.array_equal(out.mask, region)
    assert np.array_equal(out.rejected_image[~region], out.image[~region])
    changed = (out.rejected_image != out.image).any(axis=-1)
    assert changed[region].mean() > 0.5
    ring = region & ~_disc_sample().mask  # pixels the paper's mask would have left alone
    if shape != "mask":
        assert ring.sum() > 0 and changed[ring].mean() > 0.5
    params = out.perturbation_params
    assert params["region"] == "key_object"
    if shape == "mask":
        assert "region_shape" not in params and "region_dilation" not in params  # rows as before the option existed
    else:
        assert params["region_shape"] == shape and params.get("region_dilation") == (3 if shape == "dilated" else None)


def test_mask_shape_leaves_the_box_corners_alone():
    (out,) = PerturbationStage(DiffusionNoisePerturber(), kind="diffusion_noise").run([_disc_sample()])
    corner = (slice(14, 17), slice(20, 23))  # inside the disc's bounding box, outside the disc
    assert np.array_equal(out.rejected_image[corner], out.image[corner])


def test_region_shape_is_refused_where_there_is_no_key_region():
    with pytest.raises(ConfigError, match="region_shape: box' shapes the key region"):
        _recipe(["perturbation.region=random", "perturbation.region_shape=box"])
    with pytest.raises(ConfigError, match="replaces the whole image"):
        _recipe(["perturbation.backend=random_crop", "perturbation.region_shape=dilated"])
    with pytest.raises(ConfigError, match="region_dilation"):
        _recipe(["perturbation.region_dilation=-1"])
    assert _recipe(["perturbation.region_shape=dilated", "perturbation.region_dilation=12"]).perturbation.region_dilation == 12
