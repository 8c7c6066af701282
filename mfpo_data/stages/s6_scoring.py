"""Scoring: a difficulty per sample from a `DifficultyScorer`; buckets are cut after all ranks finish."""

from __future__ import annotations

import math

from mfpo_data.backends.base import DifficultyScorer
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage, SampleError


class ScoringStage(MapStage):
    name = "scoring"

    def __init__(self, scorer: DifficultyScorer, batch_size: int = 8):
        super().__init__(scorer, batch_size)

    def process_batch(self, batch: list[Sample]) -> None:
        for sample, value in zip(batch, self.backend.score(batch), strict=True):
            if not math.isfinite(value):
                raise SampleError(f"bad_difficulty: {value} for {sample.id}")
            sample.difficulty = float(value)
