"""Removal that removes: the grown mask is the stored key region, pixels outside it are identical, and a
detector that still finds the object on m' gets the pair dropped with a reason."""

import numpy as np
import pytest

from mfpo_data.backends.perturbers import OpenCVInpaintPerturber
from mfpo_data.errors import ConfigError
from mfpo_data.imaging import dilate_mask
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s5_removal_check import RemovalCheck
from tests.data.test_negatives import _recipe


def _sample(sample_id="s1"):
    image = np.full((60, 80, 3), 200, np.uint8)
    image[20:40, 30:50] = (20, 40, 160)  # the object
    s = Sample(sample_id, "test", "1", "caption", "q", "a dog", "a cat", image=image)
    s.mask = np.zeros((60, 80), bool)
    s.mask[20:40, 30:50] = True
    s.key_objects = [KeyObject("dog", (30.0, 20.0, 50.0, 40.0), 0.9, category="dog")]
    return s


class _Detector:
    """Finds every phrase at `score` wherever it looks; records the images it was shown."""

    detects = True

    def __init__(self, score):
        self.score, self.seen = score, []

    def ground(self, samples, phrases):
        self.seen += [s.image for s in samples]
        return [[KeyObject(p, (30.0, 20.0, 50.0, 40.0), self.score) for p in ps] if self.score else [] for ps in phrases]


def test_opencv_removal_stores_the_grown_mask_and_keeps_the_outside():
    (out,) = PerturbationStage(OpenCVInpaintPerturber(dilate=4), kind="opencv_inpaint").run([_sample()])
    assert np.array_equal(out.mask, dilate_mask(_sample().mask, 4))
    assert out.mask.sum() == 28 * 28
    assert np.array_equal(out.rejected_image[~out.mask], out.image[~out.mask])
    assert np.abs(out.rejected_image[25:35, 35:45].astype(int) - 200).max() < 30  # filled from the background


@pytest.mark.parametrize("still_found,dropped", [(0.8, True), (0.2, False), (0.0, False)])
def test_a_removed_object_still_detected_drops_the_pair(still_found, dropped):
    (perturbed,) = PerturbationStage(OpenCVInpaintPerturber(), kind="opencv_inpaint").run([_sample()])
    m_prime = perturbed.rejected_image
    detector = _Detector(still_found)
    (out,) = RemovalCheck(detector, max_removal_score=0.5).run([perturbed])
    assert np.array_equal(detector.seen[0], m_prime)  # it looked at m', not m
    if dropped:
        assert out.dropped[0] == "removal_check" and out.dropped[1].startswith("object_still_present: 'dog'")
        assert "0.800 > max_removal_score 0.5" in out.dropped[1]
    else:
        assert out.dropped is None and out.removal_score == (pytest.approx(0.9), pytest.approx(still_found))


def test_without_a_threshold_the_scores_are_stored_and_nothing_is_dropped():
    (perturbed,) = PerturbationStage(OpenCVInpaintPerturber(), kind="opencv_inpaint").run([_sample()])
    (out,) = RemovalCheck(_Detector(0.95)).run([perturbed])
    assert out.dropped is None and out.removal_score == (pytest.approx(0.9), pytest.approx(0.95))


def test_max_removal_score_needs_a_removal_and_a_detector():
    with pytest.raises(ConfigError, match="max_removal_score"):
        _recipe(["perturbation.backend=opencv_inpaint", "filters.max_removal_score=0.3"])  # coco_gt grounder
    with pytest.raises(ConfigError, match="max_removal_score"):
        _recipe(["grounding.backend=grounding_dino", "filters.max_removal_score=0.3"])  # noise does not remove
    recipe = _recipe(["grounding.backend=grounding_dino", "perturbation.backend=opencv_inpaint",
                      "filters.max_removal_score=0.3"])
    from mfpo_data.pipeline.assemble import build_pipeline

    stages = build_pipeline(recipe, source=object())
    check = next(s for s in stages if isinstance(s, RemovalCheck))
    assert check.max_removal_score == 0.3
    assert not any(isinstance(s, RemovalCheck) for s in build_pipeline(_recipe([]), source=object()))
