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


def test_webp_rows_have_the_golden_rows_pixels(tmp_path):
    layout = _build(tmp_path, "default")
    assert layout.read_stats()["rows"] == GOLDEN["default"]["rows"]
    assert rows_digest(layout, pixels=True) == GOLDEN["default"]["pixels"]
    assert rows_digest(layout) != GOLDEN["default"]["bytes"]  # m' is WebP now: other bytes, the same pixels
