"""A PNG grid for looking at a build: original, key-object mask overlay, perturbed image, the texts."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mfpo_data.imaging import rle_decode


TILE = 224
TEXT_W = 420


def _as_image(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, dict) and value.get("bytes") is not None:
        return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
    raise ValueError(f"cannot read image from {type(value).__name__}")


def _fit(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail((TILE, TILE))
    canvas = Image.new("RGB", (TILE, TILE), (24, 24, 24))
    canvas.paste(img, ((TILE - img.width) // 2, (TILE - img.height) // 2))
    return canvas


def _text(row: dict) -> str:
    def turn_text(turns) -> str:
        parts = turns[0]["content"] if turns else []
        return " ".join(p["text"] for p in parts if p.get("type") == "text" and p.get("text"))

    names = ", ".join(sorted({k["phrase"] for k in row.get("key_objects") or []})) or "(whole image)"
    params = json.loads(row.get("perturbation_params") or "{}")
    return "\n".join(
        [
            f"{row['id']}  [{row.get('pair_type')}]",
            f"Q: {turn_text(row['prompt'])}",
            f"chosen:   {turn_text(row['chosen'])}",
            f"rejected: {turn_text(row['rejected'])}",
            f"key object: {names}",
            f"perturbation: {row.get('perturbation')} t={params.get('t', '-')} region={params.get('region', '-')}",
            f"difficulty: {row.get('difficulty') or 0:.3f} ({row.get('difficulty_bucket')})",
        ]
    )


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


def render_grid(rows: Iterable[dict], out_path: str | Path, n: int = 8) -> Path:
    """Draw up to `n` rows (as decoded from the dataset, or raw with image bytes) into one PNG."""
    rows = list(islice(rows, n))
    if not rows:
        raise ValueError("no rows to draw")
    font = ImageFont.load_default()
    grid = Image.new("RGB", (3 * TILE + TEXT_W, len(rows) * TILE), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i, row in enumerate(rows):
        original = _as_image(row["images"][0])
        perturbed = _as_image(row["rejected_images"][0])
        tiles = [original, _overlay(original, row), perturbed]
        for j, tile in enumerate(tiles):
            grid.paste(_fit(tile), (j * TILE, i * TILE))
        lines = []
        for line in _text(row).splitlines():
            lines += textwrap.wrap(line, 66) or [""]
        draw.multiline_text((3 * TILE + 8, i * TILE + 8), "\n".join(lines[:16]), fill=(0, 0, 0), font=font, spacing=3)
        draw.line([(0, (i + 1) * TILE - 1), (grid.width, (i + 1) * TILE - 1)], fill=(200, 200, 200))
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


def read_rows(path: str | Path, n: int = 8, seed: int | None = None) -> list[dict]:
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
