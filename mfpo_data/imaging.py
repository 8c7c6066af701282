"""The only place with image I/O, box and mask conversions, RLE and compositing.

Images inside the pipeline are RGB `uint8` arrays of shape (H, W, 3); masks are `bool` arrays of
shape (H, W); boxes are absolute-pixel `(x0, y0, x1, y1)`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb limit


class ImageError(ValueError):
    """An image that cannot be used; the message is a short reason code plus detail."""


def confined_path(root: Path, relative: str) -> Path:
    """`root / relative`, refusing any path that leaves `root` (absolute paths, `..`, symlinks out)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise ImageError(f"path_escapes_root: {relative!r} is outside {root}")
    return candidate


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bool]:
    """Decode image bytes to RGB uint8, applying EXIF orientation.

    Returns `(array, lossless_as_is)`: the second is True when the file's own bytes show exactly this
    array (a plain RGB JPEG or PNG with no rotation), so it can be embedded without re-encoding.
    """
    if not data:
        raise ImageError("empty_file: zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:
                raise ImageError(f"too_many_pixels: {img.width}x{img.height} > {max_pixels}")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"too_many_pixels: {e}") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise ImageError(f"undecodable_image: {type(e).__name__}: {e}") from None
    fmt = img.format
    orientation = img.getexif().get(0x0112, 1)
    as_is = fmt in ("JPEG", "PNG") and img.mode == "RGB" and orientation in (None, 1)
    if orientation not in (None, 1):
        img = ImageOps.exif_transpose(img)
    img = to_rgb(img)
    return np.asarray(img, dtype=np.uint8).copy(), as_is


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, compositing transparency over white and scaling 16-bit channels down to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def clip_box(box, width: int, height: int):
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
    y0, y1 = sorted((min(max(y0, 0.0), height), min(max(y1, 0.0), height)))
    return (x0, y0, x1, y1)


def xywh_to_xyxy(box) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def cxcywh_norm_to_xyxy_px(box, width: int, height: int) -> tuple[float, float, float, float]:
    cx, cy, w, h = (float(v) for v in box)
    return clip_box(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height), width, height)


def box_area(box) -> float:
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def mask_from_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """COCO polygons, uncompressed RLE or compressed RLE -> bool (H, W)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            raise ImageError("bad_segmentation: no polygon with 3 or more points")
        rles = mask_utils.frPyObjects(polygons, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = list(segmentation.get("size", ()))
        if size != [height, width]:
            raise ImageError(f"mask_size_mismatch: RLE size {size} vs image {[height, width]}")
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle["counts"], str):
            rle = {"size": size, "counts": rle["counts"].encode("ascii")}
    else:
        raise ImageError(f"bad_segmentation: unsupported type {type(segmentation).__name__}")
    return mask_utils.decode(rle).astype(bool)


def box_mask(box, height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = clip_box(box, width, height)
    mask = np.zeros((height, width), dtype=bool)
    mask[int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = True
    return mask


def rle_encode(mask: np.ndarray) -> dict:
    """bool (H, W) -> COCO compressed RLE with a str `counts` (JSON- and Arrow-friendly)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)


def composite(original: np.ndarray, edited: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """`edited` inside `mask`, `original` everywhere else (bit-identical); the whole edit when mask is None."""
    if edited.shape != original.shape:
        raise ValueError(f"edited image shape {edited.shape} differs from original {original.shape}")
    if mask is None:
        return edited
    if mask.shape != original.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image {original.shape[:2]}")
    return np.where(mask[..., None], edited, original)
