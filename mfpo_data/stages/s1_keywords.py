"""Keywords: rank the key-object phrases of each sample's chosen answer with a `KeywordExtractor`.

A pair whose source did not say what it is about (RLHF-V, VLFeedback, RLAIF-V, JSONL: no `target`) may have
a chosen answer that denies an object ("there is no dog in the picture"): perturbing m cannot make that
less true. Phrases the chosen answer negates (`mfpo_data.textpairs.negation`) are never key objects. When the
top-ranked phrase is negated, the pair takes the next one the answer asserts; when the answer asserts none,
the denied object becomes the pair's `absent_object`, the rule of COCO's "no" presence rows (the image pair
is not valid, unless `presence_negative: insert` paints the object in). Either way `metadata` names it
(`negated_key_object`) and the build counts it.
"""

from __future__ import annotations

from mfpo_data.backends.base import KeywordExtractor
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage
from mfpo_data.textpairs.negation import is_negated
from mfpo_data.textpairs.vocabulary import category_of


class KeywordStage(MapStage):
    name = "keywords"

    def __init__(self, extractor: KeywordExtractor, top_k: int = 1, batch_size: int = 32):
        super().__init__(extractor, batch_size)
        self.top_k = top_k

    def process_batch(self, batch: list[Sample]) -> None:
        for sample, phrases in zip(batch, self.backend.extract(batch), strict=True):
            phrases = list(phrases)
            if sample.target is None and sample.absent_object is None and phrases:
                phrases = self._asserted(sample, phrases)
            sample.keywords = phrases[: self.top_k]

    def _asserted(self, sample: Sample, phrases: list[str]) -> list[str]:
        asserted = [p for p in phrases if not is_negated(sample.chosen, p)]
        if asserted and asserted[0] == phrases[0]:
            return asserted
        sample.metadata["negated_key_object"] = phrases[0]
        self.stat_update("negated_key_object")
        if not asserted:
            sample.absent_object = category_of(phrases[0]) or phrases[0]
        return asserted
