"""The small protocols that backends implement. All are batch-first: one call per batch of samples.

A backend is cheap to construct and picklable (it is shipped to worker processes); anything heavy
(a model) is loaded on first use inside the worker, once per process. `describe()` returns what the
dataset card reports about it (backend name, model id, revision, parameters).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from mfpo_data.schema import KeyObject, Sample


class KeywordExtractor(Protocol):
    def extract(self, samples: list[Sample]) -> list[list[str]]:
        """Ranked key-object phrases per sample, most important first."""

    def describe(self) -> dict[str, Any]: ...


class Grounder(Protocol):
    def ground(self, samples: list[Sample], phrases: list[list[str]]) -> list[list[KeyObject]]:
        """Boxes (xyxy pixels) for the phrases of each sample; a phrase not found yields no box."""

    def describe(self) -> dict[str, Any]: ...


class Segmenter(Protocol):
    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        """One bool (H, W) mask per key object of each sample, in the order of `sample.key_objects`."""

    def describe(self) -> dict[str, Any]: ...


class Perturber(Protocol):
    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """An edited full image (RGB uint8, same shape) and its parameters per sample.

        The stage composites the edit with the original outside `sample.mask`, so a perturber may
        change any pixel; `sample.mask` is None when the whole image is to be perturbed.
        """

    def describe(self) -> dict[str, Any]: ...


class DifficultyScorer(Protocol):
    def score(self, samples: list[Sample]) -> list[float]:
        """A difficulty per sample; higher is harder. Buckets are cut over the whole build later."""

    def describe(self) -> dict[str, Any]: ...
