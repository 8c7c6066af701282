"""m' as the original's own JPEG with only the blocks that the edit touches re-encoded (`output.image_format:
jpeg_blocks`).

A perturbed image differs from its original only around the key object, and the original is usually a JPEG
embedded as it is. A lossless m' stores the whole decoded photo again (on COCO-like images 5-10x the
original's bytes). Here m' keeps the original's quantised DCT coefficients in every 8x8 block (of each
component: a subsampled chroma block covers 16x16 pixels in 4:2:0) that the edit does not touch, and takes
the blocks it does touch from a JPEG encoding of m' at the original's own quantisation tables and chroma
subsampling. A decoder then gives back, bit for bit, the original's pixels everywhere except in the touched
blocks and a band of at most 2 pixels around them (chroma upsampling reads neighbouring chroma samples).
Inside the touched blocks the edit is JPEG-compressed like the rest of the photo: pixels of those blocks
outside the mask move by a few levels (`benchmarks/m_prime_encoding.py` and `benchmarks/build_throughput.py`
report how many and by how much), and the key region holds the edit as a JPEG of the original's quality.
m' carries none of the original's APP or COM markers (EXIF, ICC), as a lossless m' carries none.

Every encoding is checked by decoding it: beyond the touched blocks and the band every pixel must be the
original's, and inside the touched luma blocks (away from the untouched ones by the band) every pixel must be
that of the edited image JPEG-encoded on its own at the same tables. Where either fails, or the original is not
a 3-component YCbCr JPEG whose tables and subsampling Pillow reproduces, or jpeglib cannot read or write it,
`encode` returns None and the writer embeds m' losslessly instead. jpeglib (the `jpeg` extra) reads and writes
the coefficients, one call at a time.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading

import numpy as np
from PIL import Image

from mfpo_data.imaging import decode_image


BAND = 2  # pixels around the touched blocks that chroma upsampling may change (2x subsampling at most)
# jpeglib keeps a JPEG's markers in C globals while it reads one, and releases the GIL: one call at a time.
_JPEGLIB = threading.Lock()


def available() -> bool:
    try:
        import jpeglib  # noqa: F401
    except ImportError:
        return False
    return True


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint8 (H, W): nonzero where any channel of the RGB arrays `a` and `b` differs."""
    import cv2

    d = cv2.split(cv2.absdiff(a, b))
    return cv2.max(cv2.max(d[0], d[1]), d[2])


def _touched(changed: np.ndarray, block_h: int, block_w: int, shape: tuple[int, int]) -> np.ndarray:
    """Which blocks of a component's `shape` (blocks down, blocks across) hold a changed pixel (`changed`:
    nonzero, uint8); a block covers `block_h` x `block_w` pixels of the image."""
    import cv2

    rows, cols = shape
    padded = np.zeros((rows * block_h, cols * block_w), dtype=np.float32)
    h, w = min(changed.shape[0], padded.shape[0]), min(changed.shape[1], padded.shape[1])
    padded[:h, :w] = changed[:h, :w]
    # An integer-factor INTER_AREA resize is the mean of each block: above 0 when any pixel in it is.
    return cv2.resize(padded, (cols, rows), interpolation=cv2.INTER_AREA) > 0


def _around(blocks: np.ndarray) -> np.ndarray:
    """uint8 (H, W): `blocks` (a `footprint`) grown by the band that chroma upsampling may reach."""
    import cv2

    return cv2.dilate(blocks, np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8))


def footprint(changed: np.ndarray, block_h: int, block_w: int) -> np.ndarray:
    """uint8 (H, W): 1 on the pixels of the blocks (of `block_h` x `block_w` pixels) that hold a changed pixel."""
    import cv2

    h, w = changed.shape
    rows, cols = -(-h // block_h), -(-w // block_w)
    blocks = _touched(changed, block_h, block_w, (rows, cols)).astype(np.uint8)
    return cv2.resize(blocks, (cols * block_w, rows * block_h), interpolation=cv2.INTER_NEAREST)[:h, :w]


def encode(original_jpeg: bytes, original: np.ndarray, edited: np.ndarray) -> bytes | None:
    """m' (`edited`) as `original_jpeg` with the touched blocks replaced, or None where that cannot be done
    exactly (see the module notes). `original` is `original_jpeg` decoded by Pillow (RGB uint8)."""
    import cv2
    from PIL import JpegImagePlugin

    if original.shape != edited.shape or original.ndim != 3:
        return None
    try:
        with Image.open(io.BytesIO(original_jpeg)) as im:
            if im.format != "JPEG" or im.mode != "RGB" or im.size != (original.shape[1], original.shape[0]):
                return None
            qtables, sampling = im.quantization, JpegImagePlugin.get_sampling(im)
    except Exception:  # noqa: BLE001 - any unreadable header: embed m' losslessly
        return None
    if sampling not in (0, 1, 2) or not qtables:  # 4:4:4, 4:2:2, 4:2:0; odd layouts are left to the lossless path
        return None
    changed = _changed(original, edited)
    if not cv2.countNonZero(changed):
        return original_jpeg
    buf = io.BytesIO()
    Image.fromarray(edited).save(buf, format="JPEG", qtables=qtables, subsampling=sampling)
    whole = buf.getvalue()
    try:
        spliced = _splice(original_jpeg, whole, changed)
    except Exception:  # noqa: BLE001 - what Pillow read but libjpeg does not, a full temp folder: the lossless path
        return None
    if spliced is None:
        return None
    data, (v_max, h_max), luma_block = spliced
    try:
        decoded, reference = (decode_image(b)[0] for b in (data, whole))
    except Exception:  # noqa: BLE001
        return None
    if decoded.shape != original.shape or reference.shape != original.shape:
        return None
    # Beyond the touched blocks and the band: the original's pixels.
    moved = _changed(decoded, original)
    moved[_around(footprint(changed, 8 * v_max, 8 * h_max)) > 0] = 0
    # Inside the touched luma blocks, away from the untouched ones: the edit as Pillow encodes it on its own (a
    # splice into the wrong component or table would show here).
    other = _changed(decoded, reference)
    other[cv2.erode(footprint(changed, *luma_block), np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8)) == 0] = 0
    return None if cv2.countNonZero(moved) or cv2.countNonZero(other) else data


def _splice(original_jpeg: bytes, whole_jpeg: bytes, changed: np.ndarray):
    """`original_jpeg` with the blocks that hold a changed pixel taken from `whole_jpeg` (the edited image at the
    same tables and subsampling): (bytes, the largest sampling factors (vertical, horizontal), a luma block's
    size in pixels), or None where the two do not line up. The original's APP and COM markers are not copied
    (EXIF, ICC: a lossless m' has none either, and an EXIF thumbnail would show the unedited photo)."""
    import jpeglib

    with _JPEGLIB, tempfile.TemporaryDirectory(prefix="mfpo-jpeg-") as folder:
        paths = {name: os.path.join(folder, f"{name}.jpg") for name in ("original", "edited", "out")}
        for name, data in (("original", original_jpeg), ("edited", whole_jpeg)):
            with open(paths[name], "wb") as f:
                f.write(data)
        base, new = jpeglib.read_dct(paths["original"]), jpeglib.read_dct(paths["edited"])
        base.load()
        new.load()
        if not (base.jpeg_color_space == new.jpeg_color_space == jpeglib.JCS_YCbCr and base.has_chrominance
                and np.array_equal(base.qt, new.qt) and np.array_equal(base.quant_tbl_no, new.quant_tbl_no)
                and np.array_equal(base.samp_factor, new.samp_factor)):  # fmt: skip
            return None  # an Adobe RGB JPEG, tables mapped to components otherwise than Pillow maps them, ...
        factors = np.asarray(base.samp_factor)  # (component, (vertical, horizontal))
        v_max, h_max = int(factors[:, 0].max()), int(factors[:, 1].max())
        planes = []
        for (v, h), old, fresh in zip(factors, (base.Y, base.Cb, base.Cr), (new.Y, new.Cb, new.Cr), strict=True):
            if old.shape != fresh.shape:
                return None
            blocks = _touched(changed, 8 * v_max // int(v), 8 * h_max // int(h), old.shape[:2])
            plane = old.copy()
            plane[blocks] = fresh[blocks]
            planes.append(plane)
        base.Y, base.Cb, base.Cr = planes
        base.markers, base.content = [], None  # no markers; and jpeglib then writes no copy of the original
        base.write_dct(paths["out"])
        with open(paths["out"], "rb") as f:
            data = f.read()
    luma = (8 * v_max // int(factors[0][0]), 8 * h_max // int(factors[0][1]))
    return data, (v_max, h_max), luma


def outside_mask(original: np.ndarray, perturbed: np.ndarray, mask: np.ndarray) -> dict[str, int]:
    """What m' changed outside the key mask (bool (H, W)): the pixels outside it (`outside`), those that differ
    from the original in any channel (`changed`), their summed largest channel difference (`abs_diff`), and the
    changed ones beyond the mask's 16-pixel blocks and the band (`beyond_blocks`: 0 for every encoding here)."""
    import cv2

    diff = _changed(original, perturbed)
    inside = mask.astype(np.uint8)
    diff[inside > 0] = 0
    far = diff.copy()
    far[_around(footprint(inside, 16, 16)) > 0] = 0
    return {"outside": int(inside.size - cv2.countNonZero(inside)), "changed": int(cv2.countNonZero(diff)),
            "abs_diff": int(diff.sum(dtype=np.int64)), "beyond_blocks": int(cv2.countNonZero(far))}  # fmt: skip
