"""What every source does the same way: the index, rank sharding, rejects and reading an image.

`prepare()` runs once in the launching process: it checks the inputs and writes a compact index,
one JSON line per item (an image, or an input record), atomically (temp file, then rename). Each
rank then streams the index and keeps line `i` when `i % world_size == rank` (`rank_of`; a streamed
HF dataset keeps each file on one rank), so ranks never load the source's large files and no row
depends on how many ranks run. A subclass says
what an index line holds (`index_entries`) and which samples one line gives (`samples`).

An item that cannot be used is not lost: it becomes a dropped placeholder sample (`reject`) that
the writer records in the rejects file with its reason. Unreadable images are dropped with one of
`missing_file`, `unreadable_file`, `not_a_file` (a named pipe, a device), `path_escapes_root`,
`empty_file`, `undecodable_image`, `too_many_pixels`, `missing_image`, or a path check of
`sources/validate.py` (`bad_path`, `path_too_long`, `bad_text`).
"""

from __future__ import annotations

import json
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mfpo_data.imaging import ImageError, confined_path, decode_image, to_rgb
from mfpo_data.layout import atomic_write
from mfpo_data.schema import Sample
from mfpo_data.sources.validate import check_path
from mfpo_data.stages.base import Stage


class IndexedSource(Stage):
    """Base of the sources: subclasses set `kind` (the rows' `source` column) and implement
    `check`, `index_entries` and `samples`."""

    name = "source"
    kind = "source"

    def __init__(self, max_image_pixels: int, seed: int, index_path: str | None):
        super().__init__()
        self.max_image_pixels, self.seed, self.index_path = max_image_pixels, seed, index_path
        self.index_stats: dict = {}  # what indexing counted (e.g. images left out); finalize adds it to stats.json

    # -- for subclasses ---------------------------------------------------------------------------
    def check(self) -> None:
        """Fail early, with one line, on a source that cannot be read at all."""

    def index_entries(self) -> Iterable[dict]:
        """The index lines, in the stable order that sharding follows."""
        raise NotImplementedError

    def samples(self, entry: dict, rank_state: dict) -> Iterator[Sample]:
        """The samples of one index line. `rank_state` lives as long as one rank's run (open readers)."""
        raise NotImplementedError

    def entry_rejects(self, entry: dict) -> list[str]:
        """The reject reasons an index line carries (records that failed their checks)."""
        return []

    def check_records(self, sample: int | None = None) -> tuple[int, Counter]:
        """What `mfpo-data validate` reports: the record checks of the index, without writing it or reading
        an image. Returns (index lines checked, reject counts by reason code); `sample`: the first N lines."""
        self.check()
        n, reasons = 0, Counter()
        for entry in self.index_entries():
            if sample is not None and n >= sample:
                break
            n += 1
            reasons.update(r.split(":", 1)[0] for r in self.entry_rejects(entry))
        return n, reasons

    # -- run once, before the ranks -----------------------------------------------------------------
    def prepare(self, index_path: Path) -> int:
        """Write the index; returns the number of lines written."""
        self.check()
        index_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = index_path.with_name(index_path.name + ".tmp")
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for entry in self.index_entries():
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
                n += 1
        os.replace(tmp, index_path)
        write_index_stats(index_path, self.index_stats)
        self.index_path = str(index_path)
        return n

    # -- per rank -----------------------------------------------------------------------------------
    def run(self, data=None, rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        if self.index_path is None:
            raise RuntimeError(f"{type(self).__name__}.prepare() must run before the ranks start")
        rank_state: dict = {}
        with open(self.index_path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if self.rank_of(i, line, world_size) == rank:
                    yield from self.samples(json.loads(line), rank_state)

    def rank_of(self, line_number: int, line: str, world_size: int) -> int:
        """The rank that takes index line `line_number`: `line_number % world_size`, unless a source
        keeps what one reader must read together (a streamed file) on one rank."""
        return line_number % world_size

    def reject(self, sample_id: str, reason: str, image_id: str = "", pair_type: str = "") -> Sample:
        """A placeholder for an item that cannot be used: dropped by this stage, counted by its reason code."""
        self.stat_update(f"dropped/{reason.split(':')[0]}")
        return Sample(sample_id, self.kind, image_id, pair_type, "", "", "", dropped=(self.name, reason))

    def drop(self, sample: Sample, reason: str) -> None:
        """Drop a sample this source made (an unreadable image), counted by its reason code."""
        sample.drop(self.name, reason)
        self.stat_update(f"dropped/{reason.split(':')[0]}")


def index_stats_file(index_path: Path) -> Path:
    return Path(index_path).parent / "source_stats.json"


def write_index_stats(index_path: Path, stats: dict) -> None:
    """Beside the index: what indexing counted, for finalize to merge into stats.json (always written, so a
    rerun with other settings never keeps an old count)."""
    atomic_write(index_stats_file(index_path), json.dumps(stats, sort_keys=True))


def read_image(value: Any, root: Path | None, max_pixels: int) -> tuple[np.ndarray, bytes | None]:
    """The one image reader of the sources: bytes, a path under `root` (confined to it), an HF image
    dict (`{"bytes", "path"}`) or a PIL image -> RGB uint8 array, and the bytes when they can be
    embedded as they are. Every failure is an `ImageError` whose text starts with its reason code."""
    if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        value = value.get("bytes") or value.get("path")
    if isinstance(value, str):
        if root is None:
            raise ImageError(f"path_escapes_root: {value!r} is a path but source.image_root is not set")
        reason = check_path(value, "image")
        if reason:
            raise ImageError(reason)
        path = confined_path(root, value)
        try:
            mode = path.stat().st_mode
            if stat.S_ISDIR(mode):
                raise ImageError(f"missing_file: {value} is a directory")
            if not stat.S_ISREG(mode):  # a named pipe or a device would block the read or never end
                raise ImageError(f"not_a_file: {value} is not a regular file")
            value = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"missing_file: {value}") from None
        except PermissionError:
            raise ImageError(f"unreadable_file: {value}") from None
        except OSError as e:  # ENAMETOOLONG, ELOOP, EIO, ...
            raise ImageError(f"unreadable_file: {value!r:.200} ({e.strerror})") from None
    if isinstance(value, (bytes, bytearray)):
        image, as_is = decode_image(bytes(value), max_pixels)
        return image, (bytes(value) if as_is else None)
    if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        if value.size[0] * value.size[1] > max_pixels:
            raise ImageError(f"too_many_pixels: {value.size[0]}x{value.size[1]} > {max_pixels}")
        return np.asarray(to_rgb(value), dtype=np.uint8).copy(), None
    raise ImageError(f"missing_image: no image in the record ({type(value).__name__})")
