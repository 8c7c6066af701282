"""`source.kind: hf`: a Hugging Face dataset by Hub id or local path, with column mapping.

Presets read published schemas as they are: `rlaif_v` (RLAIF-V: `question`, `chosen`, `rejected`,
`image`, ids from `ds_name` + `idx`), `rlhf_v` (RLHF-V: the texts in one JSON string column `text`) and
`vlfeedback` (VLFeedback: rated completions, pairs by Silkie's rule); see `sources/presets/`.
`path` is a Hub id, a `save_to_disk` folder, a folder of parquet/JSON files, or a loader name with
`data_files` (`path: parquet`, `data_files: [a.parquet, b.parquet]`). Images may be an `Image` column
(embedded bytes or file paths), raw bytes, PIL images or path strings under `image_root`.

`prepare()` reads only the text columns; each rank opens the dataset (memory-mapped Arrow, or a
stream) and reads the images of its own rows. With `streaming: true` (no full download) the rows are
sharded by the stream's files: rank r reads only files r, r + tasks, ... (`IterableDataset.shard`), so
no file is read twice; ranks beyond the number of files get no rows. A stream of one file cannot be
split that way: then every rank walks it and decodes only its own rows (each rank reads every row's
bytes), so for a single-file dataset prefer a local copy (`save_to_disk` or the parquet file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mfpo_data.errors import ConfigError, MfpoError
from mfpo_data.imaging import DEFAULT_MAX_PIXELS
from mfpo_data.sources.records import PresetName, RecordSource


SHARD = "_shard"  # [file, row in file] of a streamed row, when the stream is sharded by its files


class HfSource(RecordSource):
    kind = "hf"
    where = "row"

    def __init__(
        self,
        path: str,
        split: str = "train",
        name: str | None = None,
        revision: str | None = None,
        data_files: str | list[str] | None = None,
        streaming: bool = False,
        columns: dict[str, str | list[str]] | None = None,
        preset: PresetName = "default",
        preset_options: dict[str, Any] | None = None,
        image_root: str | None = None,
        metadata_columns: list[str] | None = None,
        limit: int | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        seed: int = 0,
        index_path: str | None = None,
    ):
        """`image_root` (for path-valued images) defaults to `path` when that is a local folder."""
        local = Path(path).expanduser()
        if image_root is None and local.is_dir():
            image_root = str(local)
        super().__init__(columns, preset, image_root, metadata_columns, limit, max_image_pixels, seed, index_path, preset_options)
        self.path, self.split, self.config_name, self.revision = path, split, name, revision
        self.data_files, self.streaming = data_files, streaming

    def _load(self, columns: list[str], optional: tuple[str, ...] = ()):
        """The split with only `columns` (less any `optional` ones it lacks); an `Image` column is left
        undecoded ({"bytes", "path"})."""
        import datasets

        local = Path(self.path).expanduser()
        try:
            if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(local))
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[self.split]
                if self.streaming:
                    ds = ds.to_iterable_dataset()
            else:
                ds = datasets.load_dataset(self.path, self.config_name, split=self.split, revision=self.revision,
                                           data_files=self.data_files, streaming=self.streaming)  # fmt: skip
        except (FileNotFoundError, ValueError, ConnectionError, KeyError) as e:
            raise MfpoError(f"source: cannot load dataset {self.path!r} split {self.split!r}: {type(e).__name__}: {e}") from None
        features = ds.features or {}
        if features:
            columns = [c for c in columns if c in features or c not in optional]
        missing = [c for c in columns if features and c not in features]
        if missing:
            raise MfpoError(f"source: dataset {self.path!r} has no column {missing[0]!r} (columns: {', '.join(features)})")
        ds = ds.select_columns(columns)
        for column in columns:
            if isinstance(features.get(column), datasets.Image):
                ds = ds.cast_column(column, datasets.Image(decode=False))
        return ds

    def _mapped(self, *fields: str) -> list[str]:
        out: list[str] = []
        for f in fields:
            value = self.columns.get(f)
            for column in value if isinstance(value, list) else [value]:
                if column and column not in out:
                    out.append(column)
        return out

    def check(self) -> None:
        super().check()
        if self.preset.image_files and self.image_root is None:
            raise ConfigError(f"source.image_root: {self.preset.name} rows name image files ({self.columns['image']}); "
                              "set it to the folder that holds them")

    def _image_columns(self) -> list[str]:
        fallback = self.preset.image_fallback if "image" not in self.explicit_columns else None
        return self._mapped("image") + ([fallback] if fallback else [])

    @staticmethod
    def _optional_images(images: list[str]) -> tuple[str, ...]:
        return tuple(images) if len(images) > 1 else ()  # with a fallback, either column will do

    def records(self) -> Iterator[tuple[int, dict | str]]:
        texts = list(self.preset.inputs) or self._mapped("question", "chosen", "rejected")
        text_columns = list(dict.fromkeys(self._mapped("id") + texts + self.metadata_columns + self.preset_metadata))
        optional = tuple(self.preset_metadata) + (() if "id" in self.explicit_columns else tuple(self._mapped("id")))
        images = self._image_columns()
        ds = self._load(list(dict.fromkeys(text_columns + images)), optional + self._optional_images(images))
        present = ds.column_names or text_columns  # a stream of unknown features lists none
        if ds.column_names and not any(c in present for c in images):
            raise MfpoError(f"source: dataset {self.path!r} has no column {' or '.join(map(repr, images))} (columns: {', '.join(present)})")
        ds = ds.select_columns([c for c in text_columns if c in present])
        shards = _num_shards(ds) if self.streaming else 1
        if shards <= 1:
            for position, record in enumerate(ds):
                yield position, dict(record)
            return
        position = 0
        for file in range(shards):  # the same rows in the same order as the whole stream
            for row, record in enumerate(ds.shard(num_shards=shards, index=file)):
                yield position, {**record, SHARD: [file, row]}
                position += 1

    def entry(self, position: int, record: dict | str) -> dict:
        shard = record.pop(SHARD, None) if isinstance(record, dict) else None
        out = super().entry(position, record)
        if shard is not None and "reject" not in out:
            out["shard"] = shard
        return out

    def rank_of(self, line_number: int, line: str, world_size: int) -> int:
        """A streamed row sharded by file goes to the rank that reads its file; the rest by line."""
        shard = json.loads(line).get("shard") if self.streaming and '"shard":' in line else None
        return shard[0] % world_size if shard else line_number % world_size

    def check_record(self, record: dict, texts: dict) -> str | None:
        return self.check_texts(texts)  # images are read by the ranks; a missing one is dropped there

    def image_ref(self, record: dict) -> Any:
        return None

    def id_salt(self, position: int) -> Any:
        return position

    def open_images(self) -> Any:
        images = self._image_columns()
        ds = self._load(images, self._optional_images(images))
        column = next((c for c in images if c in (ds.column_names or images)), images[0])
        return _RowReader(ds.select_columns([column]), column, self.streaming)

    def image_bytes(self, entry: dict, state: Any) -> Any:
        return state.get(entry["pos"], entry.get("shard"))


class _RowReader:
    """Image values by row position: random access on a map-style dataset, a forward walk on a stream."""

    def __init__(self, ds, column: str, streaming: bool):
        self.ds, self.column, self.streaming = ds, column, streaming
        self.file: int | None = None
        self.iterator = None

    def get(self, position: int, shard: list[int] | None = None) -> Any:
        if not self.streaming:
            return self.ds[position][self.column]
        if shard is not None:  # only this rank's files are opened, each once
            file, position = shard
            if self.file != file:
                self.file, self.iterator = file, iter(enumerate(self.ds.shard(num_shards=_num_shards(self.ds), index=file)))
        elif self.iterator is None:
            self.iterator = iter(enumerate(self.ds))
        for i, row in self.iterator:  # positions of one rank arrive in increasing order
            if i == position:
                return row[self.column]
        raise IndexError(f"row {position} is past the end of the stream")


def _num_shards(ds) -> int:
    """The files (data sources) of a stream: `num_shards`, called `n_shards` in older datasets."""
    return int(getattr(ds, "num_shards", None) or getattr(ds, "n_shards", 1) or 1)
