"""Grounding DINO, SAM, GrabCut, SD inpainting and entropy backends on tiny random models loaded from folders."""

import subprocess
import sys

import numpy as np
import pytest

from mfpo_data.backends.grounding_dino import grounding_dino_detections, nms
from mfpo_data.errors import MissingExtraError
from mfpo_data.imaging import box_iou, dilate_mask, feather_alpha, resize_boxes
from mfpo_data.schema import KeyObject, Sample


pytest.importorskip("torch")
pytest.importorskip("transformers")


def _sample(i: int, shape=(96, 128), **kw) -> Sample:
    rng = np.random.default_rng(i)
    return Sample(f"s{i}", "test", str(i), "external", "what is on the table?", "a cat next to a cup.", "a dog.",
                  image=rng.integers(0, 255, (*shape, 3), dtype=np.uint8), **kw)


# -- imaging helpers -----------------------------------------------------------------------------------
def test_box_helpers():
    assert np.allclose(resize_boxes([(10, 20, 30, 40)], (100, 200), (50, 400)), [[20, 10, 60, 20]])
    assert box_iou([(0, 0, 10, 10)], [(5, 0, 15, 10), (20, 20, 30, 30)]).round(4).tolist() == [[0.3333, 0.0]]
    assert nms([(0, 0, 10, 10), (1, 0, 11, 10), (20, 20, 30, 30)], [0.5, 0.9, 0.1], 0.5) == [1, 2]


def test_grounding_dino_detections_absent_phrase_gets_no_box():
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.9, 0.9], [0.5, 0.5, 0.0001, 0.5]])
    probs = np.zeros((3, 8))
    probs[0, 1] = 0.9  # query 0 -> phrase 0 ("cat" at token 1)
    probs[1, 4] = 0.2  # query 1: the largest box, weakly on phrase 1 -> below threshold, dropped
    probs[2, 1] = 0.95  # query 2: a degenerate (sub-pixel wide) box -> dropped
    dets = grounding_dino_detections(boxes, probs, [[1], [3, 4]], width=100, height=50, box_threshold=0.3, text_threshold=0.25)
    assert [(k, score) for k, _, score in dets] == [(0, 0.9)]
    assert dets[0][1] == pytest.approx((40.0, 20.0, 60.0, 30.0))
    assert grounding_dino_detections(boxes, probs, [[], []], 100, 50, 0.0, 0.0) == []
    probs[0, 1] = np.nan  # an overflow in half precision: no detection, never a kept NaN score
    assert [k for k, _, _ in grounding_dino_detections(boxes, probs, [[1], [3, 4]], 100, 50, 0.3, 0.25)] == []


def test_feather_alpha_stays_inside_the_mask():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    a = feather_alpha(mask, 3)
    assert (a[~mask] == 0).all() and a[10, 10] == 1.0 and 0 < a[5, 10] < a[7, 10] <= 1.0
    edge = np.zeros((10, 10), bool)
    edge[:, :5] = True  # the image border is not an edge of the region
    assert feather_alpha(edge, 2)[5, 0] == 1.0


# -- Grounding DINO ------------------------------------------------------------------------------------
def _gdino(path, **kw):
    from mfpo_data.backends.grounding_dino import GroundingDinoGrounder

    return GroundingDinoGrounder(model_id=str(path), device="cpu", **{"box_threshold": 0.05, "text_threshold": 0.05, **kw})


def test_grounding_contract_and_labels_are_the_input_phrases(tiny_gdino):
    samples = [_sample(0), _sample(1)]
    phrases = [["Cat", "red mug"], ["a Dog."]]
    out = _gdino(tiny_gdino).ground(samples, phrases)
    assert len(out) == 2 and all(out)
    for sample, objects, asked in zip(samples, out, phrases, strict=True):
        for o in objects:
            assert o.phrase in asked and 0.05 < o.score <= 1.0
            x0, y0, x1, y1 = o.box_xyxy
            assert 0 <= x0 < x1 <= sample.width and 0 <= y0 < y1 <= sample.height
    assert _gdino(tiny_gdino).ground([_sample(2)], [[]]) == [[]]  # no keyword, no forward


def test_grounding_batched_equals_one_at_a_time(tiny_gdino):
    samples = [_sample(0), _sample(1), _sample(2, shape=(80, 100)), _sample(3)]
    phrases = [["cat", "cup"], ["dog"], ["person", "car"], ["cat"]]
    g = _gdino(tiny_gdino)
    batched = g.ground(samples, phrases)
    single = [g.ground([s], [p])[0] for s, p in zip(samples, phrases, strict=True)]
    for a, b in zip(batched, single, strict=True):
        assert [o.phrase for o in a] == [o.phrase for o in b]
        assert np.allclose([o.box_xyxy for o in a], [o.box_xyxy for o in b], atol=1e-3)
        assert np.allclose([o.score for o in a], [o.score for o in b], atol=1e-4)


def test_grounding_absent_object_guard(tiny_gdino):
    """Above every score nothing is returned: no fallback to the largest or best box."""
    assert _gdino(tiny_gdino, box_threshold=1.0).ground([_sample(0)], [["cat", "dog"]]) == [[]]


# -- SAM and GrabCut -------------------------------------------------------------------------------------
def _with_boxes(i, boxes, shape=(96, 128)):
    s = _sample(i, shape=shape)
    s.key_objects = [KeyObject("cat", b, 0.9) for b in boxes]
    return s


@pytest.mark.parametrize("policy", ["best_iou", "first", "largest"])
def test_sam_masks_one_per_box_batched_equals_single(tiny_sam, policy):
    from mfpo_data.backends.sam import SamSegmenter

    samples = [_with_boxes(0, [(10, 10, 60, 50), (70, 20, 120, 90)]), _with_boxes(1, [(0, 0, 99, 79)], (80, 100)),
               _with_boxes(2, [])]
    seg = SamSegmenter(model_id=str(tiny_sam), device="cpu", multimask_policy=policy)
    batched = seg.segment(samples)
    assert [len(m) for m in batched] == [2, 1, 0]
    for s, masks in zip(samples, batched, strict=True):
        assert all(m.dtype == bool and m.shape == (s.height, s.width) for m in masks)
    single = [seg.segment([s])[0] for s in samples]
    for a, b in zip(batched, single, strict=True):
        assert all((x != y).mean() < 1e-3 for x, y in zip(a, b, strict=True))
    assert seg.describe()["multimask_policy"] == policy and seg.describe()["model_id"] == str(tiny_sam)


def test_grabcut_finds_a_drawn_object_and_falls_back_to_the_box():
    from mfpo_data.backends.grabcut import GrabCutSegmenter

    s = _sample(0)
    s.image[:] = 30
    s.image[30:70, 40:90] = (220, 40, 40)
    s.key_objects = [KeyObject("thing", (30, 20, 100, 80), 1.0), KeyObject("speck", (5, 5, 6, 6), 1.0)]
    masks = GrabCutSegmenter().segment([s])[0]
    truth = np.zeros((96, 128), bool)
    truth[30:70, 40:90] = True
    assert (masks[0] & truth).sum() / (masks[0] | truth).sum() > 0.9
    assert masks[1].sum() == 1 and masks[1][5, 5]  # too small for GrabCut: the box itself (on_failure: box)
    assert np.array_equal(GrabCutSegmenter().segment([s])[0][0], masks[0])  # deterministic
    assert not GrabCutSegmenter(on_failure="empty").segment([s])[0][1].any()


# -- SD inpainting ---------------------------------------------------------------------------------------
def _masked(i, shape=(75, 101)):
    s = _sample(i, shape=shape)
    s.mask = np.zeros(shape, bool)
    s.mask[20:60, 30:80] = True
    return s


def _sd(path, **kw):
    pytest.importorskip("diffusers")
    from mfpo_data.backends.sd_inpaint import SdInpaintPerturber

    return SdInpaintPerturber(model_id=str(path), device="cpu", resolution=64, num_inference_steps=2,
                              **{"guidance_scale": 1.0, **kw})  # no classifier-free guidance: half the work


def test_sd_inpaint_through_the_stage_keeps_outside_bit_identical(tiny_sd):
    from mfpo_data.stages.s5_perturbation import PerturbationStage

    samples = [_masked(0), _masked(1)]
    stage = PerturbationStage(_sd(tiny_sd, guidance_scale=7.5), kind="sd_inpaint", seed=3, batch_size=2)
    out = list(stage.run(iter(samples)))
    for s, before in zip(out, [_masked(0).mask, _masked(1).mask], strict=True):
        assert s.dropped is None and s.rejected_image.shape == s.image.shape  # exact input size, odd sizes too
        assert np.array_equal(s.mask, dilate_mask(before, 8))  # the removal margin is the stored key region
        assert np.array_equal(s.rejected_image[~s.mask], s.image[~s.mask])
        assert (s.rejected_image[s.mask] != s.image[s.mask]).any(axis=-1).mean() > 0.5
        p = s.perturbation_params
        assert p["model_id"] == str(tiny_sd) and "revision" in p and p["strength"] == 1.0 and isinstance(p["seed"], int)


def test_sd_inpaint_seeds_and_batch_independence(tiny_sd):
    sd = _sd(tiny_sd)
    a, b = _masked(0), _masked(1)
    batched = sd.perturb([a, b], [7, 8])
    alone = sd.perturb([a], [7])[0][0].astype(int)
    assert np.abs(batched[0][0].astype(int) - alone).max() <= 2  # the batch changes only float rounding
    other = sd.perturb([a], [9])[0][0].astype(int)
    assert np.abs(other - alone)[a.mask].mean() > 10  # another seed: other noise


def test_sd_inpaint_feather_is_inside_the_mask(tiny_sd):
    s = _masked(0)
    hard = _sd(tiny_sd).perturb([s], [1])[0].image
    soft, params, region = _sd(tiny_sd, feather=4).perturb([s], [1])[0]
    assert params["feather"] == 4 and np.array_equal(soft[~region], s.image[~region])  # the grown mask's outside
    diff = lambda x: np.abs(x.astype(int) - s.image.astype(int)).sum(-1)  # noqa: E731
    assert diff(soft)[12, 50] < diff(hard)[12, 50] or diff(hard)[12, 50] == 0  # grown mask's edge: closer to the original
    assert np.array_equal(soft[40, 55], hard[40, 55])  # deep inside: the model's pixels


def test_sd_inpaint_black_output_is_dropped_with_a_reason(tiny_sd):
    from mfpo_data.stages.s5_perturbation import PerturbationStage

    stage = PerturbationStage(_sd(tiny_sd, black_level=255), kind="sd_inpaint")  # every output counts as black
    (s,) = list(stage.run(iter([_masked(0)])))
    assert s.dropped is not None and s.dropped[0] == "perturbation" and s.dropped[1].startswith("black_output:")


# -- entropy difficulty ------------------------------------------------------------------------------------
def test_entropy_batched_equals_single_and_gap(tiny_llava):
    from mfpo_data.backends.entropy import EntropyDifficulty

    samples = [_sample(i) for i in range(3)]
    for i, s in enumerate(samples):
        s.chosen = "a cat is on the table." * (i + 1)
        s.rejected_image = _sample(10 + i).image
    scorer = EntropyDifficulty(model_id=str(tiny_llava), device="cpu")
    batched = scorer.score(samples)
    single = [scorer.score([s])[0] for s in samples]
    assert np.allclose(batched, single, atol=1e-4)
    assert all(0 < v <= np.log(400) + 1e-3 for v in batched)  # nats, at most log(vocabulary size)
    gap = EntropyDifficulty(model_id=str(tiny_llava), device="cpu", mode="gap").score(samples)
    perturbed = scorer.mean_entropy(samples, [s.rejected_image for s in samples])
    assert np.allclose(gap, np.array(batched) - np.array(perturbed), atol=1e-5)


# -- lazy imports and missing extras -------------------------------------------------------------------------
def test_backend_modules_import_without_torch():
    code = ("import sys; import mfpo_data.backends.grounding_dino, mfpo_data.backends.sam, mfpo_data.backends.sd_inpaint, "
            "mfpo_data.backends.entropy, mfpo_data.backends.graph_keywords, mfpo_data.backends.grabcut; "
            "heavy = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "make,missing,extra",
    [
        (lambda: __import__("mfpo_data.backends.sd_inpaint", fromlist=["x"]).SdInpaintPerturber().perturb([_masked(0)], [0]),
         "diffusers", "inpaint"),
        (lambda: __import__("mfpo_data.backends.grounding_dino", fromlist=["x"]).GroundingDinoGrounder()
         .ground([_sample(0)], [["cat"]]), "transformers", "grounding"),
        (lambda: __import__("mfpo_data.backends.sam", fromlist=["x"]).SamSegmenter().segment([_with_boxes(0, [(1, 1, 9, 9)])]),
         "transformers", "segment"),
        (lambda: __import__("mfpo_data.backends.entropy", fromlist=["x"]).EntropyDifficulty("m").score([_sample(0)]),
         "transformers", "score"),
        (lambda: __import__("mfpo_data.backends.sam_pth", fromlist=["x"]).SegmentAnythingSegmenter()
         .segment([_with_boxes(0, [(1, 1, 9, 9)])]), "segment_anything", "grounded-sam"),
        (lambda: __import__("mfpo_data.backends.groundingdino_pth", fromlist=["x"]).GroundingDinoPthGrounder()
         .ground([_sample(0)], [["cat"]]), "groundingdino", "grounded-sam"),
    ],
    ids=["sd_inpaint", "grounding_dino", "sam", "entropy", "segment_anything", "groundingdino"],
)
def test_missing_extra_is_one_line_with_the_pip_command(monkeypatch, make, missing, extra):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    with pytest.raises(MissingExtraError) as e:
        make()
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(f'pip install -e ".[{extra}]" in the mfpo checkout') and missing in msg


def test_an_installed_library_that_fails_to_import_is_named_with_its_error(tmp_path, monkeypatch):
    """torchvision from PyPI beside a CPU torch imports with a RuntimeError, not an ImportError."""
    from mfpo_data._deps import require

    (tmp_path / "mfpo_broken_lib.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError) as e:
        require("mfpo_broken_lib", extra="grounded-sam", feature="segmentation backend 'segment_anything'")
    assert str(e.value) == ("segmentation backend 'segment_anything' needs mfpo_broken_lib (installed, but importing it "
                            "fails: RuntimeError: operator torchvision::nms does not exist): pip install -e \".[grounded-sam]\" in the "
                            "mfpo checkout")


def test_sd_inpaint_crops_the_context_at_model_resolution_and_inserts_from_a_prompt(tiny_sd):
    from mfpo_data.backends.sd_inpaint import context_crop
    from mfpo_data.stages.s5_perturbation import PerturbationStage

    mask = np.zeros((300, 400), bool)
    mask[100:140, 200:260] = True  # a small object in a large photo
    assert context_crop(mask, 300, 400, 0.5) == (170, 80, 290, 160)  # box 60x40 grown by 30 and 20 a side
    assert context_crop(mask, 300, 400, 10.0) == (0, 0, 400, 300)  # clipped to the image
    assert context_crop(None, 300, 400, 0.5) == (0, 0, 400, 300)
    s = _masked(0, shape=(300, 400))
    s.mask = mask
    (out,) = PerturbationStage(_sd(tiny_sd, mask_dilate=4), kind="sd_inpaint", seed=1).run([s])
    p = out.perturbation_params
    assert p["crop_box"] == [162, 72, 298, 168] and max(p["working_size"]) == 64  # grown box 68x48, + 34 and 24 a side
    assert np.array_equal(out.mask, dilate_mask(mask, 4))
    assert np.array_equal(out.rejected_image[~out.mask], out.image[~out.mask])

    absent = _masked(1)
    absent.absent_object, absent.key_objects = "cat", [KeyObject("dog", (30, 20, 80, 60), 1.0, category="dog")]
    (ins,) = PerturbationStage(_sd(tiny_sd), kind="sd_inpaint", presence_negative="insert").run([absent])
    assert ins.image_pair_invalid is None and ins.perturbation_params["prompt"] == "a photo of a cat"
    x0, y0, x1, y1 = ins.perturbation_params["insert_box"]
    assert ins.mask.sum() == (x1 - x0) * (y1 - y0)  # the box, not grown: nothing is removed
    assert np.array_equal(ins.rejected_image[~ins.mask], ins.image[~ins.mask])
