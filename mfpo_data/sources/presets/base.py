"""What a record preset is: how one input record of a published dataset becomes flat pair records.

The `jsonl` and `hf` sources read records and map their columns (`records.py`). Most datasets need
only a column mapping (`records.PRESETS`). A `Preset` is for the rest: a record whose texts sit in
one JSON string (RLHF-V), or whose pairs must be chosen from several rated answers (VLFeedback).
`expand` turns one record into flat records that `columns` then maps, or into rejects:

- a flat record is the input record plus the preset's own keys (`question`, `chosen`, ...);
- `PAIR` (a string) names one of several pairs of a record; the sample id gets it as a suffix;
- `META` (a dict) adds to the sample's `metadata`;
- `REJECT` (a string, "code: detail") makes it a reject with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from mfpo_data.errors import ConfigError


PAIR, META, REJECT = "_pair", "_meta", "_reject"


class Preset:
    name: ClassVar[str] = ""
    columns: ClassVar[dict[str, Any]] = {}  # our field -> flat record column, as in `records.PRESETS`
    inputs: ClassVar[tuple[str, ...]] = ()  # input columns `expand` reads (the hf source loads only these + id, image, metadata)
    produced: ClassVar[tuple[str, ...]] = ()  # fields `expand` fills itself: `source.columns` cannot remap them
    metadata: ClassVar[tuple[str, ...]] = ()  # input columns carried into `metadata` where a record has them
    image_fallback: ClassVar[str | None] = None  # image column used when `columns['image']` is absent
    image_files: ClassVar[bool] = False  # the rows name image files only: `source.image_root` is required
    defaults: ClassVar[dict[str, Any]] = {}  # `source.preset_options` and their defaults

    def __init__(self, options: dict[str, Any] | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            allowed = ", ".join(self.defaults) or f"none for preset {self.name}"
            raise ConfigError(f"unknown key 'source.preset_options.{unknown[0]}' (allowed: {allowed})")
        self.options = {**self.defaults, **options}

    def expand(self, record: dict) -> Iterator[dict]:
        """The flat records of one input record (this base: the record itself, for column-mapping presets)."""
        yield record

    @staticmethod
    def reject(record: dict, reason: str, pair: str | None = None) -> dict:
        out = {**record, REJECT: reason}
        if pair is not None:
            out[PAIR] = pair
        return out
