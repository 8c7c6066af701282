"""Removal that removes: the grown mask is the stored key region, pixels outside it are identical, and a
detector that still finds the object in its region on m' gets the pair dropped with a reason, whatever
the kind of negative."""

import numpy as np
import pytest

from mfpo_data.backends.perturbers import BlurPerturber, DiffusionNoisePerturber, OpenCVInpaintPerturber
from mfpo_data.errors import ConfigError
from mfpo_data.imaging import dilate_mask
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s5_removal_check import RemovalCheck, inside_share
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

    def __init__(self, score, box=(30.0, 20.0, 50.0, 40.0)):
        self.score, self.box, self.seen = score, box, []

    def ground(self, samples, phrases):
        self.seen += [s.image for s in samples]
        return [[KeyObject(p, self.box, self.score) for p in ps] if self.score else [] for ps in phrases]


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


def test_max_removal_score_needs_a_detector_and_the_check_runs_for_every_perturbation():
    with pytest.raises(ConfigError, match="max_removal_score' needs a grounding backend that detects"):
        _recipe(["perturbation.backend=opencv_inpaint", "filters.max_removal_score=0.3"])  # coco_gt grounder
    from mfpo_data.pipeline.assemble import build_pipeline

    for perturbation in ("diffusion_noise", "opencv_inpaint", "random_crop"):
        recipe = _recipe(["grounding.backend=grounding_dino", f"perturbation.backend={perturbation}",
                          "filters.max_removal_score=0.3"])
        check = next(s for s in build_pipeline(recipe, source=object()) if isinstance(s, RemovalCheck))
        assert check.max_removal_score == 0.3
    assert not any(isinstance(s, RemovalCheck) for s in build_pipeline(_recipe([]), source=object()))  # ground truth


@pytest.mark.parametrize("perturber", [DiffusionNoisePerturber(), BlurPerturber()], ids=lambda p: p.backend)
def test_noise_and_blur_are_checked_too(perturber):
    (perturbed,) = PerturbationStage(perturber, kind=perturber.backend).run([_sample()])
    (out,) = RemovalCheck(_Detector(0.7), max_removal_score=0.5).run([perturbed])
    assert out.dropped[0] == "removal_check" and "found in its region" in out.dropped[1]


@pytest.mark.parametrize("box,counted", [((30.0, 20.0, 50.0, 40.0), True), ((32.0, 22.0, 45.0, 38.0), True),
                                         ((0.0, 0.0, 20.0, 15.0), False), ((0.0, 0.0, 80.0, 60.0), False),
                                         ((40.0, 20.0, 60.0, 40.0), True), ((41.0, 20.0, 61.0, 40.0), False)])
def test_only_a_detection_inside_the_key_region_counts(box, counted):
    """Another instance elsewhere, or a box around the whole scene, does not keep the removed object present;
    a box at least half inside the key object's box does (the boundary: exactly half inside counts)."""
    (perturbed,) = PerturbationStage(OpenCVInpaintPerturber(), kind="opencv_inpaint").run([_sample()])
    (out,) = RemovalCheck(_Detector(0.8, box)).run([perturbed])
    assert out.removal_score == (pytest.approx(0.9), pytest.approx(0.8 if counted else 0.0))


def test_inside_share_is_the_covered_area_of_the_union():
    assert inside_share((0, 0, 10, 10), [(0, 0, 5, 10)]) == pytest.approx(0.5)
    assert inside_share((0, 0, 10, 10), [(0, 0, 5, 10), (3, 0, 10, 5)]) == pytest.approx(0.75)  # overlap counted once
    assert inside_share((0, 0, 10, 10), [(-5, -5, 20, 20)]) == pytest.approx(1.0)
    assert inside_share((0, 0, 10, 10), []) == 0.0 and inside_share((0, 0, 0, 10), [(0, 0, 5, 5)]) == 0.0


def test_the_card_reports_removal_evidence_per_kind_and_says_when_it_is_not_verified():
    from mfpo_data.publishing.card import _evidence

    text = _evidence({"removal_checked": {"diffusion_noise/key_object": 19, "gaussian_noise/key_object": 4},
                      "removal_still_detected": {"diffusion_noise/key_object": 1, "gaussian_noise/key_object": 3},
                      "untargeted_negatives": {"random": 10}, "negated_key_objects": {"replaced": 2, "no_asserted_object": 1}})
    assert "| `diffusion_noise/key_object` | 19 | 1 | 5.3% |" in text and "| `gaussian_noise/key_object` | 4 | 3 | 75.0% |" in text
    assert "10 rows have `targets_key_object: false` (10 `random`)" in text
    assert "3 chosen answers negate their first key object" in text and "2 got another key object" in text
    assert "not verified" not in text
    gt = _evidence({"removal_unverified": {"diffusion_noise/key_object": 7}})
    assert gt == ("### Negatives\n\nRemoval not verified for 7 rows: their key regions come from ground-truth annotations "
                  "and the recipe has no detecting grounder, so `removal_score` is null.")
    assert _evidence({}) == ""
