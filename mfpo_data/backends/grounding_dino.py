"""Grounding DINO (transformers) turns key-object phrases into boxes; batched over images.

All phrases of an image go into one prompt ("a cat. a dog."). Each box is assigned to the input
phrase whose tokens it scores highest on (`imaging.grounding_dino_detections`), so labels are always
the input phrases, and a phrase that no box reaches above the thresholds gets no box: never the
"largest box" (Grounded-SAM issue #409). Boxes of one phrase are de-duplicated by NMS.

Images are batched only with images of the same size: padding changes the Swin backbone's
features at the image edge, so a padded batch would not give the same boxes as one image alone.
"""

from __future__ import annotations

from typing import Any, Literal

from mfpo_data.backends._hf import ModelBackend, load_pretrained, require_extra
from mfpo_data.imaging import grounding_dino_detections, nms
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


class GroundingDinoGrounder(ModelBackend):
    def __init__(
        self,
        model_id: str = "IDEA-Research/grounding-dino-tiny",
        revision: str | None = None,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        nms_iou: float = 0.7,
        max_boxes_per_phrase: int | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "float32",
        trust_remote_code: bool = False,
    ):
        self.model_id, self.revision = model_id, revision
        self.box_threshold, self.text_threshold = box_threshold, text_threshold
        self.nms_iou, self.max_boxes_per_phrase = nms_iou, max_boxes_per_phrase
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        require_extra("grounding", "grounding backend 'grounding_dino'")
        device, dtype = self.device_and_dtype(auto_on_cuda="float32")

        model, processor = load_pretrained(
            "AutoModelForZeroShotObjectDetection", self.model_id, self.revision, device, dtype, self.trust_remote_code
        )
        return model, processor, device, dtype

    def ground(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        out: list[list[KeyObject]] = [[] for _ in samples]
        todo = [i for i, p in enumerate(phrases) if p]
        groups: dict[tuple, list[int]] = {}
        for i in todo:  # same-size images share a forward pass (no padding)
            groups.setdefault(samples[i].image.shape[:2], []).append(i)
        for idx in groups.values():
            for i, objects in zip(idx, self._forward([samples[i] for i in idx], [list(phrases[i]) for i in idx]), strict=True):
                out[i] = objects
        return out

    def _forward(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        import torch
        from PIL import Image

        model, processor, device, dtype = self._load()
        prompts = [merge_phrases(p) for p in phrases]
        images = [Image.fromarray(s.image) for s in samples]
        inputs = processor(images=images, text=[t for t, _ in prompts], padding=True, return_tensors="pt")
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        with torch.inference_mode():
            outputs = model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu().numpy()
        boxes = outputs.pred_boxes.float().cpu().numpy()
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

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "grounding_dino",
            "model_id": self.model_id,
            "revision": self.revision,
            "box_threshold": self.box_threshold,
            "text_threshold": self.text_threshold,
            "nms_iou": self.nms_iou,
            "max_boxes_per_phrase": self.max_boxes_per_phrase,
            "dtype": self.dtype,
        }


__all__ = ["GroundingDinoGrounder", "merge_phrases", "phrase_token_positions"]
