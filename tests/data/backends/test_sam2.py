"""SAM 2 through transformers' `Sam2Model`, with a tiny random config: preprocessing as its processor
documents, one mask per box at the image's size, and a batch that gives each image's own masks."""

import numpy as np
import pytest

from mfpo_data.backends.sam2 import IMAGENET_MEAN, IMAGENET_STD, Sam2Segmenter
from mfpo_data.schema import KeyObject, Sample


pytest.importorskip("transformers")


def _samples():
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate([(48, 64), (40, 40), (48, 64)]):
        s = Sample(f"s{i}", "t", str(i), "caption", "q", "a", "b", image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        s.key_objects = [KeyObject("dog", (4.0, 6.0, 30.0, 36.0), 0.9), KeyObject("dog", (20.0, 2.0, 39.0, 20.0), 0.8)][: 1 + i % 2]
        out.append(s)
    return out


def test_masks_per_box_at_image_size_and_batching_changes_nothing(tiny_sam2):
    seg = Sam2Segmenter(model_id=str(tiny_sam2), device="cpu")
    samples = _samples()
    batched = seg.segment(samples)
    alone = [seg.segment([s])[0] for s in samples]
    for sample, masks, single in zip(samples, batched, alone, strict=True):
        assert len(masks) == len(sample.key_objects)
        for m, one in zip(masks, single, strict=True):
            assert m.dtype == bool and m.shape == sample.image.shape[:2]
            assert np.array_equal(m, one)
    assert any(m.any() for ms in batched for m in ms) and not all(m.all() for ms in batched for m in ms)
    empty = Sample("e", "t", "e", "caption", "q", "a", "b", image=samples[0].image)
    assert seg.segment([empty]) == [[]]


def test_pixel_values_are_the_processors_resize_scale_and_normalise(tiny_sam2):
    from PIL import Image

    seg = Sam2Segmenter(model_id=str(tiny_sam2), device="cpu")
    sample = _samples()[0]
    x = seg.pixel_values([sample], 64)
    assert tuple(x.shape) == (1, 3, 64, 64)
    resized = np.asarray(Image.fromarray(sample.image).resize((64, 64), Image.BILINEAR), np.float32) / 255.0
    np.testing.assert_allclose(x[0, 1].numpy(), (resized[..., 1] - IMAGENET_MEAN[1]) / IMAGENET_STD[1], atol=1e-6)


def test_policies_choose_among_the_candidates(tiny_sam2):
    masks = {p: Sam2Segmenter(model_id=str(tiny_sam2), device="cpu", multimask_policy=p).segment(_samples()[:1])[0]
             for p in ("best_iou", "largest", "first")}
    assert masks["largest"][0].sum() >= masks["best_iou"][0].sum()  # both pick among the same three candidates
    assert all(m.shape == (48, 64) for ms in masks.values() for m in ms)
