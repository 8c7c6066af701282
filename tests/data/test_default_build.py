"""The default build: `mfpo-data build --recipe coco` on the sample bundled with the package."""

import json

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from mfpo_data.cli import app
from mfpo_data.imaging import rle_decode
from mfpo_data.layout import OutputLayout
from mfpo_data.schema import features
from mfpo_data.sources.coco import BUNDLED_COCO


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "out"
    result = CliRunner().invoke(app, ["build", "--recipe", "coco", "--output", str(out), "--set", "output.progress=false"])
    assert result.exit_code == 0, result.output
    assert "built" in result.output
    return OutputLayout(out)


def test_bundled_sample_is_small_and_licensed():
    images = sorted((BUNDLED_COCO / "sample").glob("*.jpg"))
    assert len(images) >= 12
    assert sum(p.stat().st_size for p in BUNDLED_COCO.rglob("*") if p.is_file()) < 3 * 1024 * 1024
    for image in images:
        assert (BUNDLED_COCO / "LICENSES" / f"{image.stem}.txt").is_file(), image.name
    captions = json.loads((BUNDLED_COCO / "annotations" / "captions_sample.json").read_text())["annotations"]
    assert all(sum(c["image_id"] == i for c in captions) == 5 for i in range(1, len(images) + 1))


def test_default_build_rows_categories_and_pair_types(build):
    stats = build.read_stats()
    assert stats["rows"] >= 30
    assert len(stats["categories"]) >= 8
    assert set(stats["pair_types"]) == {"caption", "presence"}
    assert stats["dropped"] == {}


def test_default_build_loads_with_the_schema_and_keeps_pixels_outside_the_mask(build):
    ds = datasets.load_dataset("parquet", data_files=str(build.data_dir / "*.parquet"), split="train")
    assert ds.features == features()
    for row in ds:
        original, rejected = row["images"][0], row["rejected_images"][0]
        assert rejected.size == original.size
        a, b = np.asarray(original.convert("RGB")), np.asarray(rejected.convert("RGB"))
        if row["mask"] is None:
            assert json.loads(row["perturbation_params"])["region"] == "whole_image"
            continue
        mask = rle_decode(row["mask"])
        assert np.array_equal(a[~mask], b[~mask])
        assert (a[mask] != b[mask]).any(axis=-1).mean() > 0.5


def test_inspect_draws_a_grid(build, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["inspect", str(build.root), "--n", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    from mfpo_data.inspect import HEADER_H, TILE, _text

    with Image.open(out) as img:
        assert img.width > 3 * TILE and img.height == HEADER_H + 4 * TILE
    rows = datasets.load_dataset("parquet", data_files=str(build.data_dir / "*.parquet"), split="train").with_format(None)
    absent = next(r for r in rows if json.loads(r["metadata"]).get("answer") == "no")
    labels = dict(_text(absent))
    assert labels["image pair"].startswith("NOT valid (absent_object")
    assert labels["negative"] == "diffusion_noise t=500 on key_object" and labels["key object"]


def test_every_valid_image_pair_perturbs_what_the_chosen_answer_claims(build):
    """L_image prefers the chosen answer on m over m': a valid pair's m' must make that answer less true.
    "No, there is no X" is as true on any m' (nothing of m is an X), so those rows are not valid; every
    valid row perturbs a key object that its chosen answer names as present."""
    from mfpo_data.textpairs.vocabulary import find_mentions

    ds = datasets.load_dataset("parquet", data_files=str(build.data_dir / "*.parquet"), split="train")
    invalid = 0
    for row in ds:
        meta = json.loads(row["metadata"])
        if meta.get("answer") == "no":
            assert row["image_pair_valid"] is False, row["id"]
            assert meta["image_pair_invalid"].startswith("absent_object:")
            invalid += 1
            continue
        assert row["image_pair_valid"] is True, row["id"]
        key = {k["category"] for k in row["key_objects"]}
        named = {m.category for m in find_mentions(row["chosen_text"])}
        assert key and key <= named, (row["id"], key, named)
        assert row["mask"] is not None and json.loads(row["perturbation_params"])["region"] == "key_object"
    assert invalid == build.read_stats()["invalid_image_pairs"]["absent_object"] > 0
