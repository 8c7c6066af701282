"""A PNG grid for looking at a build: original, key-object mask overlay, perturbed image, the texts.

Columns have headers; each row names its pair type, key object, difficulty, whether its image pair is
valid for the image term, which negative it has (the perturbation, its region and parameters, and whether
that region aims at the key object at all), and the key object's detector score on m and m'."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mfpo_data.imaging import ImageError, decode_image, rle_decode
from mfpo_data.schema import targets_key_object


TILE = 192
TEXT_W = 640
HEADER_H = 30
FONT_SIZE = 14
HEADERS = ("original m", "key region (mask, boxes)", "perturbed m'", "pair")
# The parameters that say which negative a row has, by perturbation kind (the rest stay in the dataset).
NEGATIVE_PARAMS = ("t", "sigma", "strength", "mask_dilate", "dilate", "crop_area", "fill", "random_area", "inserted",
                   "region_shape", "region_dilation")


def _font(size: int = FONT_SIZE, bold: bool = False):
    """Pillow's own scalable font (keeps spaces, any size); the bitmap default where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def negative_label(row: dict) -> str:
    """Which negative a row has: 'diffusion_noise t=500 on key_object', 'random_crop crop_area=0.12 on global'."""
    params = json.loads(row.get("perturbation_params") or "{}")
    shown = " ".join(f"{k}={params[k]}" for k in NEGATIVE_PARAMS if k in params)
    label = f"{row.get('perturbation')} {shown} on {params.get('region', '-')}".replace("  ", " ")
    targeted = row.get("targets_key_object")
    if targeted is None:  # a dataset built before the column existed: what its parameters say
        targeted = targets_key_object(params)
    return label + ("" if targeted else " (does not target the key object)")


def _as_image(value) -> Image.Image:
    """A row's image, decoded by the build's own reader (`imaging.decode_image`: corrupt bytes and
    decompression bombs are an `ImageError`, never a crash or a huge allocation)."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes") is not None:
        return Image.fromarray(decode_image(value["bytes"])[0])
    raise ImageError(f"missing_image: no image bytes ({type(value).__name__})")


def _tiles(row: dict) -> tuple[list[Image.Image], list[str]]:
    """The row's three tiles and what could not be drawn: a bad image is a grey tile and a labelled line."""
    problems, tiles = [], []
    for column in ("images", "rejected_images"):
        try:
            values = row.get(column) or []
            tiles.append(_as_image(values[0] if values else None))
        except ImageError as e:
            problems.append(f"{column}: {str(e)[:120]}")
            tiles.append(None)
    original, perturbed = tiles
    overlay = None
    if original is not None:
        try:
            overlay = _overlay(original, row)
        except Exception as e:  # noqa: BLE001 - a damaged mask or box in a hostile shard
            problems.append(f"mask: {type(e).__name__}")
    return [_fit(t) if t is not None else _blank() for t in (original, overlay, perturbed)], problems


def _blank() -> Image.Image:
    return Image.new("RGB", (TILE, TILE), (120, 120, 120))


def _fit(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (24, 24, 24))
    canvas.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    return canvas


def _text(row: dict) -> list[tuple[str, str]]:
    """(label, value) lines of a row's text cell."""

    def turn_text(turns) -> str:
        parts = turns[0]["content"] if turns else []
        return " ".join(p["text"] for p in parts if p.get("type") == "text" and p.get("text"))

    names = ", ".join(sorted({k["phrase"] for k in row.get("key_objects") or []})) or "(whole image)"
    valid = row.get("image_pair_valid")
    meta = json.loads(row.get("metadata") or "{}")
    validity = "valid" if valid is not False else f"NOT valid ({meta.get('image_pair_invalid', 'see metadata')})"
    difficulty = row.get("difficulty")
    removal = row.get("removal_score")
    lines = [
        ("id", f"{row['id']}   [{row.get('pair_type')}]"),
        ("question", turn_text(row["prompt"])),
        ("chosen", turn_text(row["chosen"])),
        ("rejected", turn_text(row["rejected"])),
        ("key object", names),
        ("negative", negative_label(row)),
        ("image pair", validity),
        ("difficulty", f"{difficulty:.3f} ({row.get('difficulty_bucket')})" if difficulty is not None else "-"),
    ]
    if removal:
        lines.append(("removal", f"detector {removal['before']:.2f} on m, {removal['after']:.2f} in its region on m'"))
    elif row.get("key_objects"):
        lines.append(("removal", "not verified (no detector re-checked m')"))
    return lines


def _overlay(img: Image.Image, row: dict) -> Image.Image:
    arr = np.asarray(img).astype(np.float32)
    if row.get("mask"):
        mask = rle_decode(row["mask"])
        if mask.shape == arr.shape[:2]:
            arr[mask] = 0.45 * arr[mask] + 0.55 * np.array([255, 40, 40], np.float32)
    out = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for k in row.get("key_objects") or []:
        if k.get("box_xyxy"):
            x0, y0, x1, y1 = k["box_xyxy"]
            draw.rectangle([x0, y0, x1, y1], outline=(255, 230, 0), width=max(1, img.width // 200))
            draw.text((x0 + 3, y0 + 2), k["phrase"], fill=(255, 230, 0))
    return out


def render_grid(rows: Iterable[dict], out_path: str | Path, n: int = 12) -> Path:
    """Draw up to `n` rows (as decoded from the dataset, or raw with image bytes) into one PNG."""
    rows = list(islice(rows, n))
    if not rows:
        raise ValueError("no rows to draw")
    font, bold = _font(), _font(FONT_SIZE + 1, bold=True)
    label_w = 92
    grid = Image.new("RGB", (3 * TILE + TEXT_W, HEADER_H + len(rows) * TILE), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    draw.rectangle([0, 0, grid.width, HEADER_H - 1], fill=(235, 235, 240))
    for j, title in enumerate(HEADERS):
        draw.text((j * TILE + 8, 7), title, fill=(20, 20, 20), font=bold)
    chars = max(20, (TEXT_W - label_w - 16) // 8)  # about 8 px per character at this size
    for i, row in enumerate(rows):
        top = HEADER_H + i * TILE
        tiles, problems = _tiles(row)
        for j, tile in enumerate(tiles):
            grid.paste(tile, (j * TILE, top))
        y = top + 6
        try:
            lines = _text(row)
        except Exception as e:  # noqa: BLE001 - damaged metadata or texts in a hostile shard
            lines = [("id", str(row.get("id"))), ("skipped", f"texts: {type(e).__name__}")]
        for label, value in [("skipped", p) for p in problems] + lines:
            wrapped = textwrap.wrap(value, chars) or [""]
            colour = (170, 0, 0) if label == "skipped" or label == "image pair" and value.startswith("NOT") else (0, 0, 0)
            draw.text((3 * TILE + 8, y), label, fill=(90, 90, 90), font=font)
            for line in wrapped[:3]:
                if y > top + TILE - FONT_SIZE - 4:
                    break
                draw.text((3 * TILE + 8 + label_w, y), line, fill=colour, font=font)
                y += FONT_SIZE + 4
        draw.line([(0, top + TILE - 1), (grid.width, top + TILE - 1)], fill=(200, 200, 200))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_path)
    return out_path


INSPECT_COLUMNS = ("images", "rejected_images", "chosen", "rejected")


def _columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not parquet
        raise ValueError(f"{path} is not a readable parquet file ({type(e).__name__})") from None


def read_rows(path: str | Path, n: int = 12, seed: int | None = None) -> list[dict]:
    """The first `n` rows (or `n` seeded-random rows) of a build or dataset folder, images as raw bytes."""
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    files = sorted(path.glob("data/*.parquet")) or sorted(path.glob("**/*.parquet")) if path.is_dir() else [path]
    files = [f for f in files if "staging" not in f.parts]
    if not files:
        if (path / "staging").is_dir() or (path / "recipe.resolved.yaml").is_file():
            raise FileNotFoundError(f"{path} is a build that has not finished: it has no data/*.parquet yet "
                                    "(rerun the same mfpo-data build command to complete it)")
        raise FileNotFoundError(f"{path} holds no parquet files: pass a build output folder (with data/*.parquet), "
                                "a dataset folder or a parquet file")
    missing = [c for c in INSPECT_COLUMNS if c not in _columns(files[0])]
    if missing:
        raise ValueError(f"{files[0]} is not an mfpo dataset: it lacks {', '.join(missing)}, which inspect draws")
    rows = []
    for f in files:
        rows += pq.read_table(f).to_pylist()
        if seed is None and len(rows) >= n:
            break
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(rows))[:n]
        rows = [rows[i] for i in sorted(order)]
    return rows[:n]
