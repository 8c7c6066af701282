"""Removal check: after a removal (`sd_inpaint`, `opencv_inpaint`), ask the detecting grounder to find
the key object again on m'. The detector's best score for it on m and on m' is stored
(`removal_score`); with `filters.max_removal_score`, a pair whose object is still found above it is
dropped with reason `object_still_present`, since a chosen answer about it is then as true on m'.

It runs only when the recipe's grounder detects from pixels (not COCO ground truth, which would find
the annotation whatever the pixels show) and its perturber removes; inserted objects are not checked.
"""

from __future__ import annotations

import dataclasses

from mfpo_data.backends.base import Grounder
from mfpo_data.schema import Sample
from mfpo_data.stages.base import MapStage


class RemovalCheck(MapStage):
    name = "removal_check"

    def __init__(self, grounder: Grounder, max_removal_score: float | None = None, batch_size: int = 8):
        super().__init__(grounder, batch_size)
        self.max_removal_score = max_removal_score

    def process_batch(self, batch: list[Sample]) -> None:
        todo = [s for s in batch if s.key_objects and s.perturbation_params.get("region") == "key_object"]
        if not todo:
            return
        phrases = [sorted({k.phrase for k in s.key_objects}) for s in todo]
        views = [dataclasses.replace(s, image=s.rejected_image) for s in todo]  # m' in place of m
        for sample, found in zip(todo, self.backend.ground(views, phrases), strict=True):
            before = max(float(k.score) for k in sample.key_objects)
            after = max((float(k.score) for k in found), default=0.0)
            sample.removal_score = (before, after)
            self.stat_update("checked")
            if self.max_removal_score is not None and after > self.max_removal_score:
                phrase = max(found, key=lambda k: k.score).phrase
                sample.drop(self.name, f"object_still_present: '{phrase}' found on the perturbed image at "
                                       f"{after:.3f} > max_removal_score {self.max_removal_score} (before: {before:.3f})")  # fmt: skip
                self.stat_update("dropped/object_still_present")
