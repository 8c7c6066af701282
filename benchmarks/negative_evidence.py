"""The removal evidence of every kind of negative, and what `region_shape` changes, on the bundled sample.

One build per negative, the `coco_grounded` recipe with its grounder swapped for the `detector` backend
(`--detector`: a model id or folder; default a tiny random RT-DETR whose labels are the sample's categories,
which exercises the pipeline, not a real detector's verdict) and GrabCut masks from its boxes. Per build:
rows, rows the removal check scored, rows whose key object is still detected inside its region on m', the
mean key-region share of the image, and how much of the region's appearance m' keeps: the correlation of
m and m' inside the region after a Gaussian blur of 2 px (what survives of the object's shape and shading;
a model-free measure, 1 = unchanged).

    python -m benchmarks.negative_evidence [--limit 15] [--detector PATH]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")

NEGATIVES = {
    "diffusion_noise (t=500)": ["perturbation={backend: diffusion_noise, t: 500}"],
    "diffusion_noise, region_shape dilated 8 px": ["perturbation={backend: diffusion_noise, t: 500, region_shape: dilated, region_dilation: 8}"],
    "diffusion_noise, region_shape box": ["perturbation={backend: diffusion_noise, t: 500, region_shape: box}"],
    "gaussian_noise (sigma=50, weak)": ["perturbation={backend: gaussian_noise, sigma: 50}"],
    "gaussian_noise (sigma=400, the default)": ["perturbation={backend: gaussian_noise, sigma: 400}"],
    "blur (sigma=15)": ["perturbation={backend: blur}"],
    "box_occlusion (black)": ["perturbation={backend: box_occlusion}"],
    "opencv_inpaint": ["perturbation={backend: opencv_inpaint}"],
    "random_crop": ["perturbation={backend: random_crop}"],
    "diffusion_noise, region random 20%": ["perturbation={backend: diffusion_noise, t: 500, region: random}"],
    "diffusion_noise, region global": ["perturbation={backend: diffusion_noise, t: 500, region: global}"],
}  # fmt: skip


def appearance_kept(m, m_prime, mask, blur: float = 2.0) -> float | None:
    """Correlation of m and m' (grey levels) inside `mask` after a Gaussian blur of `blur` px: how much of the
    region's shape and shading survives (1 = unchanged; None when the region is a point or flat)."""
    import cv2
    import numpy as np

    grey = [np.asarray(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), np.float32) for x in (m, m_prime)]
    a, b = (cv2.GaussianBlur(g, (0, 0), blur)[mask] for g in grey)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def row_images(row: dict):
    """A row's m and m' (RGB uint8) and its stored region (None without one)."""
    import numpy as np
    from PIL import Image

    from mfpo_data.imaging import rle_decode

    m, mp = (np.asarray(Image.open(io.BytesIO(row[c][0]["bytes"])).convert("RGB")) for c in ("images", "rejected_images"))
    return m, mp, (rle_decode(row["mask"]) if row["mask"] else None)


def row_appearance_kept(row: dict) -> float | None:
    m, mp, mask = row_images(row)
    return None if mask is None else appearance_kept(m, mp, mask)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=15)
    ap.add_argument("--detector", default=None)
    args = ap.parse_args()

    import numpy as np

    from mfpo_data.backends.tiny import make_tiny_detector
    from mfpo_data.config import load_recipe
    from mfpo_data.pipeline.build import build_dataset

    root = Path(tempfile.mkdtemp())
    detector = args.detector or str(make_tiny_detector(
        root / "detector", kind="rtdetr", labels=["person", "dog", "cat", "bird", "apple", "orange", "motorcycle", "cup", "car"]))
    common = ["keywords.backend=vocabulary", f"grounding={{backend: detector, model_id: {detector}, revision: null, "
              "threshold: 0.05, device: cpu}", "segmentation={backend: grabcut}", "scoring={backend: heuristic}",
              "filters.max_mask_area_ratio=1.0", f"source.limit={args.limit}", "output.progress=false"]  # fmt: skip
    print(f"bundled sample, {args.limit} images, grounder: detector {'(tiny random RT-DETR)' if not args.detector else detector}")
    print("| negative | rows | checked | still detected | share | key-region share of image | appearance kept (corr) |")
    print("|---|---|---|---|---|---|---|")
    import pyarrow.parquet as pq

    for name, overrides in NEGATIVES.items():
        layout = build_dataset(load_recipe("coco_grounded", [*common, *overrides, f"output.dir={root / str(abs(hash(name)))}"]))
        rows = [r for shard in layout.final_shards() for r in pq.read_table(shard).to_pylist()]
        stats = layout.read_stats()
        checked, still = sum(stats["removal_checked"].values()), sum(stats["removal_still_detected"].values())
        kept = [v for v in map(row_appearance_kept, rows) if v is not None]
        area = np.mean([r["mask_area_ratio"] for r in rows])
        print(f"| {name} | {len(rows)} | {checked} | {still} | {still / checked if checked else float('nan'):.0%} | {area:.3f} | "
              f"{np.mean(kept) if kept else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
