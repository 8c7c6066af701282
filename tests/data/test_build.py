"""End-to-end builds of a generated COCO folder: schema, pixel invariants, sharding, crash-resume, bad input."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from mfpo_data.errors import MfpoError
from mfpo_data.imaging import rle_decode
from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.pipeline.finalize import tertile_buckets
from mfpo_data.schema import features
from tests.fixtures.builds import rows_by_id
from tests.fixtures.coco_folder import add_bad_inputs, make_coco_folder


REPO = Path(__file__).resolve().parents[2]


def _overrides(root, **extra):
    items = [f"source.root={root}", "source.split=val2017", "output.progress=false"]
    return items + [f"{k}={v}" for k, v in extra.items()]


def _run_killable(code: str, env: dict, log: Path) -> int:
    """Run a build in its own process group; output goes to a file, since the executor's manager process
    can outlive a SIGKILLed parent and would hold a pipe open."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=out, stderr=out, start_new_session=True)
        try:
            return proc.wait(timeout=300)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass




@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return make_coco_folder(tmp_path_factory.mktemp("coco"), n_images=8)


@pytest.fixture(scope="module")
def one_task(coco, tmp_path_factory):
    return build_dataset("coco", _overrides(coco), tmp_path_factory.mktemp("out1"))


def test_schema_and_pixel_invariants(one_task):
    ds = datasets.load_dataset("parquet", data_files=str(one_task.data_dir / "*.parquet"), split="train")
    assert ds.features == features()
    assert len(ds) == 8 * 4 and set(ds["pair_type"]) == {"caption", "presence"}
    for row in ds:
        original = np.asarray(row["images"][0].convert("RGB"))
        rejected = np.asarray(row["rejected_images"][0].convert("RGB"))
        assert original.shape == rejected.shape
        assert row["prompt"][0]["content"][0]["type"] == "image"
        assert row["chosen"][0]["role"] == "assistant" and row["chosen_text"] != row["rejected_text"]
        assert row["difficulty_bucket"] in {"easy", "medium", "hard"} and 0 <= row["difficulty"] <= 1
        params = json.loads(row["perturbation_params"])
        assert row["perturbation"] == "diffusion_noise" and params["t"] == 500 and "seed" in params
        mask = rle_decode(row["mask"])
        assert mask.shape == original.shape[:2] and mask.any()
        assert abs(mask.mean() - row["mask_area_ratio"]) < 1e-6
        assert np.array_equal(original[~mask], rejected[~mask])
        assert (original[mask] != rejected[mask]).any(axis=-1).mean() > 0.5
        assert row["key_objects"] and all(len(k["box_xyxy"]) == 4 for k in row["key_objects"])
    stats = one_task.read_stats()
    assert stats["rows"] == 32 and stats["pair_types"] == {"caption": 16, "presence": 16}
    assert sum(stats["difficulty_buckets"].values()) == 32 and set(stats["difficulty_buckets"]) == {"easy", "medium", "hard"}
    assert (one_task.recipe_file.read_text().count("versions:")) == 1


def test_one_and_three_tasks_give_identical_rows(coco, one_task, tmp_path):
    three = build_dataset("coco", _overrides(coco, **{"executor.tasks": 3, "executor.workers": 2}), tmp_path / "out3")
    assert len(three.final_shards()) == 3
    a, b = rows_by_id(one_task), rows_by_id(three)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key  # same ids, same bytes, same buckets


def test_rerun_skips_finished_ranks_and_other_recipe_is_refused(coco, one_task):
    before = {p: p.stat().st_mtime_ns for p in one_task.staging_dir.glob("*.parquet")}
    build_dataset("coco", _overrides(coco), one_task.root)
    assert {p: p.stat().st_mtime_ns for p in one_task.staging_dir.glob("*.parquet")} == before
    with pytest.raises(MfpoError, match="different recipe"):
        build_dataset("coco", _overrides(coco, **{"perturbation.t": 100}), one_task.root)


def test_killed_build_resumes_to_identical_output(coco, one_task, tmp_path):
    out = tmp_path / "crash"
    code = (
        "import sys; from mfpo_data.pipeline.build import build_dataset; "
        f"build_dataset('coco', {_overrides(coco, **{'executor.tasks': 3})!r}, {str(out)!r})"
    )
    env = {**os.environ, "MFPO_FAULT_INJECT": "1:3", "PYTHONPATH": str(REPO)}
    assert _run_killable(code, env, tmp_path / "crash.log") == -signal.SIGKILL  # killed in rank 1
    layout = OutputLayout(out)
    assert layout.missing_ranks(3) == [1, 2]
    assert not layout.staging_shard(1).exists()  # the partial shard is only a temp file
    assert list(layout.staging_dir.glob("00001.arrow.tmp"))
    with pytest.raises(MfpoError, match=r"ranks \[1, 2\]"):
        from mfpo_data.config import load_recipe
        from mfpo_data.pipeline.finalize import finalize

        finalize(layout, load_recipe("coco", _overrides(coco, **{"executor.tasks": 3})))
    env.pop("MFPO_FAULT_INJECT")
    assert _run_killable(code, env, tmp_path / "resume.log") == 0
    assert rows_by_id(layout) == rows_by_id(one_task)


def test_bad_inputs_are_dropped_with_reasons(tmp_path):
    root = make_coco_folder(tmp_path / "coco", n_images=6)
    bad = add_bad_inputs(root)
    layout = build_dataset("coco", _overrides(root), tmp_path / "out")
    rejects = [json.loads(line) for line in layout.rejects_file.read_text().splitlines()]
    reasons = {r["reason"].split(":")[0] for r in rejects}
    assert {"undecodable_image", "missing_file", "unknown_category"} <= reasons
    assert any(bad["missing"] in r["reason"] for r in rejects)
    assert all(r["stage"] == "source" for r in rejects)
    rows = rows_by_id(layout)
    image_ids = {r["image_id"] for r in rows.values()}
    assert image_ids == {"3", "4", "5", "6"}  # images 1 (corrupt) and 2 (missing) dropped, the rest built
    dropped = {r["id"] for r in rejects}
    assert not dropped & rows.keys()
    stats = layout.read_stats()
    assert stats["dropped"]["unknown_category"] == 1 and stats["dropped"]["missing_file"] == 4


def test_no_region_fallback_and_drop(tmp_path):
    root = make_coco_folder(tmp_path / "coco", n_images=2)
    overrides = _overrides(root, **{"source.pair_types": "[presence]", "source.absent_key": "none"})
    fallback = rows_by_id(build_dataset("coco", overrides, tmp_path / "a"))
    whole = [r for r in fallback.values() if r["mask"] is None]
    assert whole and all(json.loads(r["perturbation_params"])["region"] == "whole_image" for r in whole)
    for r in whole:
        a = np.asarray(Image.open(__import__("io").BytesIO(r["images"][0]["bytes"])).convert("RGB"))
        b = np.asarray(Image.open(__import__("io").BytesIO(r["rejected_images"][0]["bytes"])).convert("RGB"))
        assert (a != b).any(axis=-1).mean() > 0.9
    dropped = build_dataset("coco", overrides + ["filters.no_region=drop"], tmp_path / "b")
    assert len(rows_by_id(dropped)) == len(fallback) - len(whole)
    assert dropped.read_stats()["dropped"] == {"no_key_region": len(whole)}


def test_tertile_buckets_cover_the_whole_build():
    buckets, edges = tertile_buckets([(f"id{i}", v) for i, v in enumerate([0.9, 0.1, 0.5, 0.5, 0.3, 0.7, 0.2])])
    assert list(buckets.values()).count("easy") == 3 and list(buckets.values()).count("hard") == 2
    assert buckets["id1"] == "easy" and buckets["id0"] == "hard"
    assert edges[0] <= edges[1]
