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
    from PIL import Image

    from mfpo_data.schema import assistant_turn, user_turn

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        pert = img.copy()
        h, w = size
        pert[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = rng.integers(0, 255, (h // 2, w // 2, 3), dtype=np.uint8)
        q, c, r = QUESTIONS[i % 6], CHOSEN[i % 6], REJECTED[i % 6]
        rows.append({
            "id": f"syn-{i:04d}", "source": "synthetic", "image_id": str(i), "pair_type": "caption",
            "images": [Image.fromarray(img)], "prompt": user_turn(q), "chosen": assistant_turn(c),
            "rejected": assistant_turn(r), "rejected_images": [Image.fromarray(pert)], "question": q,
            "chosen_text": c, "rejected_text": r,
            "key_objects": [{"phrase": "cat", "category": "cat", "box_xyxy": [w / 4, h / 4, 3 * w / 4, 3 * h / 4],
                             "score": 1.0}],
            "mask": {"size": [h, w], "counts": ""}, "mask_area_ratio": 0.25, "perturbation": "gaussian_noise",
            "perturbation_params": "{}", "difficulty": float(i) / n, "difficulty_bucket": ("easy", "medium", "hard")[3 * i // n],
            "metadata": "{}",
        })
    return rows


def synthetic_dataset(n: int = 12, seed: int = 0):
    import datasets

    from mfpo_data.schema import features

    return datasets.Dataset.from_list(synthetic_rows(n, seed), features=features())


def write_build_output(out_dir, n: int = 12, seed: int = 0):
    """Write the dataset where a build puts it (OUT/data/train-00000-of-00001.parquet); return OUT."""
    from pathlib import Path

    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    synthetic_dataset(n, seed).to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    return out
