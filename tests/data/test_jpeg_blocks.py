"""`output.image_format: jpeg_blocks`: m' is the original's JPEG with only the edited blocks re-encoded. Outside those
blocks and a 2 px band, m' decodes to the original's pixels bit for bit; every encoding is checked, and what cannot
be done exactly falls back to lossless WebP."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mfpo_data.config import ConfigError, load_recipe
from mfpo_data.imaging import decode_image, encode_webp
from mfpo_data.schema import Sample
from mfpo_data.sources.coco import BUNDLED_COCO


pytest.importorskip("jpeglib")
jpeg_blocks = pytest.importorskip("mfpo_data.jpeg_blocks")

PHOTO = BUNDLED_COCO / "sample" / "astronaut.jpg"


def _jpeg(variant: str) -> bytes:
    """The sample photo as it is, or re-saved: 4:4:4, 4:2:2, a size that is no multiple of 16, progressive."""
    raw = PHOTO.read_bytes()
    if variant == "as_is":
        return raw
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    if variant == "odd":
        img = img.crop((0, 0, img.width - 3, img.height - 21))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, subsampling={"444": 0, "422": 1}.get(variant, 2), progressive=variant == "progressive")
    return buf.getvalue()


def _edit(original: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A disc of uniform noise (the kind of edit that compresses worst) and its mask."""
    h, w = original.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    mask = (yy - h * 0.45) ** 2 + (xx - w * 0.55) ** 2 < (min(h, w) * 0.2) ** 2
    edited = original.copy()
    edited[mask] = np.random.default_rng(seed).integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    return edited, mask


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("variant", ["as_is", "444", "422", "odd", "progressive"])
def test_m_prime_keeps_the_original_outside_the_edited_blocks_and_is_smaller(variant):
    data = _jpeg(variant)
    original, as_is = decode_image(data)
    assert as_is
    edited, mask = _edit(original)
    out = jpeg_blocks.encode(data, original, edited)
    assert out is not None and out[:2] == b"\xff\xd8"
    m_prime = _decode(out)
    assert m_prime.shape == original.shape
    report = jpeg_blocks.outside_mask(original, m_prime, mask)
    assert report["beyond_blocks"] == 0
    assert 0 < report["changed"] < report["outside"] * 0.2  # only near the mask
    # the pixels more than 24 px from the mask (a 16 px block's diagonal and the band) are the original's, bit for bit
    import cv2

    far = ~cv2.dilate(mask.astype(np.uint8), np.ones((49, 49), np.uint8)).astype(bool)
    assert far.any() and np.array_equal(m_prime[far], original[far])
    # the edit is there: the noise region is far from the original
    assert np.abs(m_prime[mask].astype(int) - original[mask]).mean() > 40
    assert len(out) < 0.6 * len(encode_webp(edited))


def test_an_unchanged_image_is_the_original_itself():
    data = PHOTO.read_bytes()
    original, _ = decode_image(data)
    assert jpeg_blocks.encode(data, original, original.copy()) == data


def test_what_cannot_be_patched_exactly_is_left_to_the_lossless_path(monkeypatch):
    data = PHOTO.read_bytes()
    original, _ = decode_image(data)
    edited, _ = _edit(original)
    png = io.BytesIO()
    Image.fromarray(original).save(png, format="PNG")
    assert jpeg_blocks.encode(png.getvalue(), original, edited) is None  # not a JPEG
    gray = io.BytesIO()
    Image.fromarray(original).convert("L").save(gray, format="JPEG")
    assert jpeg_blocks.encode(gray.getvalue(), original, edited) is None  # one component
    assert jpeg_blocks.encode(data, original[:-8], edited[:-8]) is None  # not this JPEG's size
    assert jpeg_blocks.encode(b"\xff\xd8 not a jpeg", original, edited) is None
    # The check by decoding: blocks replaced in the wrong place change pixels far from the edit, so m' is refused.
    touched = jpeg_blocks._touched
    monkeypatch.setattr(jpeg_blocks, "_touched", lambda *a: np.roll(touched(*a), 3, axis=1))
    assert jpeg_blocks.encode(data, original, edited) is None


def _with_markers(seed: int) -> bytes:
    """The sample photo re-saved with a large ICC profile and EXIF block (markers jpeglib keeps in C globals)."""
    img = Image.open(PHOTO).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "x" * 5000
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, icc_profile=bytes([seed]) * 20000, exif=exif.tobytes())
    return buf.getvalue()


def test_m_prime_carries_no_marker_and_threads_give_what_one_thread_gives():
    """The writer encodes on several threads: jpeglib, which keeps markers in C globals, is called one at a time
    (without that, JPEGs with large markers crashed the process or swapped their markers)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = []
    for seed in range(3):
        data = _with_markers(seed)
        original, _ = decode_image(data)
        cases.append((data, original, _edit(original, seed)[0]))
    serial = [jpeg_blocks.encode(*case) for case in cases]
    assert all(out is not None for out in serial)
    with Image.open(io.BytesIO(serial[0])) as img:
        assert "icc_profile" not in img.info and "exif" not in img.info  # no EXIF thumbnail of the unedited photo
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda k: jpeg_blocks.encode(*cases[k % 3]), range(60))) == [serial[k % 3] for k in range(60)]


def test_jpegs_whose_components_or_tables_pillow_would_map_otherwise_are_refused(tmp_path):
    import jpeglib

    rgb = np.ascontiguousarray(np.asarray(Image.open(PHOTO).convert("RGB")))
    adobe = jpeglib.from_spatial(rgb)
    adobe.jpeg_color_space = jpeglib.Colorspace.JCS_RGB  # Adobe APP14, no YCbCr transform: Pillow still reads RGB
    adobe.write_spatial(str(tmp_path / "adobe.jpg"), qt=90)
    swapped = jpeglib.read_dct(str(PHOTO))
    swapped.load()
    swapped.qt, swapped.quant_tbl_no = swapped.qt[::-1].copy(), np.array([1, 0, 0])  # luma on table 1
    swapped.write_dct(str(tmp_path / "swapped.jpg"))
    for name in ("adobe.jpg", "swapped.jpg"):
        data = (tmp_path / name).read_bytes()
        original, as_is = decode_image(data)
        assert as_is, name
        assert jpeg_blocks.encode(data, original, _edit(original)[0]) is None, name


def test_the_decode_check_sees_a_wrong_splice_inside_the_blocks(monkeypatch):
    """Chroma planes spliced into the wrong component leave every pixel beyond the blocks as it was; the check of the
    touched blocks against the edit encoded on its own refuses it."""
    import jpeglib

    data = PHOTO.read_bytes()
    original, _ = decode_image(data)
    edited, _ = _edit(original)
    assert jpeg_blocks.encode(data, original, edited) is not None
    read = jpeglib.read_dct

    def swapped_chroma(path):
        jpeg = read(path)
        if path.endswith("edited.jpg"):
            jpeg.load()
            jpeg.Cb, jpeg.Cr = jpeg.Cr.copy(), jpeg.Cb.copy()
        return jpeg

    monkeypatch.setattr(jpeglib, "read_dct", swapped_chroma)
    assert jpeg_blocks.encode(data, original, edited) is None


def test_the_writer_falls_back_to_webp_and_says_which_it_wrote():
    from mfpo_data.stages.s7_writer import ImageEncoder

    data = PHOTO.read_bytes()
    original, _ = decode_image(data)
    edited, mask = _edit(original)
    encoder = ImageEncoder("jpeg_blocks")
    sample = Sample("a:0", "coco", "a", "caption", "q", "y", "n", image=original, image_bytes=data, rejected_image=edited, mask=mask)
    out, how = encoder.perturbed(sample)
    assert how == "jpeg_blocks" and out[:2] == b"\xff\xd8"
    sample.image_bytes = None  # an original that is re-encoded (rotated, CMYK, ...): no JPEG to patch
    out, how = encoder.perturbed(sample)
    assert how == "webp" and np.array_equal(_decode(out), edited)
    assert ImageEncoder("png").perturbed(sample)[1] == "png"
    with pytest.raises(ValueError, match="jpeg_blocks"):
        ImageEncoder("jpeg")


def test_the_recipe_refuses_jpeg_blocks_without_jpeglib(monkeypatch):
    assert load_recipe("coco", ("output.image_format=jpeg_blocks",)).output.image_format == "jpeg_blocks"
    monkeypatch.setattr(jpeg_blocks, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"'output.image_format' is jpeg_blocks, which needs jpeglib: pip install 'mfpo\[jpeg\]'"):
        load_recipe("coco", ("output.image_format=jpeg_blocks",))


def test_a_jpeg_blocks_build_loads_with_datasets_and_keeps_the_original_outside_the_blocks(tmp_path):
    """The bundled sample built both ways: the same rows, m' a JPEG that is a fraction of WebP's bytes, and no pixel
    outside a mask's blocks and band changed."""
    from mfpo_data.imaging import rle_decode
    from mfpo_data.pipeline.build import build_dataset
    from mfpo_data.validate import load_and_validate

    small = ["output.progress=false", "source.limit=6"]
    blocks = build_dataset("coco", [*small, "output.image_format=jpeg_blocks"], tmp_path / "blocks")
    webp = build_dataset("coco", small, tmp_path / "webp")
    stats = blocks.read_stats()
    assert stats["rows"] == webp.read_stats()["rows"] > 0
    assert stats["rejected_image_formats"] == {"jpeg_blocks": stats["rows"]}
    assert webp.read_stats()["rejected_image_formats"] == {"webp": stats["rows"]}
    ds = load_and_validate(blocks.root, split="train").cast_column("images", _raw()).cast_column("rejected_images", _raw())
    ref = load_and_validate(webp.root, split="train").cast_column("images", _raw()).cast_column("rejected_images", _raw())
    total = {"outside": 0, "changed": 0, "beyond_blocks": 0}
    for row, other in zip(ds, ref, strict=True):
        assert row["id"] == other["id"] and row["images"] == other["images"] and row["mask"] == other["mask"]
        assert json.loads(row["perturbation_params"]) == json.loads(other["perturbation_params"])
        assert row["rejected_images"][0]["bytes"][:2] == b"\xff\xd8"
        if row["mask"] is not None:
            part = jpeg_blocks.outside_mask(decode_image(row["images"][0]["bytes"])[0],
                                            decode_image(row["rejected_images"][0]["bytes"])[0], rle_decode(row["mask"]))  # fmt: skip
            total = {k: total[k] + part[k] for k in total}
    assert total["beyond_blocks"] == 0 and 0 < total["changed"] < 0.25 * total["outside"]
    size = lambda d: sum(len(r["rejected_images"][0]["bytes"]) for r in d)  # noqa: E731
    assert size(ds) < 0.5 * size(ref)


def _raw():
    import datasets

    return datasets.List(datasets.Image(decode=False))


def test_the_card_says_when_m_prime_is_not_lossless():
    from mfpo_data.publishing.card import _encoding_note

    assert _encoding_note({"webp": 51}) == "" and _encoding_note({}) == "" and _encoding_note(None) == ""
    text = _encoding_note({"jpeg_blocks": 49, "webp": 2})
    assert text.startswith("\n\n49 rows store the perturbed image as the original's own JPEG with only the 8x8 coefficient blocks")
    assert "pixels near the mask differ slightly from the original. Lossless: 2 webp." in text
