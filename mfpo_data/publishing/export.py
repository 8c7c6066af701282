"""`mfpo-data export --format swift`: an mfpo dataset as ms-swift's DPO data, images written beside it.

ms-swift (`swift rlhf --rlhf_type dpo`) is the other trainer that takes an image as the rejected side of a pair.
Its DPO rows (docs: Customization/Custom-dataset, "RLHF") hold one pair each: `messages` (the user turn, with an
`<image>` tag per image, and the chosen answer) with `images`, and the rejected side as `rejected_messages` with
`rejected_images`. An mfpo row holds both of MFPO's pairs, so it becomes two rows:

    text pair   messages [user "<image>q", assistant y_w], images [m]; rejected_messages [.., y_l], rejected_images [m]
    image pair  messages [user "<image>q", assistant y_w], images [m]; rejected_messages [.., y_w], rejected_images [m']

(ms-swift's shorter forms, `rejected_response` alone or `rejected_images` alone, cannot share one file: its
loader fills the missing key with null and then refuses the row.)
A row whose image pair is not valid (`image_pair_valid: false`) gives its text pair only. Each record also keeps
`id`, `pair` ("text" or "image") and `difficulty_bucket` (ms-swift drops columns it does not use). MFPO's
L_margin (the anchor term) has no counterpart in ms-swift's DPO, and ms-swift shuffles the rows: the rows are
written easy -> medium -> hard, and `--by-bucket` writes one file per bucket for a staged curriculum.

The images are the dataset's own bytes, written once each under `OUT/images/` by their sha256 (an image shared
by several rows is one file); the JSONL names them by absolute path, as ms-swift prefers, or relative to OUT
with `relative_paths` (then run ms-swift with `ROOT_IMAGE_DIR=OUT`). Rows that cannot be exported (no image,
an empty answer, images and rejected_images of different counts, an image part count that differs from the
images) are skipped, counted by reason and listed in `OUT/export.json` with the other facts of the export.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mfpo_data.errors import MfpoError
from mfpo_data.folders import FolderLock, check_output_folder, output_root


logger = logging.getLogger(__name__)

FORMATS = ("swift",)
MANIFEST = "export.json"
BUCKETS = ("easy", "medium", "hard")


class ExportError(MfpoError):
    """An export that cannot run as asked (an unknown format, a folder of other files)."""


@dataclass
class ExportResult:
    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # JSONL file name -> records
    pairs: Counter = field(default_factory=Counter)  # "text" / "image" -> records
    rows: int = 0  # rows read
    images: int = 0  # distinct images the JSONL names (one file each)
    skipped: Counter = field(default_factory=Counter)  # reason -> rows


def export_dataset(source: str | Path, output: str | Path, fmt: str = "swift", *, split: str | None = None,
                   revision: str | None = None, relative_paths: bool = False, by_bucket: bool = False) -> ExportResult:
    """Export every split of `source` (a build folder, a published or dry-run folder, a Hub id), or `split`, in
    `fmt` into the folder `output` (new, empty, or an earlier export of ours)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    from mfpo_data.validate import load_and_validate

    root = output_root(output)
    check_output_folder(root, lambda p: (p / MANIFEST).is_file(), ours=f"export of mfpo-data ({MANIFEST})",
                        choose="choose a new or empty --output folder")
    loaded = load_and_validate(str(source), split=split, revision=revision,
                               required=("images", "prompt", "chosen", "rejected"))
    splits = {split: loaded} if split is not None else dict(loaded)
    root.mkdir(parents=True, exist_ok=True)
    result = ExportResult(folder=root)
    with FolderLock(root, "mfpo-data export"):
        images = _ImageStore(root, relative_paths)
        for name, ds in splits.items():
            records = _swift_records(_plain_images(ds), images, result)
            groups = ({f"{name}-{b}.jsonl": [r for r in records if r["difficulty_bucket"] == b] for b in BUCKETS}
                      if by_bucket else {f"{name}.jsonl": records})
            for file, rows in groups.items():
                if rows or not by_bucket:
                    _write_jsonl(root / file, rows)
                    result.files[file] = len(rows)
        result.images = len(images.seen)  # distinct images named (a rerun finds them written)
        _write_text(root / MANIFEST, json.dumps({
            "format": fmt, "source": str(source), "revision": revision, "split": split,
            "files": result.files, "pairs": dict(result.pairs), "rows": result.rows, "images": result.images,
            "image_paths": "relative to this folder (ROOT_IMAGE_DIR)" if relative_paths else "absolute",
            "skipped": dict(result.skipped),
            "not_exported": "L_margin (no counterpart in ms-swift's DPO); the curriculum is the order of the rows",
        }, indent=2) + "\n")
    logger.info("exported %d rows as %d pairs (%s) to %s", result.rows, sum(result.pairs.values()),
                ", ".join(f"{k} {v}" for k, v in sorted(result.pairs.items())), root)
    return result


def _plain_images(ds):
    """`ds` with its image columns as undecoded {bytes, path} records: the bytes are written as they are."""
    import datasets

    for col in ("images", "rejected_images"):
        if col in ds.column_names:
            ds = ds.cast_column(col, datasets.List(datasets.Image(decode=False)))
    return ds


def _swift_records(ds, images: _ImageStore, result: ExportResult) -> list[dict]:
    order = {b: i for i, b in enumerate(BUCKETS)}
    records = []
    for i, row in enumerate(ds):
        result.rows += 1
        why = _problem(row)
        if why is not None:
            result.skipped[why] += 1
            logger.warning("row %s: %s; not exported", row.get("id", f"#{i}"), why)
            continue
        image_pair = bool(row.get("rejected_images")) and row.get("image_pair_valid") is not False
        try:  # every image of the row is read and decoded before any is written
            found = [images.read(im) for im in [*row["images"], *(row["rejected_images"] if image_pair else [])]]
        except _Unreadable as e:
            result.skipped[str(e)] += 1
            logger.warning("row %s: %s; not exported", row.get("id", f"#{i}"), e)
            continue
        paths = [images.write(*f) for f in found]
        n = len(row["images"])
        messages = [*_turns(row["prompt"]), {"role": "assistant", "content": _text(row["chosen"])}]
        common = {"id": row.get("id"), "difficulty_bucket": row.get("difficulty_bucket"), "messages": messages,
                  "images": paths[:n]}
        rejected = [*messages[:-1], {"role": "assistant", "content": _text(row["rejected"])}]
        records.append({**common, "pair": "text", "rejected_messages": rejected, "rejected_images": paths[:n]})
        if image_pair:
            records.append({**common, "pair": "image", "rejected_messages": messages, "rejected_images": paths[n:]})
    records.sort(key=lambda r: order.get(r["difficulty_bucket"], len(order)))  # stable: rows keep their order
    result.pairs.update(r["pair"] for r in records)
    return records


def _problem(row: dict) -> str | None:
    images = row.get("images") or []
    if not images:
        return "no image"
    parts = sum(1 for m in row.get("prompt") or [] if isinstance(m.get("content"), list)
                for p in m["content"] if p.get("type") == "image")
    if parts != len(images):
        return "the prompt's image parts differ from its images"
    if "rejected_images" in row and row["rejected_images"] is not None and len(row["rejected_images"]) != len(images):
        return "images and rejected_images differ in count"
    for col in ("chosen", "rejected"):
        if not _text(row.get(col)).strip():
            return f"empty {col} answer"
    return None


def _turns(prompt: list[dict]) -> list[dict]:
    """TRL's conversational turns -> ms-swift's: text content, an `<image>` tag where each image part is."""
    out = []
    for message in prompt:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        text = "".join("<image>" if p.get("type") == "image" else (p.get("text") or "") for p in parts)
        out.append({"role": message.get("role", "user"), "content": text})
    return out


def _text(messages) -> str:
    return "".join(t["content"] for t in _turns(messages or []))


class _Unreadable(Exception):
    """An image of a row that cannot be read or decoded (the row is skipped with this reason)."""


class _ImageStore:
    """Writes each distinct image once, as OUT/images/<sha256[:2]>/<sha256>.<format>; names it by its path."""

    def __init__(self, root: Path, relative: bool):
        self.root, self.relative = root, relative
        self.seen: dict[str, str] = {}

    def read(self, image: dict) -> tuple[bytes, str]:
        """(bytes, extension) of an image record {bytes, path}, its bytes decoded once to check them."""
        from PIL import Image

        data = image.get("bytes")
        try:
            if data is None:
                data = Path(image.get("path") or "").read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                im.verify()
                kind = (im.format or "png").lower()
        except Exception as e:  # noqa: BLE001 - a missing file, or PIL's many types for bad bytes
            raise _Unreadable(f"image cannot be decoded ({type(e).__name__})") from None
        return data, {"jpeg": "jpg"}.get(kind, kind)

    def write(self, data: bytes, extension: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self.seen:
            name = Path("images") / digest[:2] / f"{digest}.{extension}"
            target = self.root / name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            self.seen[digest] = name.as_posix() if self.relative else str(target)
        return self.seen[digest]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    _write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
