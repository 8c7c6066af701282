"""`source.kind: hf`: a Hugging Face dataset by Hub id or local path, with column mapping.

`preset: rlaif_v` reads the RLAIF-V / RLHF-V schema (`question`, `chosen`, `rejected`, `image`, ids from
`ds_name` + `idx`). Images may be an `Image` column (embedded bytes or file paths), raw bytes, PIL
images or path strings under `image_root`. `prepare()` reads only the text columns; each rank opens
the dataset (memory-mapped Arrow, or a stream) and reads the images of its own rows. With
`streaming: true` every rank walks the stream and decodes only its rows: no full download, but each
rank reads every row's bytes, so prefer a local copy for big builds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from mfpo_data.errors import MfpoError
from mfpo_data.imaging import DEFAULT_MAX_PIXELS
from mfpo_data.sources.records import RecordSource


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
        preset: Literal["default", "rlaif_v"] = "default",
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
        super().__init__(columns, preset, image_root, metadata_columns, limit, max_image_pixels, seed, index_path)
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

    def records(self) -> Iterator[tuple[int, dict | str]]:
        text_columns = self._mapped("id", "question", "chosen", "rejected") + self.metadata_columns
        optional = () if "id" in self.explicit_columns else tuple(self._mapped("id"))
        ds = self._load(text_columns + self._mapped("image"), optional)
        present = ds.column_names or text_columns  # a stream of unknown features lists none
        ds = ds.select_columns([c for c in text_columns if c in present])
        for position, record in enumerate(ds):
            yield position, dict(record)

    def check_record(self, record: dict, texts: dict) -> str | None:
        return self.check_texts(texts)  # images are read by the ranks; a missing one is dropped there

    def image_ref(self, record: dict) -> Any:
        return None

    def id_salt(self, position: int) -> Any:
        return position

    def open_images(self) -> Any:
        ds = self._load([self.columns["image"]])
        return _RowReader(ds, self.columns["image"], self.streaming)

    def image_bytes(self, entry: dict, state: Any) -> Any:
        return state.get(entry["pos"])


class _RowReader:
    """Image values by row position: random access on a map-style dataset, a forward walk on a stream."""

    def __init__(self, ds, column: str, streaming: bool):
        self.ds, self.column = ds, column
        self.iterator = iter(enumerate(ds)) if streaming else None

    def get(self, position: int) -> Any:
        if self.iterator is None:
            return self.ds[position][self.column]
        for i, row in self.iterator:  # positions of one rank arrive in increasing order
            if i == position:
                return row[self.column]
        raise IndexError(f"row {position} is past the end of the stream")
