"""How strong `gaussian_noise` must be to take as much of the key object's appearance as the paper's negative.

Model-free, on the bundled sample: the default build (`coco`: ground-truth masks) gives each row's image and
key mask; each candidate negative is applied inside that mask exactly as a build applies it (the
perturber, then `composite`), and the appearance it keeps is the correlation of m and m' inside the mask
after a Gaussian blur (`negative_evidence.appearance_kept`) at 1, 2 and 4 px: the object's shape and
shading at the scales a detector or a VLM's vision encoder reads, with the per-pixel noise averaged
away. Reference: `diffusion_noise` at t=500 (the paper's best), which scales the object's contrast
to 0.28 under noise of std 0.96. Also the share of the mask's pixels clipped to 0 or 255 (clipping is
where additive noise starts to erase the image rather than hide it).

    python -m benchmarks.gaussian_strength [--limit 40] [--sigmas 50,80,120,...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
BLURS = (1.0, 2.0, 4.0)
LIMIT = 40  # source items: 51 rows, 19 distinct key masks


def key_regions(limit: int, out_dir: Path) -> tuple[list[tuple], int]:
    """(row id, m, key mask) per distinct (image, mask) of the default build of the bundled sample (ground-truth
    masks; presence and caption rows often share both), and the build's row count."""
    import pyarrow.parquet as pq

    from benchmarks.negative_evidence import row_images
    from mfpo_data.config import load_recipe
    from mfpo_data.pipeline.build import build_dataset

    layout = build_dataset(load_recipe("coco", [f"source.limit={limit}", "output.progress=false", f"output.dir={out_dir}"]))
    rows = [r for shard in layout.final_shards() for r in pq.read_table(shard).to_pylist()]
    regions, seen = [], set()
    for row in rows:
        m, _, mask = row_images(row)
        key = (row["image_id"], None if mask is None else mask.tobytes())
        if mask is not None and key not in seen:
            seen.add(key)
            regions.append((row["id"], m, mask))
    return regions, len(rows)


def appearance_table(regions: list[tuple], perturber, blurs=BLURS) -> dict:
    """Mean and max appearance kept per blur over `regions`, and the mean share of mask pixels clipped to 0 or 255,
    with each region perturbed as a build does it (seed from the row id, then `composite`)."""
    import numpy as np

    from benchmarks.negative_evidence import appearance_kept
    from mfpo_data.imaging import composite
    from mfpo_data.schema import Sample
    from mfpo_data.seeding import sample_seed

    kept = {b: [] for b in blurs}
    clipped = []
    for sample_id, m, mask in regions:
        sample = Sample(sample_id, "coco", sample_id, "caption", "q", "a", "b", image=m, mask=mask)
        mp = composite(m, perturber.perturb([sample], [sample_seed(0, sample_id, "perturbation")])[0].image, mask)
        for b in blurs:
            value = appearance_kept(m, mp, mask, blur=b)
            if value is not None:
                kept[b].append(value)
        clipped.append(float(np.isin(mp[mask], (0, 255)).mean()))
    return {"mean": {b: float(np.mean(v)) for b, v in kept.items()}, "max": {b: float(np.max(v)) for b, v in kept.items()},
            "clipped": float(np.mean(clipped))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=LIMIT, help="source items of the bundled sample")
    ap.add_argument("--sigmas", default="50,80,120,160,200,255,320,400,500,640,1000")
    args = ap.parse_args()

    import numpy as np

    from mfpo_data.backends.perturbers import DiffusionNoisePerturber, GaussianNoisePerturber

    regions, n_rows = key_regions(args.limit, Path(tempfile.mkdtemp()) / "build")
    candidates = {"diffusion_noise t=500 (the paper's)": DiffusionNoisePerturber(t=500)}
    candidates.update({f"gaussian_noise sigma={s}": GaussianNoisePerturber(sigma=float(s)) for s in args.sigmas.split(",")})
    print(f"bundled sample: {len(regions)} distinct key masks from {n_rows} rows (source.limit={args.limit}), "
          f"mean mask share of the image {np.mean([mk.mean() for _, _, mk in regions]):.3f}")
    print("| negative | " + " | ".join(f"appearance kept, blur {b:g} px (mean / max)" for b in BLURS) + " | pixels clipped |")
    print("|---|" + "---|" * (len(BLURS) + 1))
    for name, perturber in candidates.items():
        table = appearance_table(regions, perturber)
        cells = " | ".join(f"{table['mean'][b]:.2f} / {table['max'][b]:.2f}" for b in BLURS)
        print(f"| {name} | {cells} | {table['clipped']:.0%} |")


if __name__ == "__main__":
    main()
