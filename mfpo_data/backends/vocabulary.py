"""Keywords by COCO-vocabulary matching: the objects an answer names, mapped through CHAIR-style synonyms."""

from __future__ import annotations

from mfpo_data.backends.base import Described
from mfpo_data.schema import Sample
from mfpo_data.textpairs.vocabulary import find_mentions


class VocabularyKeywords(Described):
    """Rank the COCO objects named in the chosen answer (then the question) by first mention.

    The pair's own target (the object a rule-built pair is about) always comes first.
    """

    backend = "vocabulary"

    def __init__(self, include_question: bool = True):
        self.include_question = include_question

    def extract(self, samples: list[Sample]) -> list[list[str]]:
        out = []
        for sample in samples:
            texts = [sample.chosen] + ([sample.question] if self.include_question else [])
            ranked: list[str] = [sample.target] if sample.target else []
            for text in texts:
                for mention in find_mentions(text):
                    if mention.category not in ranked:
                        ranked.append(mention.category)
            out.append(ranked)
        return out

