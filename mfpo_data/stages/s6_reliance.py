"""Image reliance (optional, `reliance.backend: vlm`): per chosen-answer token, log p(y_t | m) - log p(y_t | m')
under an image-text-to-text model, stored as `image_reliance` (`backends/reliance.py`)."""

from __future__ import annotations

import math

from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage, SampleError


class RelianceStage(MapStage):
    name = "reliance"

    def __init__(self, scorer, batch_size: int = 4):
        super().__init__(scorer, batch_size)

    def process_batch(self, batch: list[Sample]) -> None:
        for sample, reliance in zip(batch, self.backend.reliance(batch), strict=True):
            if not all(math.isfinite(v) for v in reliance["values"]):
                raise SampleError(f"bad_reliance: a non-finite log-prob in {sample.id}")
            sample.image_reliance = reliance
