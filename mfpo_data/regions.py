"""Seeded boxes for the perturbation stage: a random box of a given area share (the paper's Table 8
"random 20%" negative) and a plausible place to paint an absent object into (beside the present
object it was drawn from, at its scale and on its ground line). Boxes are integer pixel xyxy."""

from __future__ import annotations

import math

import numpy as np


IntBox = tuple[int, int, int, int]


def random_box(height: int, width: int, area: float, rng: np.random.Generator, max_ratio: float = 2.0) -> IntBox:
    """A box covering `area` of the image (to the nearest pixel), aspect ratio log-uniform in
    [1/max_ratio, max_ratio] (clamped where the image is too narrow), placed uniformly at random."""
    target = area * height * width
    ratio = math.exp(rng.uniform(-math.log(max_ratio), math.log(max_ratio)))  # box width / height
    bw = min(width, max(1, round(math.sqrt(target * ratio))))
    bh = min(height, max(1, round(target / bw)))
    bw = min(width, max(1, round(target / bh)))  # refit the width after a clamped height
    x0 = int(rng.integers(0, width - bw + 1))
    y0 = int(rng.integers(0, height - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def insertion_box(height: int, width: int, anchor, rng: np.random.Generator) -> IntBox:
    """Where to paint an absent object: beside `anchor` (the xyxy box of the present object it was
    drawn from; COCO's absent-but-plausible objects appear next to such objects), 70-100% of its size,
    sharing its bottom edge, on a random side that fits. Without an anchor: a box of 15% of the image
    in its lower half."""
    if anchor is None:
        x0, y0, x1, y1 = random_box(height // 2 or 1, width, 0.3, rng)
        return x0, y0 + height - (height // 2 or 1), x1, y1 + height - (height // 2 or 1)
    ax0, ay0, ax1, ay1 = (float(v) for v in anchor)
    scale = rng.uniform(0.7, 1.0)
    bw = int(np.clip(round((ax1 - ax0) * scale), 4, max(4, width // 2)))
    bh = int(np.clip(round((ay1 - ay0) * scale), 4, max(4, height // 2)))
    bw, bh = min(bw, width), min(bh, height)
    left, right = ax0 - bw, ax1
    sides = [x for x in (left, right) if 0 <= x <= width - bw]
    if sides:
        x0 = sides[int(rng.integers(len(sides)))]
    else:  # no room beside it: as far to one side as the image allows
        x0 = 0 if ax0 >= width - ax1 else width - bw
    y1 = min(height, max(bh, round(ay1)))
    x0 = int(round(x0))
    return x0, y1 - bh, x0 + bw, y1
