"""Perturbation: the dispreferred image. The edit is composited so pixels outside the key region stay
bit-identical to the original; with no key region the whole image is perturbed."""

from __future__ import annotations

from mfpo_data.backends.base import PerturbDrop, Perturber
from mfpo_data.imaging import composite
from mfpo_data.schema import Sample
from mfpo_data.seeding import sample_seed
from mfpo_data.stages.base import MapStage, SampleError


class PerturbationStage(MapStage):
    name = "perturbation"

    def __init__(self, perturber: Perturber, kind: str, seed: int = 0, batch_size: int = 8):
        super().__init__(perturber, batch_size)
        self.kind, self.seed = kind, seed

    def process_batch(self, batch: list[Sample]) -> None:
        seeds = [sample_seed(self.seed, s.id, "perturbation") for s in batch]
        results = self.backend.perturb(batch, seeds)
        for sample, result in zip(batch, results, strict=True):
            if isinstance(result, PerturbDrop):
                sample.drop(self.name, result.reason)
                continue
            edited, params = result
            if edited.shape != sample.image.shape:
                raise SampleError(f"perturbation_shape: {edited.shape} vs {sample.image.shape} in {sample.id}")
            sample.rejected_image = composite(sample.image, edited, sample.mask)
            sample.perturbation = self.kind
            region = "key_object" if sample.mask is not None else "whole_image"
            sample.perturbation_params = {"kind": self.kind, "region": region, **params}
