"""recipes/coco_grounded.yaml end to end on the bundled sample with tiny random models loaded from folders."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mfpo_data.imaging import rle_decode
from mfpo_data.pipeline.build import build_dataset


pytest.importorskip("transformers")
pytest.importorskip("diffusers")

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "coco_grounded.yaml"


@pytest.fixture(scope="module")
def grounded(tmp_path_factory, tiny_gdino, tiny_sam, tiny_sd, tiny_llava):
    perturbation = (f"perturbation={{backend: sd_inpaint, model_id: {tiny_sd}, revision: null, resolution: 32, "
                    "num_inference_steps: 2, guidance_scale: 1.0, device: cpu, batch_size: 8}")
    overrides = [
        f"grounding.model_id={tiny_gdino}", "grounding.box_threshold=0.05", "grounding.text_threshold=0.05",
        "grounding.revision=null", "grounding.device=cpu",
        f"segmentation.model_id={tiny_sam}", "segmentation.revision=null", "segmentation.device=cpu",
        "filters.max_mask_area_ratio=1.0", perturbation,
        f"scoring={{backend: entropy, model_id: {tiny_llava}, device: cpu}}",
        "output.progress=false", "source.limit=6",
    ]
    return build_dataset(RECIPE, overrides, tmp_path_factory.mktemp("grounded"))


def test_rows_carry_boxes_scores_masks_and_model_ids(grounded, tiny_gdino, tiny_sam, tiny_sd, tiny_llava):
    rows = [r for shard in grounded.final_shards() for r in pq.read_table(shard).to_pylist()]
    assert len(rows) >= 12
    with_region = 0
    for row in rows:
        params = json.loads(row["perturbation_params"])
        assert row["perturbation"] == "sd_inpaint" and params["model_id"] == str(tiny_sd) and "revision" in params
        if params["region"] != "key_object":
            continue
        with_region += 1
        original = np.asarray(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))
        rejected = np.asarray(Image.open(io.BytesIO(row["rejected_images"][0]["bytes"])).convert("RGB"))
        h, w = original.shape[:2]
        assert row["key_objects"]
        for k in row["key_objects"]:
            x0, y0, x1, y1 = k["box_xyxy"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and 0.05 < k["score"] <= 1
        mask = rle_decode(row["mask"])
        assert mask.shape == (h, w) and mask.any()
        assert np.array_equal(original[~mask], rejected[~mask])
        assert row["difficulty"] is not None and row["difficulty_bucket"] in ("easy", "medium", "hard")
    assert with_region >= len(rows) // 2  # low thresholds: random models find boxes

    backends = grounded.read_stats()["backends"]
    assert backends["keywords"]["backend"] == "graph"
    assert (backends["grounding"]["backend"], backends["grounding"]["model_id"]) == ("grounding_dino", str(tiny_gdino))
    assert (backends["segmentation"]["backend"], backends["segmentation"]["model_id"]) == ("sam", str(tiny_sam))
    assert "revision" in backends["grounding"] and "revision" in backends["segmentation"]
    assert backends["perturbation"]["model_id"] == str(tiny_sd) and "revision" in backends["perturbation"]
    assert backends["scoring"]["model_id"] == str(tiny_llava) and "revision" in backends["scoring"]


def test_model_stages_in_threads_write_the_same_bytes_as_one_thread(tmp_path, tiny_gdino, tiny_sam):
    """Grounding DINO, SAM and the removal check (which shares the grounder, from another thread) give
    the same rows with the overlap on and off."""
    from tests.fixtures.builds import rows_by_id

    overrides = [
        f"grounding.model_id={tiny_gdino}", "grounding.box_threshold=0.05", "grounding.text_threshold=0.05",
        "grounding.revision=null", "grounding.device=cpu",
        f"segmentation.model_id={tiny_sam}", "segmentation.revision=null", "segmentation.device=cpu",
        "filters.max_mask_area_ratio=1.0", "perturbation={backend: opencv_inpaint}", "scoring={backend: heuristic}",
        "output.progress=false", "source.limit=6",
    ]
    on = build_dataset(RECIPE, overrides, tmp_path / "on")
    off = build_dataset(RECIPE, [*overrides, "executor.overlap=false", "output.encode_threads=0"], tmp_path / "off")
    a, b = rows_by_id(on), rows_by_id(off)
    assert len(a) >= 12 and a.keys() == b.keys()
    assert any(row["removal_score"] is not None for row in a.values())  # the shared grounder ran twice per row
    for key in a:
        assert a[key] == b[key], key
