"""What the `jsonl` and `hf` sources share: ready-made preference pairs (question, chosen, rejected, image).

`prepare()` runs once in the launching process. It reads every record's text (never its image),
maps columns, validates, derives ids and writes a compact index: one JSON line per input record, in
input order. Records that cannot be used are index lines too, carrying their reject reason, so the
rank that owns the line writes them to the rejects file and no input ever goes missing:

- `bad_encoding` (a JSONL line that is not UTF-8) and `bad_json` (not a JSON object), with the line number;
- `missing_field`, `bad_field` (not a string) and `empty_text` (empty or whitespace-only text);
- `same_answers` (chosen == rejected) and `duplicate_id` (the first record with an id is kept).

`run()` streams the index, keeps line `i` when `i % world_size == rank`, and decodes the image
there; unreadable images are dropped like the COCO source drops them (`missing_file`,
`path_escapes_root`, `empty_file`, `undecodable_image`, `too_many_pixels`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mfpo_data.errors import ConfigError
from mfpo_data.imaging import ImageError, confined_path, decode_image, to_rgb
from mfpo_data.pipeline.base import Stage
from mfpo_data.schema import Sample


FIELDS = ("id", "question", "chosen", "rejected", "image")
TEXT_FIELDS = ("question", "chosen", "rejected")
# Column mappings by schema: our field -> the source's column (a list of columns joins their values with ':').
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"id": "id", "question": "question", "chosen": "chosen", "rejected": "rejected", "image": "image"},
    # RLAIF-V-Dataset / RLHF-V: `idx` is a per-subset index, so the id joins it with `ds_name`.
    "rlaif_v": {"id": ["ds_name", "idx"], "question": "question", "chosen": "chosen", "rejected": "rejected", "image": "image"},
}


def resolve_columns(preset: str, columns: dict[str, Any] | None) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ConfigError(f"'source.preset' is '{preset}', expected one of: {', '.join(PRESETS)}")
    out = dict(PRESETS[preset])
    for key, value in (columns or {}).items():
        if key not in FIELDS:
            raise ConfigError(f"unknown key 'source.columns.{key}' (allowed: {', '.join(FIELDS)})")
        out[key] = value
    return out


def content_id(*parts: Any) -> str:
    """A stable id from a record's content: the first 16 hex digits of sha256 over its canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


class ExternalSource(Stage):
    """Base of the sources that read finished text pairs. Subclasses yield raw records and open images."""

    name = "source"
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
    ):
        super().__init__()
        self.columns = resolve_columns(preset, columns)
        self.explicit_columns = set(columns or ())  # a preset's `id` column may be absent (ids are then hashes)
        self.image_root = Path(image_root).expanduser() if image_root else None
        self.metadata_columns = list(metadata_columns or [])
        self.limit, self.max_image_pixels, self.seed, self.index_path = limit, max_image_pixels, seed, index_path

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
        return record.get(column) if column else None

    def entry(self, position: int, record: dict | str) -> dict:
        """The index entry of one record: the fields a sample needs, or a reject."""
        if isinstance(record, str):
            return {"id": f"{self.kind}:{self.where}:{position}", "reject": record}
        texts = {name: self.field(record, name) for name in TEXT_FIELDS}
        raw_id = self.field(record, "id")
        image = self.image_ref(record)
        sample_id = str(raw_id) if raw_id not in (None, "") else content_id(texts, image, self.id_salt(position))
        reason = self.check_record(record, texts)
        if reason:
            return {"id": sample_id, "reject": f"{reason} ({self.where} {position})"}
        meta = {self.where: position, **{c: record.get(c) for c in self.metadata_columns}}
        return {"id": sample_id, **texts, "image": image, "pos": position, "meta": meta}

    def id_salt(self, position: int) -> Any:
        """Extra content for ids derived from content (HF rows with embedded images add their position)."""
        return None

    def check_record(self, record: dict, texts: dict) -> str | None:
        reason = self.check_texts(texts)
        if reason is None and self.field(record, "image") is None:
            return f"missing_field: no '{self.columns['image']}'"
        return reason

    def check_texts(self, texts: dict) -> str | None:
        for name in TEXT_FIELDS:
            value = texts[name]
            if value is None:
                return f"missing_field: no '{self.columns[name]}'"
            if not isinstance(value, str):
                return f"bad_field: '{self.columns[name]}' is {type(value).__name__}, not text"
            if not value.strip():
                return f"empty_text: '{self.columns[name]}' is empty"
        if texts["chosen"].strip() == texts["rejected"].strip():
            return "same_answers: chosen == rejected"
        return None

    def prepare(self, index_path: Path) -> int:
        """Write the index; returns the number of records indexed (kept and rejected)."""
        self.check()
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(index_path.name + ".tmp")
        seen: dict[str, int] = {}
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for position, record in self.records():
                if self.limit is not None and n >= self.limit:
                    break
                entry = self.entry(position, record)
                if "reject" not in entry:
                    first = seen.setdefault(entry["id"], position)
                    if first != position:
                        entry = {"id": entry["id"], "reject": f"duplicate_id: {self.where} {position} repeats the id of {self.where} {first}"}
                f.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n")
                n += 1
        os.replace(tmp, index_path)
        self.index_path = str(index_path)
        return n

    def check(self) -> None:
        if self.image_root is not None and not self.image_root.is_dir():
            raise ConfigError(f"source.image_root: folder not found: {self.image_root}")

    # -- per rank -----------------------------------------------------------------------------------
    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        if self.index_path is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() must run before the ranks start")
        state = None
        with open(self.index_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % world_size != rank:
                    continue
                entry = json.loads(line)
                if "reject" in entry:
                    self.stat_update(f"dropped/{entry['reject'].split(':')[0]}")
                    yield Sample(entry["id"], self.kind, "", "external", "", "", "", dropped=(self.name, entry["reject"]))
                    continue
                if state is None:
                    state = self.open_images()
                yield self.sample(entry, state)

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
            sample.image, sample.image_bytes = self.load_image(self.image_bytes(entry, state))
        except ImageError as e:
            sample.drop(self.name, str(e))
            self.stat_update(f"dropped/{str(e).split(':')[0]}")
        else:
            self.stat_update("pairs/external")
        return sample

    def load_image(self, value: Any) -> tuple[np.ndarray, bytes | None]:
        """Decode an image given as bytes, a path under `image_root`, an HF image dict or a PIL image."""
        if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
            value = value.get("bytes") or value.get("path")
        if isinstance(value, str):
            if self.image_root is None:
                raise ImageError(f"path_escapes_root: {value!r} is a path but source.image_root is not set")
            path = confined_path(self.image_root, value)
            try:
                value = path.read_bytes()
            except FileNotFoundError:
                raise ImageError(f"missing_file: {value}") from None
            except IsADirectoryError:
                raise ImageError(f"missing_file: {value} is a directory") from None
            except PermissionError:
                raise ImageError(f"unreadable_file: {value}") from None
        if isinstance(value, (bytes, bytearray)):
            image, as_is = decode_image(bytes(value), self.max_image_pixels)
            return image, (bytes(value) if as_is else None)
        if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
            if value.size[0] * value.size[1] > self.max_image_pixels:
                raise ImageError(f"too_many_pixels: {value.size[0]}x{value.size[1]} > {self.max_image_pixels}")
            return np.asarray(to_rgb(value), dtype=np.uint8).copy(), None
        raise ImageError(f"missing_image: no image in the record ({type(value).__name__})")
