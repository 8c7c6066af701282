"""A closed-vocabulary detector trained on COCO's categories (RT-DETR, D-FINE, DETR, YOLOS, ...), for grounding
and for the removal check: any transformers `AutoModelForObjectDetection` by model id, batched over images.

A phrase is turned into its COCO category through the project's vocabulary (`category_of`: "kitten" is
`cat`, "man" is `person`), and so is each label name of the model (`config.id2label`: "motorbike" is
`motorcycle`); a detection is a box of every phrase whose category equals its label's. A phrase that names
no COCO category (a graph keyword such as "red shirt") gets no box, and so does a category the model's
labels do not cover. Boxes of one phrase are de-duplicated by NMS (DETR-family models rarely need it) and
sorted by score.

It costs one image-only forward per image, where Grounding DINO also encodes the text prompt and fuses it
with the image at every layer (the README gives the numbers), which makes it the cheap way to re-detect
every m' of a large build. Images are batched only with images of the same size, so padding cannot change
a box.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from mfpo_data.backends.grounding_dino import nms
from mfpo_data.backends.loading import ModelBackend, device_turn, load_pretrained
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.textpairs.vocabulary import category_of


class DetectorGrounder(ModelBackend):
    backend = "detector"
    SECTION, EXTRA = "grounding", "grounding"
    HALF = "float16"
    detects = True  # finds objects from pixels: it can check that a key object is gone from m'

    def __init__(
        self,
        model_id: str = "PekingU/rtdetr_v2_r18vd",
        revision: str | None = None,
        threshold: float = 0.5,
        nms_iou: float = 0.7,
        max_boxes_per_phrase: int | None = None,
        device: str = "auto",
        dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto",
        trust_remote_code: bool = False,
    ):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("grounding.threshold must be in [0, 1]")
        self.model_id, self.revision, self.threshold = model_id, revision, threshold
        self.nms_iou, self.max_boxes_per_phrase = nms_iou, max_boxes_per_phrase
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code

    def _load(self):
        self.require()
        device, dtype = self.device_and_dtype()
        model, processor = load_pretrained("AutoModelForObjectDetection", self.model_id, self.revision, device, dtype,
                                           self.trust_remote_code, key=self.model_key)  # fmt: skip
        return model, processor, device, dtype

    @cached_property
    def _label_categories(self) -> dict[int, str]:
        """Label id -> COCO category, for the labels the vocabulary knows (`N/A` slots and others are left out)."""
        model = self._load()[0]
        out = {}
        for label_id, name in model.config.id2label.items():
            category = category_of(str(name).lower().replace("_", " "))
            if category is not None:
                out[int(label_id)] = category
        return out

    def ground(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        out: list[list[KeyObject]] = [[] for _ in samples]
        wanted = [[(p, category_of(p)) for p in ps] for ps in phrases]
        todo = [i for i, w in enumerate(wanted) if any(c is not None for _, c in w)]
        groups: dict[tuple, list[int]] = {}
        for i in todo:  # same-size images share a forward pass (no padding)
            groups.setdefault(samples[i].image.shape[:2], []).append(i)
        for idx in groups.values():
            for i, detections in zip(idx, self._forward([samples[i] for i in idx]), strict=True):
                out[i] = self._to_objects(detections, wanted[i])
        return out

    def _forward(self, samples: list[Sample]) -> list[list[tuple[str, tuple, float]]]:
        """(category, xyxy pixel box, score) of every detection above `threshold` whose label is a COCO category."""
        import torch
        from PIL import Image

        model, processor, device, dtype = self._load()
        inputs = processor(images=[Image.fromarray(s.image) for s in samples], return_tensors="pt")
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in inputs.items()}
        with device_turn(device), torch.inference_mode():
            outputs = model(**inputs)
            for name in ("logits", "pred_boxes"):  # post-processing in float32 on the CPU
                setattr(outputs, name, getattr(outputs, name).float().cpu())
        results = processor.post_process_object_detection(outputs, threshold=self.threshold,
                                                          target_sizes=[(s.height, s.width) for s in samples])  # fmt: skip
        labels = self._label_categories
        out = []
        for sample, result in zip(samples, results, strict=True):
            found = []
            for score, label, box in zip(result["scores"].tolist(), result["labels"].tolist(), result["boxes"].tolist(), strict=True):
                x0, y0, x1, y1 = (min(max(v, 0.0), limit) for v, limit in zip(box, (sample.width, sample.height) * 2, strict=True))
                if int(label) in labels and x1 - x0 >= 1.0 and y1 - y0 >= 1.0:
                    found.append((labels[int(label)], (x0, y0, x1, y1), float(score)))
            out.append(found)
        return out

    def _to_objects(self, detections: list, wanted: list[tuple[str, str | None]]) -> list[KeyObject]:
        objects = []
        for phrase, category in wanted:  # phrases in keyword order, boxes by score within a phrase
            mine = [(box, score) for c, box, score in detections if category is not None and c == category]
            if not mine:
                continue
            keep = nms([b for b, _ in mine], [s for _, s in mine], self.nms_iou)
            if self.max_boxes_per_phrase is not None:
                keep = keep[: self.max_boxes_per_phrase]
            objects += [KeyObject(phrase, tuple(float(v) for v in mine[i][0]), float(mine[i][1]), category=category)
                        for i in keep]
        return objects


__all__ = ["DetectorGrounder"]
