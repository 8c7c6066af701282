"""The small protocols that backends implement. All are batch-first: one call per batch of samples.

A backend is cheap to construct and picklable (it is shipped to worker processes); anything heavy
(a model) is loaded on first use inside the worker, once per process. `describe()` returns what the
dataset card reports about it (backend name, model id, revision, parameters); `Described` derives
it from the backend's own options.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

import numpy as np

from mfpo_data.schema import KeyObject, Sample


HOW_IT_RUNS = ("device", "trust_remote_code")  # options that change where a backend runs, not its output


class Described:
    """`describe()` from the backend's own options: `backend` (the name recipes choose it by), then
    every `__init__` parameter but those in `HOW_IT_RUNS`, read back from the attribute of the same
    name; `described` adds what a class states once (a schedule's name, "no weights")."""

    backend: ClassVar[str]
    described: ClassVar[dict[str, Any]] = {}

    def describe(self) -> dict[str, Any]:
        parameters = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        options = {n: getattr(self, n) for n in names if n != "self" and n not in HOW_IT_RUNS}
        return {"backend": self.backend, **options, **self.described}


NO_WEIGHTS = {"model_id": None, "revision": None}


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


class Perturbed(NamedTuple):
    """A perturber's edit of one sample: the edited full image (RGB uint8, the input's shape) and the
    parameters recorded in `perturbation_params` (the stage adds `kind` and `region`)."""

    image: np.ndarray
    params: dict[str, Any]


@dataclass
class PerturbDrop:
    """A perturber's refusal of one sample (e.g. a model returned an all-black image): the stage drops
    the sample with `reason`, which starts with its reason code."""

    reason: str
    params: dict[str, Any] = field(default_factory=dict)


class Perturber(Protocol):
    def perturb(self, samples: list[Sample], seeds: list[int]) -> list[Perturbed | PerturbDrop]:
        """A `Perturbed` edit or a `PerturbDrop` per sample.

        The stage composites the edit with the original outside `sample.mask`, so a perturber may
        change any pixel; `sample.mask` is None when the whole image is to be perturbed, and the
        stage records the region as `key_object` or `whole_image` accordingly.
        """

    def describe(self) -> dict[str, Any]: ...


class DifficultyScorer(Protocol):
    def score(self, samples: list[Sample]) -> list[float]:
        """A difficulty per sample; higher is harder. Buckets are cut over the whole build later."""

    def describe(self) -> dict[str, Any]: ...
