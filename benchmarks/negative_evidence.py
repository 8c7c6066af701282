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
    "gaussian_noise (sigma=50)": ["perturbation={backend: gaussian_noise, sigma: 50}"],
    "gaussian_noise (sigma=120)": ["perturbation={backend: gaussian_noise, sigma: 120}"],
    "blur (sigma=15)": ["perturbation={backend: blur}"],
    "box_occlusion (black)": ["perturbation={backend: box_occlusion}"],
    "opencv_inpaint": ["perturbation={backend: opencv_inpaint}"],
    "random_crop": ["perturbation={backend: random_crop}"],
    "diffusion_noise, region random 20%": ["perturbation={backend: diffusion_noise, t: 500, region: random}"],
    "diffusion_noise, region global": ["perturbation={backend: diffusion_noise, t: 500, region: global}"],
}  # fmt: skip


def appearance_kept(row: dict) -> float | None:
    """Correlation of blurred m and m' inside the row's key region (None without a key region)."""
    import cv2
    import numpy as np
    from PIL import Image

    from mfpo_data.imaging import rle_decode

    if not row["mask"]:
        return None
    mask = rle_decode(row["mask"])
    m = np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("L"), np.float32)
    mp = np.asarray(Image.open(io.BytesIO(row["rejected_images"][0]["bytes"])).convert("L"), np.float32)
    a, b = cv2.GaussianBlur(m, (0, 0), 2)[mask], cv2.GaussianBlur(mp, (0, 0), 2)[mask]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


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
        kept = [v for v in map(appearance_kept, rows) if v is not None]
        area = np.mean([r["mask_area_ratio"] for r in rows])
        print(f"| {name} | {len(rows)} | {checked} | {still} | {still / checked if checked else float('nan'):.0%} | {area:.3f} | "
              f"{np.mean(kept) if kept else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
