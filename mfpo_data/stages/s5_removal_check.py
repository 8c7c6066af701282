"""Removal check: after every perturbation, ask the recipe's detecting grounder to find the key object
again on m', inside the key object's region. The detector's best score for the key object on m (its
grounding score) and on m' is stored (`removal_score {before, after}`); `after` is 0 when nothing is
found there above the detector's own thresholds. With `filters.max_removal_score`, a pair whose object is
still found above it is dropped with reason `object_still_present`, since a chosen answer about it is
then as true on m'.

"Inside its region": a detection on m' counts when at least `MIN_INSIDE` of its box lies in the union of
the key objects' boxes on m, so a second dog elsewhere in the picture, or a box around the whole scene,
does not keep a removed dog "present". Every kind of negative is checked the same way (noise, blur,
occlusion, inpainting, and the ablations that do not aim at the key object: a random box, the whole
image, a random crop), so the build's stats say per kind how often the key object survives.

It runs only when the recipe's grounder detects from pixels (not COCO ground truth, which would find the
annotation whatever the pixels show; such rows keep `removal_score: null`, "not verified"). Rows with no
key object (the whole-image fallback) and inserted objects are not checked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mfpo_data.backends.base import Grounder
from mfpo_data.schema import KeyObject, Sample
from mfpo_data.stages.base import MapStage


MIN_INSIDE = 0.5  # share of a detection's box that must lie in the key objects' boxes to count as the key object


def inside_share(box, regions: list) -> float:
    """The share of `box`'s area (xyxy) covered by the union of the `regions` boxes (xyxy)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    if area <= 0 or not regions:
        return 0.0
    xs = sorted({x0, x1, *(min(max(float(r[i]), x0), x1) for r in regions for i in (0, 2))})
    covered = 0.0
    for a, b in zip(xs, xs[1:]):  # exact union area by vertical strips
        spans = sorted((max(float(r[1]), y0), min(float(r[3]), y1)) for r in regions
                       if float(r[0]) <= a and float(r[2]) >= b and min(float(r[3]), y1) > max(float(r[1]), y0))  # fmt: skip
        top, length = -np.inf, 0.0
        for s0, s1 in spans:
            if s1 > top:
                length += s1 - max(s0, top)
                top = s1
        covered += (b - a) * length
    return covered / area


def score_in_region(found: list[KeyObject], regions: list) -> tuple[float, KeyObject | None]:
    """The best score among the detections that lie in the key region, and that detection."""
    inside = [k for k in found if k.box_xyxy is not None and inside_share(k.box_xyxy, regions) >= MIN_INSIDE]
    best = max(inside, key=lambda k: k.score, default=None)
    return (float(best.score) if best is not None else 0.0), best


class RemovalCheck(MapStage):
    name = "removal_check"

    def __init__(self, grounder: Grounder, max_removal_score: float | None = None, batch_size: int = 8):
        super().__init__(grounder, batch_size)
        self.max_removal_score = max_removal_score

    def process_batch(self, batch: list[Sample]) -> None:
        todo = [s for s in batch if s.key_objects and s.perturbation_params.get("region") != "inserted"]
        if not todo:
            return
        phrases = [sorted({k.phrase for k in s.key_objects}) for s in todo]
        views = [dataclasses.replace(s, image=s.rejected_image) for s in todo]  # m' in place of m
        for sample, found in zip(todo, self.backend.ground(views, phrases), strict=True):
            before = max(float(k.score) for k in sample.key_objects)
            regions = [k.box_xyxy for k in sample.key_objects if k.box_xyxy is not None]
            after, best = score_in_region(found, regions)
            sample.removal_score = (before, after)
            self.stat_update("checked")
            if self.max_removal_score is not None and after > self.max_removal_score:
                sample.drop(self.name, f"object_still_present: '{best.phrase}' found in its region on the perturbed image "
                                       f"at {after:.3f} > max_removal_score {self.max_removal_score} (before: {before:.3f})")  # fmt: skip
                self.stat_update("dropped/object_still_present")
