import io

import numpy as np
import pytest
from PIL import Image

from mfpo_data.imaging import (
    ImageError,
    composite,
    confined_path,
    cxcywh_norm_to_xyxy_px,
    decode_image,
    mask_from_segmentation,
    rle_decode,
    rle_encode,
)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rle_round_trip_and_polygon_mask():
    mask = mask_from_segmentation([[10, 10, 30, 10, 30, 20, 10, 20]], 40, 50)
    assert mask.shape == (40, 50) and mask.dtype == bool
    assert 150 <= mask.sum() <= 260  # a 20x10 rectangle, pixel-rasterised
    rle = rle_encode(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [40, 50]
    assert np.array_equal(rle_decode(rle), mask)
    assert np.array_equal(mask_from_segmentation(rle, 40, 50), mask)


def test_rle_of_wrong_size_is_refused():
    rle = rle_encode(np.ones((8, 8), bool))
    with pytest.raises(ImageError, match="mask_size_mismatch"):
        mask_from_segmentation(rle, 10, 10)


def test_confined_path_refuses_escapes(tmp_path):
    (tmp_path / "img").mkdir()
    assert confined_path(tmp_path / "img", "a.jpg") == (tmp_path / "img" / "a.jpg").resolve()
    for bad in ("../secret.jpg", "/etc/passwd", "sub/../../x.jpg"):
        with pytest.raises(ImageError, match="path_escapes_root"):
            confined_path(tmp_path / "img", bad)


def test_decode_plain_jpeg_is_embedded_as_is():
    data = _encode(Image.new("RGB", (20, 10), (200, 30, 30)), "JPEG")
    arr, as_is = decode_image(data)
    assert arr.shape == (10, 20, 3) and as_is


def test_decode_applies_exif_orientation():
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 5, 10))  # white strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    arr, as_is = decode_image(_encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert arr.shape == (30, 10, 3) and not as_is  # rotated, so re-encoded
    assert arr[:5, :, 0].mean() > 200  # the strip is now on top


@pytest.mark.parametrize(
    "img,fmt",
    [
        (Image.new("CMYK", (12, 8), (0, 255, 255, 0)), "JPEG"),
        (Image.fromarray(np.full((8, 12), 40000, np.uint16)), "PNG"),
        (Image.new("LA", (12, 8), (100, 0)), "PNG"),
    ],
    ids=["cmyk", "16bit", "gray_alpha"],
)
def test_decode_odd_modes_gives_rgb(img, fmt):
    arr, as_is = decode_image(_encode(img, fmt))
    assert arr.shape == (8, 12, 3) and arr.dtype == np.uint8 and not as_is


def test_palette_transparency_composited_on_white():
    img = Image.new("P", (6, 6), 0)
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    arr, _ = decode_image(_encode(img, "PNG", transparency=0))
    assert (arr == 255).all()


@pytest.mark.parametrize("data,reason", [(b"", "empty_file"), (b"\xff\xd8\xff\xe0garbage", "undecodable_image")])
def test_decode_bad_bytes(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data)


def test_decode_truncated_and_oversized():
    data = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(ImageError, match="undecodable_image"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(ImageError, match="too_many_pixels"):
        decode_image(data, max_pixels=1000)


def test_composite_keeps_outside_bit_identical():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:9, 2:7] = True
    out = composite(a, b, mask)
    assert np.array_equal(out[~mask], a[~mask]) and np.array_equal(out[mask], b[mask])
    assert composite(a, b, None) is b
    with pytest.raises(ValueError):
        composite(a, b, np.zeros((4, 4), bool))


def test_composite_follows_a_non_rectangular_mask_not_its_box():
    """A disc: the corners of its bounding box are outside the mask and must keep the original pixels."""
    a, b = np.zeros((21, 21, 3), np.uint8), np.full((21, 21, 3), 255, np.uint8)
    yy, xx = np.mgrid[:21, :21]
    disc = (yy - 10) ** 2 + (xx - 10) ** 2 <= 36  # box rows/cols 4..16
    out = composite(a, b, disc)
    assert np.array_equal(out[disc], b[disc]) and np.array_equal(out[~disc], a[~disc])
    assert (out[4:17, 4:17] == 0).any()  # box pixels outside the disc stayed original


def test_cxcywh_conversion():
    assert cxcywh_norm_to_xyxy_px((0.5, 0.5, 0.5, 1.0), 100, 50) == (25.0, 0.0, 75.0, 50.0)
