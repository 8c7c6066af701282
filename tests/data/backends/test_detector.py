"""The closed-vocabulary detector backend (any `AutoModelForObjectDetection`), with tiny random YOLOS and
RT-DETR models: labels mapped to COCO categories through the vocabulary, batching that changes nothing, and
the removal check it drives for every kind of negative."""

import json

import numpy as np
import pytest

from mfpo_data.backends.detector import DetectorGrounder
from mfpo_data.backends.perturbers import (
    BlurPerturber,
    BoxOcclusionPerturber,
    DiffusionNoisePerturber,
    GaussianNoisePerturber,
    OpenCVInpaintPerturber,
    RandomCropPerturber,
)
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.s5_perturbation import PerturbationStage
from mfpo_data.stages.s5_removal_check import score_in_region


pytest.importorskip("transformers")


def _samples(n=4, shape=(48, 64)):
    rng = np.random.default_rng(1)
    return [Sample(f"s{i}", "t", str(i), "caption", "q", "a dog", "b", image=rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
            for i in range(n)]


def test_labels_map_to_categories_through_the_vocabulary(tiny_detector):
    grounder = DetectorGrounder(model_id=str(tiny_detector), threshold=0.0, device="cpu")
    assert set(grounder._label_categories.values()) == {"person", "dog", "cat", "motorcycle", "apple", "orange", "bird"}
    (found,) = grounder.ground(_samples(1), [["puppy", "man", "motorbike", "cat", "kitten", "red shirt"]])
    assert found, "a threshold of 0 keeps every query"
    category = {"puppy": "dog", "man": "person", "motorbike": "motorcycle", "cat": "cat", "kitten": "cat"}
    for k in found:
        assert k.phrase in category and k.category == category[k.phrase]  # never the unmapped "red shirt"
        x0, y0, x1, y1 = k.box_xyxy
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 48 and 0 < k.score <= 1
    by_phrase = {p: [k for k in found if k.phrase == p] for p in category}
    assert [(k.box_xyxy, k.score) for k in by_phrase["cat"]] == [(k.box_xyxy, k.score) for k in by_phrase["kitten"]]
    scores = [k.score for k in by_phrase["cat"]]
    assert scores == sorted(scores, reverse=True)
    assert grounder.ground(_samples(1), [["red shirt"]]) == [[]]
    assert DetectorGrounder(model_id=str(tiny_detector), threshold=1.0, device="cpu").ground(_samples(1), [["cat"]]) == [[]]


@pytest.mark.parametrize("kind", ["yolos", "rtdetr"])
def test_a_batch_gives_the_boxes_of_one_image_at_a_time(tmp_path, kind):
    from mfpo_data.backends.tiny import make_tiny_detector

    path = make_tiny_detector(tmp_path / kind, kind=kind, labels=["dog", "cat", "person", "N/A"])
    grounder = DetectorGrounder(model_id=str(path), threshold=0.0, device="cpu")
    samples = _samples(3) + _samples(2, shape=(40, 40))  # two sizes: two forward passes
    phrases = [["dog", "cat", "person"]] * len(samples)
    batched = grounder.ground(samples, phrases)
    alone = [grounder.ground([s], [p])[0] for s, p in zip(samples, phrases, strict=True)]
    assert any(batched)
    for a, b in zip(batched, alone, strict=True):
        assert [(k.phrase, k.category) for k in a] == [(k.phrase, k.category) for k in b]
        np.testing.assert_allclose([k.box_xyxy for k in a], [k.box_xyxy for k in b], atol=1e-3)
        np.testing.assert_allclose([k.score for k in a], [k.score for k in b], atol=1e-5)


NEGATIVES = [
    ("diffusion_noise", DiffusionNoisePerturber(), {}), ("gaussian_noise", GaussianNoisePerturber(), {}),
    ("blur", BlurPerturber(), {}), ("box_occlusion", BoxOcclusionPerturber(), {}),
    ("opencv_inpaint", OpenCVInpaintPerturber(), {}), ("random_crop", RandomCropPerturber(), {}),
    ("diffusion_noise", DiffusionNoisePerturber(), {"region": "random"}),
    ("diffusion_noise", DiffusionNoisePerturber(), {"region": "global"}),
]  # fmt: skip


@pytest.mark.parametrize("kind,perturber,options", NEGATIVES, ids=lambda v: v if isinstance(v, str) else "")
def test_every_kind_of_negative_gets_the_key_objects_score_in_its_region_on_m_prime(tiny_detector, kind, perturber, options):
    from mfpo_data.stages.s5_removal_check import RemovalCheck

    grounder = DetectorGrounder(model_id=str(tiny_detector), threshold=0.05, device="cpu")
    samples = _samples(3)
    for s, found in zip(samples, grounder.ground(samples, [["cat"]] * 3), strict=True):  # grounding on m
        s.key_objects = found[:1] or [KeyObject("cat", (8.0, 8.0, 40.0, 40.0), 0.5, category="cat")]
        s.mask = np.zeros(s.image.shape[:2], bool)
        x0, y0, x1, y1 = (int(v) for v in s.key_objects[0].box_xyxy)
        s.mask[y0:y1, x0:x1] = True
    perturbed = list(PerturbationStage(perturber, kind=kind, seed=2, **options).run(samples))
    m_prime = [s.rejected_image.copy() for s in perturbed]
    checked = list(RemovalCheck(grounder).run(perturbed))
    for sample, image in zip(checked, m_prime, strict=True):
        view = Sample(sample.id, "t", "1", "caption", "q", "a", "b", image=image)
        (found,) = grounder.ground([view], [["cat"]])
        expected, _ = score_in_region(found, [k.box_xyxy for k in sample.key_objects])
        assert sample.removal_score == (pytest.approx(max(k.score for k in sample.key_objects)), pytest.approx(expected))


def test_a_build_with_the_detector_counts_removal_evidence_per_kind(tmp_path, tiny_detector):
    from mfpo_data.pipeline.build import build_dataset
    from tests.fixtures.builds import rows_by_id

    overrides = ["keywords.backend=vocabulary", "keywords.include_question=true",
                 f"grounding={{backend: detector, model_id: {tiny_detector}, revision: null, threshold: 0.05, device: cpu}}",
                 "segmentation={backend: box}", "scoring={backend: heuristic}", "perturbation.region=random",
                 "output.progress=false", "source.limit=5", f"output.dir={tmp_path / 'out'}"]  # fmt: skip
    from mfpo_data.config import load_recipe

    recipe = load_recipe("coco_grounded", overrides)
    layout = build_dataset(recipe)
    rows = rows_by_id(layout)
    stats = layout.read_stats()
    checked = {}
    still = {}
    for row in rows.values():
        params = json.loads(row["perturbation_params"])
        kind = f"{row['perturbation']}/{params['region']}"
        if row["removal_score"] is not None:
            checked[kind] = checked.get(kind, 0) + 1
            still[kind] = still.get(kind, 0) + (row["removal_score"]["after"] > 0)
        assert row["targets_key_object"] is False  # region: random
    assert checked and stats["removal_checked"] == checked and stats["removal_still_detected"] == still
    assert stats["untargeted_negatives"] == {"random": len(rows)} and stats["removal_unverified"] == {}
