"""Grounding and segmentation from the source's ground-truth annotations (COCO instances)."""

from __future__ import annotations

import numpy as np

from mfpo_data.backends.base import NO_WEIGHTS, Described
from mfpo_data.imaging import box_mask, mask_from_segmentation
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.textpairs.vocabulary import category_of


class CocoGtGrounder(Described):
    """Every annotated instance of the phrase's COCO category is a region of the key object (score 1)."""

    backend = "coco_gt"
    described = NO_WEIGHTS

    def ground(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        out = []
        for sample, sample_phrases in zip(samples, phrases, strict=True):
            objects = []
            for phrase in sample_phrases:
                category = category_of(phrase)
                for index, ann in enumerate(sample.annotations):
                    if category is not None and ann.category == category:
                        objects.append(KeyObject(phrase, ann.box_xyxy, 1.0, category=category, annotation_index=index))
            out.append(objects)
        return out


class CocoGtSegmenter(Described):
    """The instance masks of the annotations the grounder picked (polygons or RLE decoded)."""

    backend = "coco_gt"
    described = NO_WEIGHTS

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        out = []
        for sample in samples:
            masks = []
            for obj in sample.key_objects:
                index = obj.annotation_index
                segmentation = sample.annotations[index].segmentation if index is not None else None
                if segmentation is None:  # not grounded from an annotation, or one without a shape: its box
                    masks.append(box_mask(obj.box_xyxy, sample.height, sample.width))
                else:
                    masks.append(mask_from_segmentation(segmentation, sample.height, sample.width))
            out.append(masks)
        return out


class BoxSegmenter(Described):
    """The box itself as the mask: no weights, no image content used."""

    backend = "box"
    described = NO_WEIGHTS

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        return [[box_mask(o.box_xyxy, s.height, s.width) for o in s.key_objects] for s in samples]

