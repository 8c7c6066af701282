"""Grounding DINO (transformers) turns key-object phrases into boxes; batched over images.

All phrases of an image go into one prompt ("a cat. a dog."). Each box is assigned to the input
phrase whose tokens it scores highest on (`grounding_dino_detections`), so labels are always
the input phrases, and a phrase that no box reaches above the thresholds gets no box: never the
"largest box" (Grounded-SAM issue #409). Boxes of one phrase are de-duplicated by NMS.

Images are batched only with images of the same size: padding changes the Swin backbone's
features at the image edge, so a padded batch would not give the same boxes as one image alone.

`dtype: auto` (the default) is float16 on a GPU and float32 on the CPU; float16 rather than
bfloat16, whose 8-bit mantissa rounds a box coordinate to steps of up to 0.4% of the image (float16:
0.05%).
With a transformers release whose Grounding DINO cannot run in half precision (before the fix that
made its reference points and valid ratios follow the model's dtype) it is float32 on a GPU too.
Half precision may still put a score that lies close to a threshold on its other side;
`dtype: float32` gives full precision.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.loading import ModelBackend, device_turn, load_pretrained
from mfpo_data.imaging import box_iou, cxcywh_norm_to_xyxy_px
from mfpo_data.schema import KeyObject, Sample


def merge_phrases(phrases: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's prompt ("a cat. a dog.") and each phrase's character span in it."""
    text, spans = "", []
    for p in phrases:
        p = " ".join(p.lower().replace(".", " ").split())
        spans.append((len(text), len(text) + len(p)))
        text += p + ". "
    return text.rstrip(), spans


def phrase_token_positions(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[list[int]]:
    """Token positions per phrase from a tokenizer's character offsets (special tokens have (0, 0))."""
    out: list[list[int]] = [[] for _ in spans]
    for t, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        for k, (s, e) in enumerate(spans):
            if s <= a and b <= e:
                out[k].append(t)
                break
    return out


def grounding_dino_detections(pred_boxes, token_probs, phrase_tokens: list[list[int]], width: int, height: int,
                              box_threshold: float, text_threshold: float, min_box_size: float = 1.0) -> list[tuple[int, tuple, float]]:
    """Grounding DINO's raw outputs for one image -> (phrase index, xyxy pixel box, score) per kept query.

    `pred_boxes` (Q, 4) are normalised cxcywh; `token_probs` (Q, T) the sigmoid of the query-token
    logits; `phrase_tokens[k]` the token positions of input phrase k. A query's score for phrase k is
    its highest probability over that phrase's tokens; the query goes to its best phrase and is kept
    only when that score exceeds both thresholds. A phrase no query reaches gets no box (never "the
    largest box"). Boxes are clipped to the image; boxes under `min_box_size` pixels wide or high are
    dropped.
    """
    probs = np.asarray(token_probs, dtype=np.float64)
    out = []
    spans = [np.asarray(t, dtype=np.int64) for t in phrase_tokens]
    if not spans or all(len(s) == 0 for s in spans):
        return out
    per_phrase = np.stack([probs[:, s].max(axis=1) if len(s) else np.zeros(len(probs)) for s in spans], axis=1)
    best = per_phrase.argmax(axis=1)
    for q, k in enumerate(best):
        score = float(per_phrase[q, k])
        if not (score > box_threshold and score > text_threshold):  # a NaN score (half precision) is no match
            continue
        box = cxcywh_norm_to_xyxy_px(pred_boxes[q], width, height)
        if box[2] - box[0] < min_box_size or box[3] - box[1] < min_box_size:
            continue
        out.append((int(k), box, score))
    return out


def nms(boxes, scores, iou_threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first (ties: lower index first)."""
    boxes, scores = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        if not keep or box_iou(boxes[i], boxes[keep]).max() <= iou_threshold:
            keep.append(i)
    return keep


class GroundingDinoGrounder(ModelBackend):
    backend = "grounding_dino"
    SECTION, EXTRA = "grounding", "grounding"
    HALF = "float16"
    detects = True  # finds objects from pixels: it can check that a removed object is gone

    def __init__(
        self,
        model_id: str = "IDEA-Research/grounding-dino-tiny",
        revision: str | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.7,
        max_boxes_per_phrase: int | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        self.model_id, self.revision = model_id, revision
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.nms_iou, self.max_boxes_per_phrase = nms_iou, max_boxes_per_phrase
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def half_precision(self) -> str | None:
        """transformers' Grounding DINO runs in half precision since `get_valid_ratio` takes the model's
        dtype (earlier releases mix float32 grids with half weights and fail)."""
        import inspect

        from transformers.models.grounding_dino import modeling_grounding_dino as gd

        return self.HALF if "dtype" in inspect.signature(gd.GroundingDinoModel.get_valid_ratio).parameters else None

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()

        model, processor = load_pretrained(
            "AutoModelForZeroShotObjectDetection", self.model_id, self.revision, device, dtype, self.trust_remote_code,
            key=self.model_key,
        )
        return model, processor, device, dtype

    def ground(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        out: list[list[KeyObject]] = [[] for _ in samples]
        todo = [i for i, p in enumerate(phrases) if p]
        groups: dict[tuple, list[int]] = {}
        for i in todo:  # same-size images share a forward pass (no padding)
            groups.setdefault(self._batch_key(samples[i], phrases[i]), []).append(i)
        for idx in groups.values():
            for i, objects in zip(idx, self._forward([samples[i] for i in idx], [list(phrases[i]) for i in idx]), strict=True):
                out[i] = objects
        return out

    def _batch_key(self, sample: Sample, phrases: list[str]) -> tuple:
        """Which images may share a forward pass: those of one size."""
        return sample.image.shape[:2]

    def _forward(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        import torch
        from PIL import Image

        model, processor, device, dtype = self._load()
        prompts = [merge_phrases(p) for p in phrases]
        images = [Image.fromarray(s.image) for s in samples]
        inputs = processor(images=images, text=[t for t, _ in prompts], padding=True, return_tensors="pt")
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        with device_turn(device), torch.inference_mode():
            outputs = model(**inputs)
            probs = outputs.logits.float().sigmoid().cpu().numpy()
            boxes = outputs.pred_boxes.float().cpu().numpy()
            del outputs
        results = []
        for b, (sample, sample_phrases, (text, spans)) in enumerate(zip(samples, phrases, prompts, strict=True)):
            enc = processor.tokenizer(text, return_offsets_mapping=True)
            n = len(enc["input_ids"])
            if inputs["input_ids"][b, :n].tolist() != enc["input_ids"]:
                raise RuntimeError("grounding_dino: the tokenizer's offsets do not match the processor's input ids")
            tokens = phrase_token_positions(enc["offset_mapping"], spans)
            dets = grounding_dino_detections(boxes[b], probs[b, :, : probs.shape[-1]], tokens, sample.width,
                                             sample.height, self.box_threshold, self.text_threshold)
            results.append(self._to_objects(dets, sample_phrases))
        return results

    def _to_objects(self, dets: list, phrases: list[str]) -> list[KeyObject]:
        objects = []
        for k, phrase in enumerate(phrases):  # phrases in keyword order, boxes by score within a phrase
            mine = [(box, score) for j, box, score in dets if j == k]
            if not mine:
                continue
            keep = nms([b for b, _ in mine], [s for _, s in mine], self.nms_iou)
            if self.max_boxes_per_phrase is not None:
                keep = keep[: self.max_boxes_per_phrase]
            objects += [KeyObject(phrase, tuple(float(v) for v in mine[i][0]), float(mine[i][1])) for i in keep]
        return objects


__all__ = ["GroundingDinoGrounder", "merge_phrases", "phrase_token_positions"]
