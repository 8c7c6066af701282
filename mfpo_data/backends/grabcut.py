"""GrabCut (OpenCV) from each grounded box: a segmentation without model weights.

A box that GrabCut cannot work from (one that covers the whole image and leaves no background to
learn, or one under 2 pixels) or where it finds no foreground gives `on_failure`: the box itself
(`box`, default) or an empty mask (`empty`, so that object adds nothing to the key region).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mfpo_data.backends.base import NO_WEIGHTS, Described
from mfpo_data.imaging import box_mask, clip_box
from mfpo_data.schema import Sample


class GrabCutSegmenter(Described):
    backend = "grabcut"
    described = NO_WEIGHTS

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


def grabcut_mask(image: np.ndarray, box, iterations: int = 5, margin: int = 1) -> np.ndarray | None:
    """OpenCV GrabCut initialised from an xyxy box -> bool (H, W) foreground, or None when it cannot run
    (a box that leaves no background to learn from, a box under 2 pixels) or finds no foreground.

    Deterministic: OpenCV's random generator is reseeded before each call.
    """
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = clip_box(box, w, h)
    x0, y0 = int(np.floor(x0)), int(np.floor(y0))
    x1, y1 = int(np.ceil(x1)), int(np.ceil(y1))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    x0, y0 = max(x0, margin), max(y0, margin)
    x1, y1 = min(x1, w - margin), min(y1, h - margin)
    if x1 - x0 < 2 or y1 - y0 < 2 or (x1 - x0) * (y1 - y0) >= h * w:
        return None
    labels = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), labels, (x0, y0, x1 - x0, y1 - y0), bgd, fgd,
                    iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return fg if fg.any() else None
