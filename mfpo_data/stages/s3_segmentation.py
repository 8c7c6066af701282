"""Segmentation: one mask per key object with a `Segmenter`, unioned into the sample's key region."""

from __future__ import annotations

import numpy as np

from mfpo_data.backends.base import Segmenter
from mfpo_data.imaging import ImageError
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage, SampleError


class SegmentationStage(MapStage):
    name = "segmentation"

    def __init__(self, segmenter: Segmenter, batch_size: int = 8):
        super().__init__(segmenter, batch_size)

    def process_batch(self, batch: list[Sample]) -> None:
        todo = [s for s in batch if s.key_objects]
        for sample in batch:
            if not sample.key_objects:
                sample.mask = None
        if not todo:
            return
        try:
            results = self.backend.segment(todo)
        except ImageError as e:
            raise SampleError(str(e)) from None
        for sample, masks in zip(todo, results, strict=True):
            union = np.zeros((sample.height, sample.width), dtype=bool)
            for obj, mask in zip(sample.key_objects, masks, strict=True):
                if mask.shape != union.shape:
                    raise SampleError(f"mask_size_mismatch: mask {mask.shape} vs image {union.shape} in {sample.id}")
                obj.mask = mask
                union |= mask
            sample.mask = union if union.any() else None
