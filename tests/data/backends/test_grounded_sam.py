"""Meta's `segment-anything` and IDEA's `groundingdino-py` as backends (`segment_anything`, `groundingdino`), with
randomly initialised models saved as `.pth` checkpoints: the masks and boxes are the packages' own predictors'
(SamPredictor, the package's image transform), batching changes nothing, and a checkpoint is read as
tensors only. Skipped where the packages are not installed (they need torchvision and, for groundingdino-py,
transformers 4.x; README.md gives the environment these run in)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from mfpo_data.errors import MissingModelError
from mfpo_data.schema import KeyObject, Sample


def _samples(shapes=((48, 64), (40, 40), (64, 48)), boxes=((4.0, 6.0, 30.0, 36.0), (20.0, 2.0, 39.0, 20.0))):
    rng = np.random.default_rng(0)
    out = []
    for i, (h, w) in enumerate(shapes):
        s = Sample(f"s{i}", "t", str(i), "caption", "q", "a", "b", image=rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        s.key_objects = [KeyObject("dog", b, 0.9) for b in boxes[: 1 + i % 2]]
        out.append(s)
    return out


# --- segment-anything -------------------------------------------------------------------------------------


def tiny_sam(img_size: int = 64, embed_dim: int = 32):
    """A random `segment_anything.modeling.Sam` of the package's own classes, a few thousand times smaller than vit_b."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    prompt_dim, grid = 16, img_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(depth=2, embed_dim=embed_dim, img_size=img_size, mlp_ratio=2, num_heads=2, patch_size=16,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
                                      global_attn_indexes=[1], window_size=2, out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=32,
                                                                                        num_heads=2),
                                 transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=16),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()  # fmt: skip


@pytest.fixture
def sam_checkpoint(tmp_path, monkeypatch):
    """The tiny SAM's weights as a .pth file, and the package's registry building the tiny SAM as `vit_b`."""
    import torch

    segment_anything = pytest.importorskip("segment_anything")
    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", lambda checkpoint=None: tiny_sam())
    path = tmp_path / "sam_tiny.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


def _predictor_masks(model, sample, multimask: bool):
    """What Grounded-SAM's code does with SamPredictor: set_image, then predict_torch with every box."""
    import torch
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    predictor.set_image(sample.image)
    boxes = torch.tensor([o.box_xyxy for o in sample.key_objects], dtype=torch.float32)
    masks, iou, _ = predictor.predict_torch(point_coords=None, point_labels=None, multimask_output=multimask,
                                            boxes=predictor.transform.apply_boxes_torch(boxes, sample.image.shape[:2]))  # fmt: skip
    return masks.numpy(), iou.numpy()


def test_segment_anything_gives_sam_predictors_masks_in_one_batch(sam_checkpoint):
    from mfpo_data.backends.sam_pth import SegmentAnythingSegmenter

    reference = tiny_sam()
    samples = _samples()
    first = SegmentAnythingSegmenter(model_id=str(sam_checkpoint), model_type="vit_b", multimask_policy="first", device="cpu")
    best = SegmentAnythingSegmenter(model_id=str(sam_checkpoint), model_type="vit_b", device="cpu")
    for sample, got_first, got_best in zip(samples, first.segment(samples), best.segment(samples), strict=True):
        single, _ = _predictor_masks(reference, sample, multimask=False)
        assert [m.shape for m in got_first] == [sample.image.shape[:2]] * len(sample.key_objects)
        np.testing.assert_array_equal(np.stack(got_first), single[:, 0])
        three, iou = _predictor_masks(reference, sample, multimask=True)
        np.testing.assert_array_equal(np.stack(got_best), three[np.arange(len(three)), iou.argmax(axis=1)])
    assert any(m.any() for ms in first.segment(samples) for m in ms)
    empty = Sample("e", "t", "e", "caption", "q", "a", "b", image=samples[0].image)
    assert first.segment([empty]) == [[]]


def test_segment_anything_refuses_what_is_not_a_checkpoint_of_tensors(sam_checkpoint, tmp_path, monkeypatch):
    import argparse

    import torch
    from segment_anything import sam_model_registry

    from mfpo_data.backends.sam_pth import SegmentAnythingSegmenter

    def segment(path, **kw):
        return SegmentAnythingSegmenter(model_id=str(path), model_type="vit_b", device="cpu", **kw).segment(_samples()[:1])

    pickled = tmp_path / "pickled.pth"
    torch.save({"args": argparse.Namespace(lr=1.0), **tiny_sam().state_dict()}, pickled)
    with pytest.raises(MissingModelError, match=r"pickled.pth \(segmentation.model_id\) as a checkpoint of tensors .*weights_only"):
        segment(pickled)
    with pytest.raises(MissingModelError, match="its sha256 .* does not start with the revision 'ffffff'"):
        segment(sam_checkpoint, revision="ffffff")
    with pytest.raises(MissingModelError, match=r"no checkpoint file at .*nothing.pth \(segmentation.model_id\)"):
        segment(tmp_path / "nothing.pth")
    monkeypatch.setitem(sam_model_registry, "vit_b", lambda checkpoint=None: tiny_sam(embed_dim=48))
    with pytest.raises(MissingModelError, match="is not a segment-anything vit_b checkpoint"):
        segment(sam_checkpoint)


def test_segment_anything_runs_metas_vit_b_built_by_the_package(tmp_path):
    """The package's own vit_b builder (random weights, 94M parameters, 1024 px input): one image, end to end."""
    import torch

    segment_anything = pytest.importorskip("segment_anything")
    from mfpo_data.backends.sam_pth import SegmentAnythingSegmenter

    torch.manual_seed(0)
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(segment_anything.sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    (masks,) = SegmentAnythingSegmenter(model_id=str(path), model_type="vit_b", device="cpu").segment(_samples()[:1])
    assert len(masks) == 1 and masks[0].shape == (48, 64) and masks[0].dtype == bool


# --- groundingdino-py -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gdino(tmp_path_factory):
    """groundingdino-py's Swin-T model (its bundled config) with a tiny random BERT folder as the text encoder,
    saved as a .pth checkpoint the way IDEA's are ({"model": state_dict})."""
    pytest.importorskip("groundingdino")
    import torch
    from transformers import BertConfig, BertModel

    from mfpo_data.backends.tiny import make_bert_tokenizer

    root = tmp_path_factory.mktemp("gdino-pth")
    tok = make_bert_tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(root / "bert")  # fmt: skip
    tok.save_pretrained(root / "bert")
    model = _build_gdino(root / "bert")
    torch.save({"model": model.state_dict()}, root / "gdino.pth")
    return root / "gdino.pth", root / "bert", model


def _build_gdino(bert):
    import contextlib
    import io
    from pathlib import Path

    import groundingdino
    import torch
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig

    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py"))
    args.device, args.text_encoder_type = "cpu", str(bert)
    torch.manual_seed(1)
    with contextlib.redirect_stdout(io.StringIO()):
        return build_model(args).eval()


def _grounder(gdino, **kw):
    from mfpo_data.backends.groundingdino_pth import GroundingDinoPthGrounder

    path, bert, _ = gdino
    return GroundingDinoPthGrounder(model_id=str(path), text_encoder=str(bert), device="cpu", **{"image_size": 224, "max_size": 300, **kw})


def test_groundingdino_pixels_are_the_packages_load_image(gdino, tmp_path):
    from groundingdino.util.inference import load_image
    from PIL import Image

    sample = _samples(shapes=((48, 64),))[0]
    Image.fromarray(sample.image).save(tmp_path / "m.png")
    _, expected = load_image(str(tmp_path / "m.png"))  # 800 px short side, ImageNet statistics
    got = _grounder(gdino, image_size=800, max_size=1333).pixel_values([sample])[0]
    assert got.shape == expected.shape and got.shape[-2] == 800
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_groundingdino_boxes_are_the_packages_predict_boxes(gdino):
    from groundingdino.util.inference import predict

    from mfpo_data.imaging import cxcywh_norm_to_xyxy_px

    sample = _samples(shapes=((48, 64),))[0]
    grounder = _grounder(gdino, box_threshold=0.0, text_threshold=0.0, nms_iou=1.0)
    (found,) = grounder.ground([sample], [["dog"]])
    boxes, _, _ = predict(gdino[2], grounder.pixel_values([sample])[0], "dog.", box_threshold=0.0, text_threshold=0.0,
                          device="cpu")  # the package's own model object, built directly, not from the checkpoint
    expected = sorted(tuple(round(v, 3) for v in cxcywh_norm_to_xyxy_px(b, 64, 48)) for b in boxes.numpy())
    expected = [b for b in expected if b[2] - b[0] >= 1.0 and b[3] - b[1] >= 1.0]  # boxes under a pixel are dropped
    got = sorted(tuple(round(v, 3) for v in k.box_xyxy) for k in found)
    assert len(got) > 800 and got == expected  # every query but the sub-pixel ones, NMS off
    assert all(k.phrase == "dog" for k in found)


def test_groundingdino_batches_change_nothing_and_phrases_keep_their_order(gdino):
    grounder = _grounder(gdino, box_threshold=0.05, text_threshold=0.05)
    samples = _samples(shapes=((48, 64), (48, 64), (48, 64), (40, 40)))
    phrases = [["dog", "cat"], ["person"], ["dog", "cat"], ["dog"]]  # the package mixes prompts across a batch
    batched = grounder.ground(samples, phrases)
    alone = [grounder.ground([s], [p])[0] for s, p in zip(samples, phrases, strict=True)]
    def rows(objects):  # near-equal scores may swap places within a phrase: compare in one order
        return sorted(((k.phrase, *np.round(k.box_xyxy, 2)), k.score) for k in objects)

    for b, a, p in zip(batched, alone, phrases, strict=True):
        assert [k.phrase for k in b] == [k.phrase for k in a] and {k.phrase for k in b} <= set(p)
        assert [box for box, _ in rows(b)] == [box for box, _ in rows(a)]
        np.testing.assert_allclose([score for _, score in rows(b)], [score for _, score in rows(a)], atol=1e-4)
    assert any(batched)
    assert grounder.ground(samples[:1], [[]]) == [[]]


def test_groundingdino_refuses_a_checkpoint_of_another_model(gdino, tmp_path):
    import torch

    other = tmp_path / "other.pth"
    torch.save({"model": {"backbone.0.weight": torch.zeros(3)}}, other)
    with pytest.raises(MissingModelError, match=r"other.pth \(grounding.model_id\) holds no weight of a GroundingDINO_SwinT_OGC model"):
        _grounder((other, gdino[1], None)).ground(_samples()[:1], [["dog"]])


def test_a_build_grounds_segments_and_checks_removal_with_both_packages(gdino, sam_checkpoint, tmp_path):
    """The recipe keys reach the backends, the build runs them as its stages do, and groundingdino, which
    detects from pixels, re-checks every key object on m' (removal evidence)."""
    import pyarrow.parquet as pq

    from mfpo_data.pipeline.build import build_dataset

    path, bert, _ = gdino
    layout = build_dataset("coco_grounded", [
        f"grounding={{backend: groundingdino, model_id: {path}, text_encoder: {bert}, image_size: 224, max_size: 300, "
        "box_threshold: 0.0, text_threshold: 0.0, max_boxes_per_phrase: 1, device: cpu}",  # random weights: keep a box
        f"segmentation={{backend: segment_anything, model_id: {sam_checkpoint}, model_type: vit_b, device: cpu}}",
        "keywords.backend=vocabulary", "filters.max_mask_area_ratio=1.0", "source.limit=2", "output.progress=false",
    ], tmp_path / "out")  # fmt: skip
    rows = [r for shard in layout.final_shards() for r in pq.read_table(shard).to_pylist()]
    stats = layout.read_stats()
    grounded = [r for r in rows if r["key_objects"]]
    assert grounded and all(r["mask"] is not None for r in grounded)
    assert all(r["removal_score"] is not None for r in grounded if r["targets_key_object"])
    assert sum(stats["removal_checked"].values()) == sum(1 for r in rows if r["removal_score"] is not None) > 0
    assert stats["backends"]["grounding"]["backend"] == "groundingdino" and stats["backends"]["segmentation"]["model_type"] == "vit_b"
