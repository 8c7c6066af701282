"""What the `jsonl` and `hf` sources share: ready-made preference pairs (question, chosen, rejected, image).

The index (`sources/base.py`) holds one line per input record, in input order: its text (never its
image) with columns mapped by a preset, validated, with an id. Records that cannot be used are
index lines too, carrying their reject reason, so the rank that owns the line writes them to the
rejects file and no input ever goes missing:

- `bad_encoding` (a JSONL line that is not UTF-8) and `bad_json` (not a JSON object), with the line number;
- the field checks of `sources/validate.py`: `missing_field`, `bad_field` (not a string), `bad_text` (a NUL
  byte, a lone surrogate), `empty_text`, `bad_id`, `bad_path` and `path_too_long` (an image path that is
  encoded data or longer than the OS allows), `too_deep` (a metadata column nested too deeply);
- `same_answers` (chosen == rejected) and `duplicate_id` (the first record with an id is kept);
- what a record preset (`sources/presets/`) rejects: a malformed `text` (RLHF-V), a tie or a missing
  rating (VLFeedback).

Each rank decodes the images of its own lines with the sources' one image reader, which drops an
unreadable image with its reason as it does for COCO.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mfpo_data.errors import ConfigError
from mfpo_data.imaging import ImageError
from mfpo_data.schema import Sample
from mfpo_data.sources.base import IndexedSource, read_image
from mfpo_data.sources.presets import META, PAIR, RECORD_PRESETS, REJECT, Preset
from mfpo_data.sources.validate import check_depth, check_id, check_path, check_text


FIELDS = ("id", "question", "chosen", "rejected", "image")
TEXT_FIELDS = ("question", "chosen", "rejected")
# Column mappings by schema: our field -> the source's column (a list of columns joins their values with ':').
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"id": "id", "question": "question", "chosen": "chosen", "rejected": "rejected", "image": "image"},
    # RLAIF-V-Dataset / RLHF-V: `idx` is a per-subset index, so the id joins it with `ds_name`.
    "rlaif_v": {"id": ["ds_name", "idx"], "question": "question", "chosen": "chosen", "rejected": "rejected", "image": "image"},
}
# `source.preset`: the mappings above and the record presets (RLHF-V's JSON `text`, VLFeedback's ratings).
PresetName = Literal["default", "rlaif_v", "rlhf_v", "vlfeedback"]


def make_preset(name: str, options: dict[str, Any] | None) -> Preset:
    """The preset object of `source.preset`: a record preset, or one that passes records through unchanged."""
    if name in RECORD_PRESETS:
        return RECORD_PRESETS[name](options)
    if name not in PRESETS:
        raise ConfigError(f"'source.preset' is '{name}', expected one of: {', '.join([*PRESETS, *RECORD_PRESETS])}")
    preset = Preset(options)
    preset.name = name
    return preset


def resolve_columns(preset: str | Preset, columns: dict[str, Any] | None) -> dict[str, Any]:
    preset = preset if isinstance(preset, Preset) else make_preset(preset, None)
    out = dict(preset.columns or PRESETS[preset.name])
    for key, value in (columns or {}).items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key 'source.columns.{key}' (allowed: {', '.join(FIELDS)})")
        if key in preset.produced:
            raise ConfigError(f"'source.columns.{key}' cannot be set with preset {preset.name}: the preset reads it from {', '.join(preset.inputs)}")
        out[key] = value
    return out


def content_id(*parts: Any) -> str:
    """A stable id from a record's content: the first 16 hex digits of sha256 over its canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


class RecordSource(IndexedSource):
    """Base of the sources that read finished text pairs. Subclasses yield raw records and open images."""

    kind = "external"  # the `source` column of the rows
    where = "record"  # how a position is named in reasons: "line 7", "row 7"

    def __init__(
        self,
        columns: dict[str, Any] | None,
        preset: str,
        image_root: str | None,
        metadata_columns: list[str] | None,
        limit: int | None,
        max_image_pixels: int,
        seed: int,
        index_path: str | None,
        preset_options: dict[str, Any] | None = None,
    ):
        super().__init__(max_image_pixels, seed, index_path)
        self.preset = make_preset(preset, preset_options)
        self.columns = resolve_columns(self.preset, columns)
        self.explicit_columns = set(columns or ())  # a preset's `id` column may be absent (ids are then hashes)
        self.image_root = Path(image_root).expanduser() if image_root else None
        self.metadata_columns = list(metadata_columns or [])
        # the preset's provenance columns, where a record has them (after the user's, which are always written)
        self.preset_metadata = [c for c in self.preset.metadata if c not in self.metadata_columns]
        self.limit = limit

    # -- for subclasses ---------------------------------------------------------------------------
    def records(self) -> Iterator[tuple[int, dict | str]]:
        """`(position, record)` in input order; `record` is the raw mapping or a reject reason."""
        raise NotImplementedError

    def open_images(self) -> Any:
        """Per-rank state needed to read images (an open dataset); None when images are files."""
        return None

    def image_bytes(self, entry: dict, state: Any) -> Any:
        """The image of an index entry: bytes, a decoded array, or a path (str) under `image_root`."""
        return entry["image"]

    def image_ref(self, record: dict) -> Any:
        """What the index keeps of a record's image (a path, or None when the image is read later by position)."""
        value = self.field(record, "image")
        return value if isinstance(value, str) else None

    # -- run once, before the ranks -----------------------------------------------------------------
    def field(self, record: dict, name: str) -> Any:
        column = self.columns.get(name)
        if isinstance(column, list):
            values = [record.get(c) for c in column]
            return None if any(v is None for v in values) else ":".join(str(v) for v in values)
        value = record.get(column) if column else None
        if value is None and name == "image" and self.preset.image_fallback and "image" not in self.explicit_columns:
            value = record.get(self.preset.image_fallback)
        return value

    def entry(self, position: int, record: dict | str) -> dict:
        """The index entry of one record: the fields a sample needs, or a reject."""
        if isinstance(record, str):
            return {"id": f"{self.kind}:{self.where}:{position}", "reject": record}
        raw_id = self.field(record, "id")
        if raw_id not in (None, "") and (reason := check_id(raw_id, self.column_name("id"), (str, int)) or (
                isinstance(raw_id, str) and check_text(raw_id, self.column_name("id")))):  # fmt: skip
            return {"id": f"{self.kind}:{self.where}:{position}", "reject": f"{reason} ({self.where} {position})"}
        pair = record.get(PAIR)
        if REJECT in record:  # the preset's reject: named by the record's id where it has one
            sample_id = str(raw_id) if raw_id not in (None, "") else f"{self.kind}:{self.where}:{position}"
            return {"id": f"{sample_id}:{pair}" if pair else sample_id, "reject": f"{record[REJECT]} ({self.where} {position})"}
        texts = {name: self.field(record, name) for name in TEXT_FIELDS}
        image = self.image_ref(record)
        if raw_id not in (None, ""):
            sample_id = f"{raw_id}:{pair}" if pair else str(raw_id)
        else:
            sample_id = content_id(texts, image, self.id_salt(position))
        meta = {self.where: position, **{c: record.get(c) for c in self.metadata_columns}}
        meta.update({c: record[c] for c in self.preset_metadata if c in record})
        meta.update(record.get(META) or {})
        reason = self.check_record(record, texts) or next(filter(None, (check_depth(meta[c], c) for c in self.metadata_columns)), None)
        if reason:
            return {"id": sample_id, "reject": f"{reason} ({self.where} {position})"}
        return {"id": sample_id, **texts, "image": image, "pos": position, "meta": meta}

    def id_salt(self, position: int) -> Any:
        """Extra content for ids derived from content (HF rows with embedded images add their position)."""
        return None

    def column_name(self, name: str) -> str:
        column = self.columns.get(name)
        return "+".join(column) if isinstance(column, list) else str(column)

    def check_record(self, record: dict, texts: dict) -> str | None:
        """The texts, and the image as a file path (`sources/validate.py`); HF overrides the image part."""
        reason = self.check_texts(texts)
        if reason is None and self.field(record, "image") is None and self.preset.image_fallback:
            return f"missing_field: no '{self.columns['image']}' or '{self.preset.image_fallback}'"
        return reason or check_path(self.field(record, "image"), self.column_name("image"))

    def check_texts(self, texts: dict) -> str | None:
        for name in TEXT_FIELDS:
            reason = check_text(texts[name], self.column_name(name))
            if reason:
                return reason
        if texts["chosen"].strip() == texts["rejected"].strip():
            return "same_answers: chosen == rejected"
        return None

    def index_entries(self) -> Iterator[dict]:
        """The entries (kept or rejected) of the first `limit` records: one per record, or one per pair a
        record preset makes of it; a repeated id is a reject."""
        seen: dict[str, int] = {}
        n = 0
        for position, record in self.records():
            if self.limit is not None and n >= self.limit:
                break
            for flat in [record] if isinstance(record, str) else self.preset.expand(record):
                entry = self.entry(position, flat)
                if "reject" not in entry:
                    if entry["id"] in seen:
                        first = seen[entry["id"]]
                        entry = {"id": entry["id"], "reject": f"duplicate_id: {self.where} {position} repeats the id of {self.where} {first}"}
                    else:
                        seen[entry["id"]] = position
                yield entry
            n += 1

    def entry_rejects(self, entry: dict) -> list[str]:
        return [entry["reject"]] if "reject" in entry else []

    def check(self) -> None:
        if self.image_root is not None and not self.image_root.is_dir():
            raise ConfigError(f"source.image_root: folder not found: {self.image_root}")

    # -- per rank -----------------------------------------------------------------------------------
    def samples(self, entry: dict, rank_state: dict) -> Iterator[Sample]:
        if "reject" in entry:
            yield self.reject(entry["id"], entry["reject"], pair_type="external")
            return
        if "images" not in rank_state:  # opened by the first kept record of the rank
            rank_state["images"] = self.open_images()
        yield self.sample(entry, rank_state["images"])

    def sample(self, entry: dict, state: Any) -> Sample:
        image_id = entry["image"] if isinstance(entry["image"], str) else entry["id"]
        sample = Sample(
            id=entry["id"],
            source=self.kind,
            image_id=image_id,
            pair_type="external",
            question=entry["question"],
            chosen=entry["chosen"],
            rejected=entry["rejected"],
            metadata=entry["meta"],
        )
        try:
            sample.image, sample.image_bytes = read_image(self.image_bytes(entry, state), self.image_root, self.max_image_pixels)
        except ImageError as e:
            self.drop(sample, str(e))
        else:
            self.stat_update("pairs/external")
        return sample
