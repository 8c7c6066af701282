"""`source.kind: jsonl`: one JSON object per line with a question, a chosen and a rejected answer and an
image path relative to `image_root` (confined to it). `id` is optional: without it the id is a stable
hash of the line's content. See `sources/records.py` for what is validated and how it is sharded.
A preset reads a published export as it is: `rlhf_v` (RLHF-V's JSON `text`, images by `image_path`),
`vlfeedback` (rated completions, images by `img_path`); see `sources/presets/`.

    {"id": "q1", "question": "What is on the table?", "chosen": "A red mug.", "rejected": "A cat.", "image": "img/1.jpg"}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mfpo_data.errors import ConfigError
from mfpo_data.imaging import DEFAULT_MAX_PIXELS
from mfpo_data.sources.records import PresetName, RecordSource


class JsonlSource(RecordSource):
    kind = "jsonl"
    where = "line"

    def __init__(
        self,
        path: str,
        image_root: str | None = None,
        columns: dict[str, str | list[str]] | None = None,
        preset: PresetName = "default",
        preset_options: dict[str, Any] | None = None,
        metadata_columns: list[str] | None = None,
        limit: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        index_path: str | None = None,
    ):
        """`image_root` defaults to the folder holding the JSONL file."""
        self.path = Path(path).expanduser()
        super().__init__(columns, preset, image_root or str(self.path.parent), metadata_columns, limit, max_image_pixels, seed,
                         index_path, preset_options)  # fmt: skip

    def check(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"source.path: JSONL file not found: {self.path}")
        super().check()

    def records(self) -> Iterator[tuple[int, dict | str]]:
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield number, f"bad_encoding: line {number} is not UTF-8 (byte {e.start})"
                    continue
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue  # blank lines are not records
                try:
                    record: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    yield number, f"bad_json: line {number}: {e.msg} at column {e.colno}"
                    continue
                except RecursionError:
                    yield number, f"too_deep: line {number} nests lists or objects too deeply to parse"
                    continue
                except ValueError as e:  # an integer of more than 4300 digits
                    yield number, f"bad_json: line {number}: {str(e).splitlines()[0][:80]}"
                    continue
                if not isinstance(record, dict):
                    yield number, f"bad_json: line {number} is a {type(record).__name__}, not an object"
                    continue
                yield number, record
