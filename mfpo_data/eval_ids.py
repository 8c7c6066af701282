"""Image ids of the evaluation sets mfpo scores against, shipped so a build can leave them out.

POPE, Object HalBench and CHAIR evaluate on COCO val2014 images, and COCO train2017 contains most of
val2014 (COCO image ids are shared by the 2014 and 2017 splits). The lists live in
`assets/eval_ids/` with their sources; `mfpo_train.eval` reads the same files, so the ids a build
excludes are the ids the scorers use.
"""

from __future__ import annotations

import json
from pathlib import Path

from mfpo_data.errors import MfpoError


EVAL_IDS_DIR = Path(__file__).resolve().parent / "assets" / "eval_ids"
# name -> file in EVAL_IDS_DIR: one id per line (`.txt`, '#' comments) or `{"image_id": ...}` lines.
EVAL_SETS = {"pope_coco": "pope_coco_val2014.txt", "objhal": "objhal_val2014.jsonl"}


def read_id_file(path: str | Path) -> list[int]:
    """The image ids in a file, in order: integers one per line, or JSON lines with `image_id`."""
    path = Path(path)
    if not path.is_file():
        raise MfpoError(f"image id file not found: {path}")
    ids = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line.strip()
            if not line:
                continue
            try:
                value = json.loads(line)
                ids.append(int(value["image_id"] if isinstance(value, dict) else value))
            except (ValueError, KeyError, TypeError):
                raise MfpoError(f"{path}:{lineno}: expected an image id or a JSON object with 'image_id'") from None
    return ids


def eval_image_ids(name: str | None = None) -> set[int]:
    """The ids of one shipped evaluation set (see `EVAL_SETS`), or of all of them."""
    if name is not None and name not in EVAL_SETS:
        raise MfpoError(f"unknown evaluation set {name!r} (known: {', '.join(EVAL_SETS)})")
    names = [name] if name else list(EVAL_SETS)
    return {i for n in names for i in read_id_file(EVAL_IDS_DIR / EVAL_SETS[n])}


def exclusion_ids(spec: str | None) -> set[int]:
    """The image ids a build leaves out for `source.exclude`: "eval" (every shipped set), "none", or a file of ids."""
    if spec in (None, "none"):
        return set()
    if spec == "eval":
        return eval_image_ids()
    if not Path(spec).expanduser().is_file():
        raise MfpoError(f"source.exclude must be 'eval', 'none' or a file of image ids; file not found: {spec}")
    return set(read_id_file(Path(spec).expanduser()))
