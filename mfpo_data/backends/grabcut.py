"""GrabCut (OpenCV) from each grounded box: a segmentation without model weights.

A box that GrabCut cannot work from (one that covers the whole image and leaves no background to
learn, or one under 2 pixels) or where it finds no foreground gives `on_failure`: the box itself
(`box`, default) or an empty mask (`empty`, so that object adds nothing to the key region).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from mfpo_data.imaging import box_mask, grabcut_mask
from mfpo_data.schema import Sample


class GrabCutSegmenter:
    def __init__(self, iterations: int = 5, on_failure: Literal["box", "empty"] = "box"):
        if iterations < 1:
            raise ValueError("segmentation.iterations must be >= 1")
        self.iterations, self.on_failure = iterations, on_failure

    def segment(self, samples: list[Sample]) -> list[list[np.ndarray]]:
        out = []
        for s in samples:
            masks = []
            for obj in s.key_objects:
                m = grabcut_mask(s.image, obj.box_xyxy, self.iterations)
                if m is None:
                    m = box_mask(obj.box_xyxy, s.height, s.width) if self.on_failure == "box" else np.zeros((s.height, s.width), bool)
                masks.append(m)
            out.append(masks)
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": "grabcut", "model_id": None, "revision": None, "iterations": self.iterations,
                "on_failure": self.on_failure}
