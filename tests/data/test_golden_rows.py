"""The rows a build writes do not change when the build gets faster: each case builds the bundled sample and
compares its rows with the digests in golden_rows.json, made before the writer, finalize and perturber changes
of issue 29 by the code of that time. With `output.image_format: png` (that code's only format) the rows must be
byte-identical, image bytes included; with the default WebP, every column and every pixel must be identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mfpo_data.pipeline.build import build_dataset
from tests.fixtures.builds import rows_digest


GOLDEN = json.loads((Path(__file__).parent / "golden_rows.json").read_text())


def _build(tmp_path, case: str, *extra: str):
    return build_dataset("coco", ["output.progress=false", *GOLDEN[case]["overrides"], *extra], tmp_path / case)


@pytest.mark.parametrize("case", ["default", "global", "random", "gaussian", "blur"])
def test_png_rows_are_byte_identical_to_the_golden_build(tmp_path, case):
    layout = _build(tmp_path, case, "output.image_format=png")
    assert layout.read_stats()["rows"] == GOLDEN[case]["rows"]
    assert rows_digest(layout) == GOLDEN[case]["bytes"]


@pytest.fixture(scope="module")
def webp_build(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("webp"), "default")


def test_webp_rows_have_the_golden_rows_pixels(webp_build):
    layout = webp_build
    assert layout.read_stats()["rows"] == GOLDEN["default"]["rows"]
    assert rows_digest(layout, pixels=True) == GOLDEN["default"]["pixels"]
    assert rows_digest(layout) != GOLDEN["default"]["bytes"]  # m' is WebP now: other bytes, the same pixels


def test_originals_are_stored_once_per_row_group_and_webp_m_prime_is_smaller_than_png(webp_build):
    """What DATASHEET.md says of the image bytes: the rows of one image are adjacent and the original's bytes
    dictionary-encoded, so each is stored once per row group; m' as WebP takes fewer bytes than as PNG."""
    import hashlib
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from mfpo_data.imaging import encode_png
    from mfpo_data.pipeline.finalize import IMAGE_BYTES

    (shard,) = webp_build.final_shards()
    meta = pq.ParquetFile(shard).metadata
    stored, distinct = 0, 0
    table = pq.read_table(shard, columns=["images", "rejected_images"])
    originals = [r[0]["bytes"] for r in table.column("images").to_pylist()]
    for g in range(meta.num_row_groups):
        column = next(meta.row_group(g).column(c) for c in range(meta.num_columns)
                      if meta.row_group(g).column(c).path_in_schema == IMAGE_BYTES[0])  # fmt: skip
        assert column.has_dictionary_page
        stored += column.total_compressed_size
        start = sum(meta.row_group(k).num_rows for k in range(g))
        group = originals[start : start + meta.row_group(g).num_rows]
        distinct += sum(len(b) for b in {hashlib.sha256(b).digest(): b for b in group}.values())
    assert distinct <= stored < 1.1 * distinct < 0.9 * sum(map(len, originals))  # once per row group, not per pair
    webp = [r[0]["bytes"] for r in table.column("rejected_images").to_pylist()[:6]]
    for data in webp:
        with Image.open(io.BytesIO(data)) as img:
            assert img.format == "WEBP"
            png = encode_png(np.asarray(img.convert("RGB")))
        assert len(data) < len(png)
