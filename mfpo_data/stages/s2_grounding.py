"""Grounding: turn each sample's keywords into key-object boxes (xyxy pixels) with a `Grounder`."""

from __future__ import annotations

import math

from mfpo_data.backends.base import Grounder
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage, SampleError


class GroundingStage(MapStage):
    name = "grounding"

    def __init__(self, grounder: Grounder, batch_size: int = 8):
        super().__init__(grounder, batch_size)

    def process_batch(self, batch: list[Sample]) -> None:
        results = self.backend.ground(batch, [s.keywords for s in batch])
        for sample, objects in zip(batch, results, strict=True):  # every box checked before any is kept or counted
            for obj in objects:
                x0, y0, x1, y1 = obj.box_xyxy
                if not all(math.isfinite(v) for v in obj.box_xyxy):
                    raise SampleError(f"bad_box: non-finite box {obj.box_xyxy} in {sample.id}")
                if x1 <= 0 or y1 <= 0 or x0 >= sample.width or y0 >= sample.height or x1 <= x0 or y1 <= y0:
                    raise SampleError(f"box_outside_image: {obj.box_xyxy} for a {sample.width}x{sample.height} image in {sample.id}")
        for sample, objects in zip(batch, results, strict=True):
            sample.key_objects = objects
            self.stat_update("objects", value=len(objects))
