"""Difficulty without a model, from what the build already knows about each pair.

`difficulty = 1 - (w_area * sqrt(area) + w_change * change) / (w_area + w_change)`, where `area` is
the key region's share of the image (1 for a whole-image perturbation) and `change` the mean
absolute pixel change inside the region divided by 127.5, clipped to [0, 1]. A small region that
changed little is a subtle contrast between the original and the perturbed image: hard. A large,
strongly changed region is easy. The value lies in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from mfpo_data.backends.base import Described
from mfpo_data.imaging import mask_bbox
from mfpo_data.schema import Sample


class HeuristicDifficulty(Described):
    backend = "heuristic"

    def __init__(self, area_weight: float = 0.5, change_weight: float = 0.5):
        if area_weight < 0 or change_weight < 0 or area_weight + change_weight <= 0:
            raise ValueError("scoring weights must be >= 0 and not both 0")
        self.area_weight, self.change_weight = area_weight, change_weight

    def score(self, samples: list[Sample]) -> list[float]:
        return [self._one(s) for s in samples]

    def _one(self, sample: Sample) -> float:
        if sample.mask is None:
            box, count = (slice(None), slice(None)), sample.height * sample.width
        else:
            box = mask_bbox(sample.mask)
            if box is None:
                return 1.0
            count = np.count_nonzero(sample.mask[box])
        area = count / (sample.height * sample.width)
        # Outside the mask the perturbed image equals the original (the stage composites), so the summed
        # change over the mask's bounding box is the summed change over the mask.
        total = int(cv2.norm(sample.rejected_image[box], sample.image[box], cv2.NORM_L1))  # exact: integer sums
        change = min(1.0, total / (count * sample.image.shape[2]) / 127.5)
        easy = (self.area_weight * np.sqrt(area) + self.change_weight * change) / (self.area_weight + self.change_weight)
        return float(np.clip(1.0 - easy, 0.0, 1.0))

