"""The data model: the in-pipeline `Sample` and the one `datasets.Features` of a published row.

A `Sample` flows through the build stages; each stage adds fields. `to_row` turns a finished sample
into the dict that `FEATURES` encodes. The writer, `publish`, the trainer's validation and the
dataset card all use `FEATURES` from this file, so there is one definition of the dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np


Box = tuple[float, float, float, float]  # absolute pixels (x0, y0, x1, y1): the only box format in mfpo

DIFFICULTY_BUCKETS = ("easy", "medium", "hard")

# Columns TRL's DPOTrainer consumes as they are (conversational format, typed content parts).
TRL_COLUMNS = ("images", "prompt", "chosen", "rejected")
# Columns MFPO training needs on top of them.
MFPO_COLUMNS = ("rejected_images", "image_pair_valid", "key_objects", "mask", "difficulty", "difficulty_bucket")


@dataclass
class Annotation:
    """A ground-truth instance that the source knows (COCO): category, box, polygons or RLE."""

    category: str
    box_xyxy: Box
    segmentation: Any = None  # COCO polygons [[x, y, ...], ...] or an RLE dict


@dataclass
class KeyObject:
    """One region of a key object: the phrase from the answer, where it is, how sure we are."""

    phrase: str
    box_xyxy: Box | None
    score: float
    category: str = ""
    annotation_index: int | None = None  # index into Sample.annotations when grounded from ground truth
    mask: np.ndarray | None = field(default=None, repr=False)  # bool (H, W), set by segmentation


@dataclass
class Sample:
    """One preference pair on its way through the pipeline.

    `id` is stable and source-derived; every random choice about the sample is seeded from it.
    A sample that cannot be processed is not discarded: `drop()` marks it, the stages after it
    pass it through untouched, and the writer records it in the rejects file with its reason.
    """

    id: str
    source: str
    image_id: str
    pair_type: str
    question: str
    chosen: str
    rejected: str
    image: np.ndarray | None = field(default=None, repr=False)  # RGB uint8 (H, W, 3)
    image_bytes: bytes | None = field(default=None, repr=False)  # original file bytes, embedded when lossless
    annotations: list[Annotation] = field(default_factory=list)
    target: str | None = None  # the key object phrase the pair was built around, when the source knows it
    absent_object: str | None = None  # the object the chosen answer says is NOT in the image ("No, there is no dog")
    keywords: list[str] = field(default_factory=list)
    key_objects: list[KeyObject] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False)  # union of the key objects' masks, bool (H, W)
    rejected_image: np.ndarray | None = field(default=None, repr=False)  # RGB uint8, same shape as image
    perturbation: str | None = None
    perturbation_params: dict[str, Any] = field(default_factory=dict)
    image_pair_invalid: str | None = None  # why m' leaves the chosen answer as true as m (a reason); None: a valid pair
    removal_score: tuple[float, float] | None = None  # detector score of the key object in its region on (m, m')
    image_reliance: dict[str, Any] | None = None  # per chosen-answer token log p(y|m) - log p(y|m') (stages/s6_reliance.py)
    difficulty: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dropped: tuple[str, str] | None = None  # (stage, reason)
    source_item: int | None = field(default=None, repr=False, compare=False)  # its index line (progress; not written)

    def drop(self, stage: str, reason: str) -> Sample:
        """Mark the sample as rejected by `stage`; the reason is a short snake_case code plus detail."""
        self.dropped = (stage, reason)
        self.image = self.rejected_image = self.mask = None  # free memory early
        return self

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def mask_area_ratio(self) -> float:
        """The key region's share of the image, 1.0 without one: the value `mask.mean()` gives (an exact count over
        the pixel count), in a sixth of its time."""
        return 1.0 if self.mask is None else np.count_nonzero(self.mask) / self.mask.size


@lru_cache(maxsize=1)
def features():
    """The `datasets.Features` of a published mfpo row (built on first use, so importing the schema does not
    import `datasets`)."""
    import datasets

    text_part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    turn = datasets.List({"role": datasets.Value("string"), "content": datasets.List(text_part)})
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "source": datasets.Value("string"),
            "image_id": datasets.Value("string"),
            "pair_type": datasets.Value("string"),
            "images": datasets.List(datasets.Image()),
            "prompt": turn,
            "chosen": turn,
            "rejected": turn,
            "rejected_images": datasets.List(datasets.Image()),
            "question": datasets.Value("string"),
            "chosen_text": datasets.Value("string"),
            "rejected_text": datasets.Value("string"),
            "key_objects": datasets.List(
                {
                    "phrase": datasets.Value("string"),
                    "category": datasets.Value("string"),
                    "box_xyxy": datasets.List(datasets.Value("float32"), length=4),
                    "score": datasets.Value("float32"),
                }
            ),
            "mask": {"size": datasets.List(datasets.Value("int32"), length=2), "counts": datasets.Value("string")},
            "mask_area_ratio": datasets.Value("float32"),
            "perturbation": datasets.Value("string"),
            "perturbation_params": datasets.Value("string"),
            "image_pair_valid": datasets.Value("bool"),
            "removal_score": {"before": datasets.Value("float32"), "after": datasets.Value("float32")},
            "targets_key_object": datasets.Value("bool"),
            "image_reliance": {
                "model_id": datasets.Value("string"),
                "revision": datasets.Value("string"),
                "token_ids": datasets.List(datasets.Value("int32")),
                "values": datasets.List(datasets.Value("float32")),
                "sum": datasets.Value("float32"),
            },
            "difficulty": datasets.Value("float32"),
            "difficulty_bucket": datasets.Value("string"),
            "metadata": datasets.Value("string"),
        }
    )


ARROW_SCHEMA_FILE = Path(__file__).parent / "assets" / "schema.arrow"


@lru_cache(maxsize=1)
def arrow_schema():
    """`features().arrow_schema` (with its Hugging Face metadata), read from the copy shipped in the
    package: build workers write rows with it without importing `datasets` (about 0.6 s and 150 MB per
    process). `tests/data/test_schema.py` checks the copy against `features()`; after changing
    `features()`, run `python -m mfpo_data.schema` to rewrite it."""
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(ARROW_SCHEMA_FILE.read_bytes()))


def user_turn(question: str) -> list[dict]:
    """The prompt column: one user turn with an image part and the question (TRL conversational format)."""
    return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]}]


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


TARGETED_REGIONS = ("key_object", "inserted")  # regions placed on the key object; the others are ablations
# Columns added after the first datasets were built. A dataset without them still loads and trains
# (`validate.with_later_columns` adds them in the meaning they had before they existed): a row's negative
# targets the key object unless its perturbation_params say otherwise, and no row has image reliance.
LATER_COLUMNS = ("targets_key_object", "image_reliance")


def targets_key_object(perturbation_params: dict[str, Any]) -> bool:
    """Whether m' was made by changing the key object's region: False for the negatives that do not aim at it
    by construction (a `random` box, the `global` image, a `random_crop`, the `whole_image` fallback)."""
    return perturbation_params.get("region") in TARGETED_REGIONS


def to_row(sample: Sample, original: dict, rejected: dict, mask_rle: dict | None) -> dict:
    """The row `FEATURES` encodes. Images come pre-encoded as `{"bytes": ..., "path": None}`."""
    key_objects = [
        {
            "phrase": k.phrase,
            "category": k.category,
            "box_xyxy": [float(v) for v in k.box_xyxy] if k.box_xyxy is not None else None,
            "score": float(k.score),
        }
        for k in sample.key_objects
    ]
    return {
        "id": sample.id,
        "source": sample.source,
        "image_id": sample.image_id,
        "pair_type": sample.pair_type,
        "images": [original],
        "prompt": user_turn(sample.question),
        "chosen": assistant_turn(sample.chosen),
        "rejected": assistant_turn(sample.rejected),
        "rejected_images": [rejected],
        "question": sample.question,
        "chosen_text": sample.chosen,
        "rejected_text": sample.rejected,
        "key_objects": key_objects,
        "mask": mask_rle,
        "mask_area_ratio": sample.mask_area_ratio(),
        "perturbation": sample.perturbation,
        "perturbation_params": json.dumps(sample.perturbation_params, sort_keys=True),
        "image_pair_valid": sample.image_pair_invalid is None,
        "removal_score": None if sample.removal_score is None else dict(zip(("before", "after"), map(float, sample.removal_score))),
        "targets_key_object": targets_key_object(sample.perturbation_params),
        "image_reliance": sample.image_reliance,
        "difficulty": sample.difficulty,
        "difficulty_bucket": None,  # set after all ranks finish (tertiles over the whole build)
        "metadata": json.dumps(sample.metadata, sort_keys=True, default=str),
    }


if __name__ == "__main__":  # python -m mfpo_data.schema: rewrite the shipped Arrow schema from features()
    ARROW_SCHEMA_FILE.write_bytes(features().arrow_schema.serialize().to_pybytes())
    print(f"wrote {ARROW_SCHEMA_FILE}")
