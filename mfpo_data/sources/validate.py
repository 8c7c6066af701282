"""Field checks of input records, shared by every source (COCO, JSONL, HF) and by `mfpo-data validate`.

Each check takes one field's value and returns None when it can be used, else a reject reason whose
text starts with its code: `missing_field`, `bad_field` (wrong type), `bad_text` (a NUL byte or a
lone surrogate, which no encoder can write), `empty_text`, `bad_path` (NUL byte, a data URI or
base64 blob instead of a path), `path_too_long`, `bad_bbox`, `bad_segmentation`, `bad_id`,
`too_deep` (nesting past MAX_DEPTH). The sources turn a reason into a reject with the record's id,
so one bad record never stops a build.
"""

from __future__ import annotations

import math
import re
from typing import Any


MAX_DEPTH = 32  # nesting of a record's values; deeper ones are refused before anything recurses into them
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_NAME_CHARS = 255  # NAME_MAX: one path component
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]{256,}")


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and dicts nest in `value`, counted without recursion, stopping past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack += [(v, level + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def check_depth(value: Any, name: str) -> str | None:
    if depth(value) > MAX_DEPTH:
        return f"too_deep: '{name}' nests lists or objects more than {MAX_DEPTH} deep"
    return None


def check_text(value: Any, name: str) -> str | None:
    """A non-empty string that can be encoded: no NUL byte, no lone surrogate."""
    if value is None:
        return f"missing_field: no '{name}'"
    if not isinstance(value, str):
        return f"bad_field: '{name}' is {type(value).__name__}, not text"
    if "\x00" in value:
        return f"bad_text: '{name}' holds a NUL byte"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"bad_text: '{name}' holds a lone surrogate at character {e.start}"
    if not value.strip():
        return f"empty_text: '{name}' is empty"
    return None


def check_path(value: Any, name: str) -> str | None:
    """A relative file name: text, no NUL byte, not a data URI or a base64 blob, within PATH_MAX/NAME_MAX."""
    reason = check_text(value, name)
    if reason:
        return reason
    if value.startswith("data:"):
        return f"bad_path: '{name}' holds a data URI, not a file path"
    if len(value) > MAX_PATH_CHARS or any(len(part) > MAX_NAME_CHARS for part in value.split("/")):
        return f"path_too_long: '{name}' has {len(value)} characters"
    if _BASE64.fullmatch(value):  # 256+ characters of the base64 alphabet and no '.': encoded bytes
        return f"bad_path: '{name}' holds base64 data, not a file path"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_id(value: Any, name: str, kind: type | tuple = int) -> str | None:
    """An id of the type the whole file uses (COCO: int); bools are not ints here."""
    if value is None:
        return f"missing_field: no '{name}'"
    if isinstance(value, bool) or not isinstance(value, kind):
        return f"bad_id: '{name}' is {type(value).__name__} {value!r:.40}"
    return None


def check_bbox(value: Any) -> str | None:
    """COCO `[x, y, width, height]`: four finite numbers, width and height > 0."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        return f"bad_bbox: expected [x, y, width, height], got {value!r:.60}"
    if not all(_number(v) for v in value):
        return f"bad_bbox: {value!r:.60} holds a value that is not a finite number"
    if value[2] <= 0 or value[3] <= 0:
        return f"bad_bbox: {value!r:.60} has no area"
    return None


def _polygon_area(points: list) -> float:
    xs, ys = points[0::2], points[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))) / 2


def check_segmentation(value: Any) -> str | None:
    """COCO polygons (each >= 3 points of finite numbers, with an area) or RLE whose counts fill its size."""
    if value is None:
        return None  # no shape: the box is the mask
    if isinstance(value, list):
        if not value:
            return "bad_segmentation: no polygon"
        for polygon in value:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                return "bad_segmentation: a polygon with fewer than 3 points"
            if not all(_number(v) for v in polygon):
                return "bad_segmentation: a polygon point that is not a finite number"
            if _polygon_area(polygon) <= 0:
                return "bad_segmentation: a polygon with no area"
        return None
    if isinstance(value, dict):
        size, counts = value.get("size"), value.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            return f"bad_segmentation: RLE size {size!r:.40} is not [height, width]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                return "bad_segmentation: RLE counts that are not counts"
            return _check_runs(size, counts)
        if isinstance(counts, str):
            runs = rle_string_counts(counts)
            if runs is None or any(r < 0 for r in runs):
                return "bad_segmentation: RLE counts do not decode"
            return _check_runs(size, runs)
        return "bad_segmentation: RLE without counts"
    return f"bad_segmentation: unsupported type {type(value).__name__}"


def rle_string_counts(counts: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' `rleFrString`), None when malformed."""
    out: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        out.append(x)
    return out


def _check_runs(size: list[int], runs: list[int]) -> str | None:
    """An RLE's run lengths (plain or decoded from COCO's string) against its [height, width]."""
    if sum(runs) != size[0] * size[1]:
        return f"bad_segmentation: RLE counts cover {sum(runs)} pixels, its size {size} has {size[0] * size[1]}"
    if not any(runs[1::2]):
        return "bad_segmentation: an empty RLE mask"
    return None


def check_annotation(ann: Any) -> str | None:
    """One COCO instance annotation: its bbox and its segmentation."""
    if not isinstance(ann, dict):
        return f"bad_field: an annotation is {type(ann).__name__}, not an object"
    return check_bbox(ann.get("bbox")) or check_segmentation(ann.get("segmentation"))
