"""Load an mfpo dataset, check it has what MFPO training needs, and split it into curriculum stages.

A dataset is one of:
  * a build output folder (`OUT/data/train-*.parquet`, see `mfpo_data.layout`), also what
    `mfpo-train precompute-ref` writes;
  * a folder `datasets.load_dataset` reads (a published or dry-run copy) or a parquet file;
  * a Hub id (`ORG/NAME`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

from mfpo_data.schema import TRL_COLUMNS


logger = logging.getLogger(__name__)

# Precomputed reference log-probs, one float per row and sequence (`mfpo-train precompute-ref`).
REF_COLUMNS = {"chosen": "ref_chosen_logps", "rejected": "ref_rejected_logps", "perturbed": "ref_perturbed_logps"}
# Which reference produced them: "<model id>@<revision>|max_length=<n>". Training refuses a mismatch.
REF_KEY_COLUMN = "ref_logps_model"
# The columns the trainer reads; the rest (key_objects, mask, ...) are dropped before collation.
TRAIN_COLUMNS = ("id", *TRL_COLUMNS, "rejected_images", "image_pair_valid", "difficulty_bucket", "image_reliance")


def load_preference_dataset(source: str | Path, split: str = "train", revision: str | None = None, *,
                            image_term: bool = True):
    """Load `source` (a Hub id pinned to `revision` when given) and check it against `mfpo_data.schema.features()`.

    With `image_term` (MFPO's L_image is trained), a dataset that lacks the MFPO columns (for example a
    TRL-only preference set) or has them with the wrong types is refused with one `SchemaError` naming
    every such column and what the image term needs. Without it, a standard TRL preference dataset
    (`images`, `prompt`, `chosen`, `rejected`) is enough: plain DPO (plus the margin term). Extra columns
    are kept (the `ref_*_logps` columns of `precompute-ref` among them).
    """
    from mfpo_data.errors import SchemaError
    from mfpo_data.validate import load_and_validate

    try:
        return load_and_validate(str(source), split=split, revision=revision,
                                 required=None if image_term else TRL_COLUMNS)
    except SchemaError as e:
        if not image_term or "missing columns" not in str(e):
            raise
        raise SchemaError(f"{e}; the image term (loss.image_weight > 0) needs rejected_images (the perturbed image) "
                          "and the curriculum needs difficulty_bucket: build the data with mfpo-data, or set "
                          "loss.image_weight=0 to train plain DPO on TRL's columns (images, prompt, chosen, "
                          "rejected)") from None


def trainer_columns(ds) -> list[str]:
    extra = [c for c in (*REF_COLUMNS.values(), REF_KEY_COLUMN) if c in ds.column_names]
    return [c for c in TRAIN_COLUMNS if c in ds.column_names] + extra


def reference_key(model_id: str, revision: str | None, max_length: int | None) -> str:
    return f"{model_id}@{revision or 'main'}|max_length={max_length}"


def has_reference_for(ds, key: str) -> bool:
    """True when `ds` carries precomputed reference log-probs made by the reference named `key`."""
    if REF_KEY_COLUMN not in ds.column_names or any(c not in ds.column_names for c in REF_COLUMNS.values()):
        return False
    keys = set(ds.unique(REF_KEY_COLUMN))
    keys.discard(None)
    return keys == {key}


def split_stages(ds, stages: list[str]) -> list[tuple[str, object]]:
    """[(stage, rows)] in training order. `["all"]` is one stage over every row (curriculum: none)."""
    if stages == ["all"]:
        return [("all", ds)]
    if "difficulty_bucket" not in ds.column_names:
        logger.warning("the dataset has no difficulty_bucket column: curriculum %s off, one stage over all %d rows",
                       stages, len(ds))
        return [("all", ds)]
    buckets = ds.with_format(None)["difficulty_bucket"]  # one column read; images are not decoded
    out = []
    for stage in stages:
        idx = [i for i, b in enumerate(buckets) if b == stage]
        if not idx:
            logger.warning("curriculum stage %r has no rows; skipped", stage)
            continue
        out.append((stage, ds.select(idx)))
    left = sum(1 for b in buckets if b not in stages)
    if left:
        logger.warning("%d rows have a difficulty_bucket outside the curriculum %s and are not trained on", left, stages)
    return out


class StageBatchSampler:
    """Batches of row indices for one (stage, epoch): a seeded permutation, this rank's share, from `start`.

    The order depends only on (seed, stage_index, epoch), so a resumed run skips the `start` batches it
    has already trained on and sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, num_rows: int, batch_size: int, *, seed: int, stage_index: int, epoch: int,
                 rank: int = 0, world_size: int = 1, start: int = 0, shuffle: bool = True):
        import torch

        if shuffle:
            g = torch.Generator().manual_seed(seed * 1_000_003 + stage_index * 1_009 + epoch)
            order = torch.randperm(num_rows, generator=g).tolist()
        else:
            order = list(range(num_rows))
        per_rank = math.ceil(num_rows / world_size)
        order = (order + order[: per_rank * world_size - num_rows])[rank::world_size]  # pad so ranks stay in step
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self.start = start

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches[self.start :]

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start)

    @staticmethod
    def num_batches(num_rows: int, batch_size: int, world_size: int = 1) -> int:
        return math.ceil(math.ceil(num_rows / world_size) / batch_size)


def dry_run(cfg) -> str:
    """What `mfpo-train --dry-run` checks before any model loads (the config was checked when it loaded):
    the dataset loads and has MFPO's columns, `reference: precomputed` finds its columns, and the
    curriculum stages have rows. Returns one line per finding; a problem raises a one-line error."""
    from mfpo_train.errors import TrainingError

    ds = load_preference_dataset(cfg.data.dataset, split=cfg.data.split, revision=cfg.data.revision,
                                 image_term=cfg.loss.image_weight > 0)
    if cfg.data.max_samples is not None:
        ds = ds.select(range(min(cfg.data.max_samples, len(ds))))
    key = reference_key(cfg.model.name_or_path, cfg.model.revision, cfg.data.max_length)
    available = has_reference_for(ds, key)
    if cfg.reference == "precomputed" and not available:
        raise TrainingError(f"reference: precomputed, but {cfg.data.dataset} has no reference log-probs for {key}")
    stages = split_stages(ds.select_columns(trainer_columns(ds)), cfg.stages)
    if not stages:
        raise TrainingError(f"no rows to train on in {cfg.data.dataset} for curriculum {cfg.stages}")
    reference = "precomputed columns" if cfg.reference != "model" and available else f"{cfg.model.name_or_path} (forward)"
    reasons, ids = untrainable_rows(ds.select_columns(trainer_columns(ds)))
    skipped = (f"; {len(ids)} rows cannot be trained and will be skipped ("
               + ", ".join(f"{why} {n}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
               + f"; ids {', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})") if ids else ""
    return (f"ok: {cfg.data.dataset} split {cfg.data.split}: {len(ds)} rows with MFPO's columns; "
            f"stages {', '.join(f'{name} {len(rows)}' for name, rows in stages)}; reference {reference}{skipped}")  # fmt: skip


def row_problem(row: dict) -> str | None:
    """Why a row cannot be trained on (None when it can): no image, a perturbed image for each original
    missing, a prompt whose image parts do not match its images, an empty chosen or rejected answer.

    `images` (and `rejected_images`) may be decoded images or undecoded `{bytes, path}` records.
    """
    images = row.get("images") or []
    if not images:
        return "no image"
    if "rejected_images" in row and len(row["rejected_images"] or []) != len(images):
        return f"{len(images)} images but {len(row['rejected_images'] or [])} rejected_images"
    parts = sum(1 for m in row.get("prompt") or [] if isinstance(m.get("content"), list)
                for p in m["content"] if p.get("type") == "image")
    if parts != len(images):
        return f"the prompt has {parts} image parts for {len(images)} images"
    for col in ("chosen", "rejected"):
        if not _answer_text(row.get(col)).strip():
            return f"empty {col} answer"
    return None


def _answer_text(messages) -> str:
    text = []
    for m in messages or []:
        content = m.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text += [p.get("text") or "" for p in parts if p.get("type") == "text"]
    return "".join(text)


def untrainable_rows(ds) -> tuple[dict[str, int], list]:
    """({reason: rows}, ids of those rows) for every row `row_problem` refuses or whose image does not decode;
    reads the image bytes without decoding the pixels (what `--dry-run` checks)."""
    import io
    from collections import Counter

    import datasets
    from PIL import Image

    plain = ds
    for col in ("images", "rejected_images"):
        if col in ds.column_names:
            plain = plain.cast_column(col, datasets.List(datasets.Image(decode=False)))
    reasons: Counter[str] = Counter()
    ids = []
    for i, row in enumerate(plain):
        why = row_problem(row)
        if why is None:
            for image in [*(row.get("images") or []), *(row.get("rejected_images") or [])]:
                try:
                    with Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]) as im:
                        im.verify()
                except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
                    why = f"image cannot be decoded ({type(e).__name__})"
                    break
        if why is not None:
            reasons[why.split(" (")[0] if why.startswith("image") else _reason_kind(why)] += 1
            ids.append(row.get("id", f"#{i}"))
    return dict(reasons), ids


def _reason_kind(why: str) -> str:
    """'2 images but 1 rejected_images' -> 'images and rejected_images differ in count' (for counting)."""
    if "rejected_images" in why:
        return "images and rejected_images differ in count"
    if "image parts" in why:
        return "prompt image parts differ from images"
    return why


class Unusable:
    """What `DecodingRows` gives for a row that cannot be trained on: `undecodable` or another reason."""

    def __init__(self, reason: str):
        self.reason = reason


class DecodingRows:
    """Rows of `ds` for the DataLoader; a row that cannot be trained comes back as `Unusable`, not an error.

    `datasets` decodes images when a row is read, so one corrupt image would otherwise abort the run; a row
    `row_problem` refuses (an empty answer, mismatched image counts) would end in a traceback inside the
    processor. `skip_undecodable` drops those rows before collation and counts them (`num_undecodable`,
    `num_invalid`).
    """

    def __init__(self, ds):
        self.ds = ds
        self.ids = ds.with_format(None)["id"] if "id" in ds.column_names else None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        row_id = self.ids[i] if self.ids is not None else f"#{i}"
        try:
            row = self.ds[i]
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, ValueError, ... for bad image bytes
            logger.warning("row %s: image cannot be decoded (%s: %s); pair skipped", row_id, type(e).__name__, e)
            return Unusable("undecodable")
        why = row_problem(row)
        if why is not None:
            logger.warning("row %s: %s; pair skipped", row_id, why)
            return Unusable(why)
        return row


def skip_undecodable(collate):
    """Wrap a collator: drop the `Unusable` rows of `DecodingRows`; count them in `num_undecodable` (images that
    do not decode) and `num_invalid` (rows `row_problem` refuses)."""

    def collate_fn(rows: list):
        kept = [r for r in rows if not isinstance(r, Unusable)]
        batch = collate(kept) if kept else {"num_pairs": 0, "num_dropped": 0}
        batch["num_undecodable"] = sum(isinstance(r, Unusable) and r.reason == "undecodable" for r in rows)
        batch["num_invalid"] = sum(isinstance(r, Unusable) and r.reason != "undecodable" for r in rows)
        return batch

    return collate_fn
