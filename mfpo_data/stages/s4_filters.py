"""Filters: drop samples by their key region (none, too small, too large), each with a reason that is
counted and written to the rejects file. (Other stages drop too, but only a sample they cannot process.)"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from mfpo_data.schema import Sample
from mfpo_data.stages.base import Stage


class RegionFilter(Stage):
    """Decide what happens to samples by their key region.

    `no_region="fallback"` keeps a sample with no key region; its whole image is perturbed (the
    paper's fallback for about 10% of samples). `"drop"` drops it. Regions smaller or larger than
    the area bounds (as a fraction of the image) are dropped.
    """

    name = "filters"

    def __init__(
        self,
        no_region: Literal["fallback", "drop"] = "fallback",
        min_mask_area_ratio: float = 0.0,
        max_mask_area_ratio: float = 1.0,
    ):
        super().__init__()
        self.no_region, self.min_area, self.max_area = no_region, min_mask_area_ratio, max_mask_area_ratio

    def run(self, data: Iterable[Sample], rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        for sample in data:
            if sample.dropped is None:
                reason = self.reason(sample)
                if reason:
                    sample.drop(self.name, reason)
                    self.stat_update(f"dropped/{reason.split(':')[0]}")
                else:
                    self.stat_update("kept")
            yield sample

    def reason(self, sample: Sample) -> str | None:
        if sample.mask is None:
            if self.no_region == "drop":
                return "no_key_region: no key object was grounded"
            return None
        area = sample.mask_area_ratio()
        if area < self.min_area:
            return f"region_too_small: {area:.4f} < {self.min_area}"
        if area > self.max_area:
            return f"region_too_large: {area:.4f} > {self.max_area}"
        return None
