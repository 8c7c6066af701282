"""A small synthetic mfpo dataset (random images, the real schema) for tests that need no build."""

from __future__ import annotations

import numpy as np


QUESTIONS = ["what color is the cat?", "how many people are on the bus?", "is there a dog to the left of the car?",
             "describe the image.", "what is on the table?", "is there a bird on the chair?"]
CHOSEN = ["the cat is black.", "there are two people.", "yes, a dog.", "a person holding a cup of coffee.",
          "a cup of coffee.", "yes, a bird sitting on the chair."]
REJECTED = ["the cat is white.", "there are four people.", "no.", "a sofa and a tv.", "a book and a clock.",
            "no, there is no bird."]


def synthetic_rows(n: int = 12, seed: int = 0, size: tuple[int, int] = (40, 56)) -> list[dict]:
    """`n` rows made by `schema.to_row`, as a build makes them: the centre quarter of each random image
    is the key region, repainted with noise in the rejected image; buckets by position (thirds)."""
    from PIL import Image

    from mfpo_data.imaging import rle_encode
    from mfpo_data.schema import KeyObject, Sample, to_row

    rng = np.random.default_rng(seed)
    h, w = size
    mask = np.zeros(size, dtype=bool)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    rows = []
    for i in range(n):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        pert = img.copy()
        pert[mask] = rng.integers(0, 255, (h // 2, w // 2, 3), dtype=np.uint8).reshape(-1, 3)
        sample = Sample(
            id=f"syn-{i:04d}", source="synthetic", image_id=str(i), pair_type="caption",
            question=QUESTIONS[i % 6], chosen=CHOSEN[i % 6], rejected=REJECTED[i % 6],
            key_objects=[KeyObject("cat", (w / 4, h / 4, 3 * w / 4, 3 * h / 4), 1.0, category="cat")],
            mask=mask, perturbation="gaussian_noise", difficulty=float(i) / n,
        )  # fmt: skip
        row = to_row(sample, Image.fromarray(img), Image.fromarray(pert), rle_encode(mask))
        row["difficulty_bucket"] = ("easy", "medium", "hard")[3 * i // n]
        rows.append(row)
    return rows


def synthetic_dataset(n: int = 12, seed: int = 0):
    import datasets

    from mfpo_data.schema import features

    return datasets.Dataset.from_list(synthetic_rows(n, seed), features=features())


def write_build_output(out_dir, n: int = 12, seed: int = 0):
    """Write the dataset where a build puts it (OUT/data/train-00000-of-00001.parquet); return OUT."""
    from pathlib import Path

    from mfpo_data.layout import shard_name

    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    synthetic_dataset(n, seed).to_parquet(str(out / "data" / shard_name("train", 0, 1)))
    return out
