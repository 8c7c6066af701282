"""Keywords: rank the key-object phrases of each sample's chosen answer with a `KeywordExtractor`."""

from __future__ import annotations

from mfpo_data.backends.base import KeywordExtractor
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage


class KeywordStage(MapStage):
    name = "keywords"

    def __init__(self, extractor: KeywordExtractor, top_k: int = 1, batch_size: int = 32):
        super().__init__(extractor, batch_size)
        self.top_k = top_k

    def process_batch(self, batch: list[Sample]) -> None:
        for sample, phrases in zip(batch, self.backend.extract(batch), strict=True):
            sample.keywords = list(phrases)[: self.top_k]
