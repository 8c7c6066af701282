"""benchmarks/build_overlap: its CPU mode and its GPU mode's code path (tiny models, CPU) run at tiny sizes and
report every figure; the row-identity check and the nvidia-smi parsing match hand-made inputs. No timing is
asserted: the benchmark itself reports them."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks import build_overlap as bo
from mfpo_data.backends import REGISTRY


def test_cpu_mode_calibrates_every_repeat_on_its_own_cpu_only_build(tmp_path):
    out = tmp_path / "report.json"
    report = bo.main(["--images", "4", "--repeat", "2", "--policies", "one_stage,shared,budget", "--json", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    kinds = {"sequential", "overlapped", "overlapped_shared", "overlapped_budget"}
    assert set(report["times"]) == kinds | {"cpu_only", "backend_alone"}
    [calls] = report["calls"]  # every build made the same batch calls (full batches only: no time-out)
    assert calls >= 2  # at least one grounding and one segmentation batch
    assert len(report["repeats"]) == 2
    cpu_only_ranks = report["rank_times"]["cpu_only"]["runs_s"]
    for rep, cpu_only, rank in zip(report["repeats"], report["times"]["cpu_only"]["runs_s"], cpu_only_ranks, strict=True):
        assert rep["cpu_only_s"] == cpu_only and rep["cpu_only_rank_s"] == rank < cpu_only
        # this repeat's own calibration, on the part of cpu_only where the model stages run: its rank
        assert rep["cost_per_batch_s"] == pytest.approx(rank / calls)
        for name in kinds:
            run = rep[name]
            assert run["model_s"] >= 0.99 * calls * rep["cost_per_batch_s"]  # the device does all the work
            assert run["balance"] == pytest.approx(run["model_s"] / rank)
            # the model alone still pays for the build outside its rank (indexing, start-up, finalize)
            assert run["ratio"] == pytest.approx(run["wall_s"] / max(cpu_only, cpu_only - rank + run["model_s"]))
    for name in kinds:
        assert report["ratios"][name] == pytest.approx(statistics.median(rep[name]["ratio"] for rep in report["repeats"]))
    assert report["balance"]["runs_s"] == [rep["overlapped"]["balance"] for rep in report["repeats"]]
    assert report["target_met"] == (report["ratios"]["overlapped"] <= bo.TARGET)
    assert report["peak_memory"]["overlapped"] <= 2 * 8  # one stage at a time: segmentation's batch at most
    assert set(report["rank_times"]) == kinds | {"cpu_only"}
    for name, rank in report["rank_times"].items():  # rank 0 runs inside the build (log stamps: 1 ms resolution)
        assert all(0 < r <= w + 0.002 for r, w in zip(rank["runs_s"], report["times"][name]["runs_s"], strict=True))
    assert report["rows"] > 0 and report["rows_identical"] and len(report["rows_sha256"]) == 1
    assert report["rows_identical_cpu_only"]  # the simulated cost changes no row
    assert "simulated" not in REGISTRY["grounding"] and "simulated" not in REGISTRY["segmentation"]


@pytest.mark.parametrize("policy", ["one_stage", "shared", "budget"])
def test_simulated_device_policies(policy):
    """Two stages' calls at once: one_stage and a budget too small for both run them in turn (the peak is the
    larger call's memory); shared runs them together on a device they split (each takes about twice its cost)."""
    bo.DEVICE.reset(share=1.0, budget=2.5 if policy == "budget" else None)
    start = time.perf_counter()
    threads = [threading.Thread(target=bo.simulated_call, args=(0.2, memory, policy)) for memory in (1.0, 2.0)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - start
    assert bo.DEVICE.calls == 2 and bo.DEVICE.active == 0 and bo.DEVICE.memory == 0
    assert bo.DEVICE.peak_memory == (3.0 if policy == "shared" else 2.0)
    # 0.4 s of device work in all, whichever way it was shared (a call sees the other join at its next tick: 10 ms)
    assert 0.38 <= bo.DEVICE.busy_s <= wall
    if policy != "shared":
        assert wall >= 0.4  # in turns: one after the other


def _folder(root, rows):
    (root / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"id": [r[0] for r in rows], "answer": [r[1] for r in rows]}),
        root / "data" / "train-00000-of-00001.parquet",
    )
    return root


def test_rows_digest_tells_different_rows_apart(tmp_path):
    a = _folder(tmp_path / "a", [("s1", "Yes."), ("s2", "No.")])
    same = shutil.copytree(a, tmp_path / "same")
    one_answer = _folder(tmp_path / "b", [("s1", "Yes."), ("s2", "Yes.")])
    order = _folder(tmp_path / "c", [("s2", "No."), ("s1", "Yes.")])
    assert bo.rows_digest(a) == bo.rows_digest(same)
    assert bo.rows_digest(a)[1] == 1
    assert bo.rows_digest(a)[0] != bo.rows_digest(one_answer)[0]
    assert bo.rows_digest(a)[0] != bo.rows_digest(order)[0]
    renamed = shutil.copytree(a, tmp_path / "renamed")
    (renamed / "data" / "train-00000-of-00001.parquet").rename(renamed / "data" / "train-00000-of-00002.parquet")
    assert bo.rows_digest(a)[0] != bo.rows_digest(renamed)[0]
    assert bo.rows_digest(tmp_path / "empty")[1] == 0  # no build there: no shard


def test_rank_seconds_from_the_task_log(tmp_path):
    log = tmp_path / "logs" / "logs" / "task_00000.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        "2026-12-01 13:10:48.609 | INFO     | datatrove.utils.logging:add_task_logger:76 - Launching pipeline for rank=0\n"
        "2026-12-01 13:10:48.700 | INFO     | mfpo: a line between\n"
        "2026-12-01 13:10:50.119 | SUCCESS  | datatrove.executor.base:_run_for_rank:140 - Processing done for rank=0\n"
    )
    assert bo.rank_seconds(tmp_path) == pytest.approx(1.51)
    log.write_text(log.read_text().splitlines()[0] + "\n")  # a rank that did not finish
    assert bo.rank_seconds(tmp_path) is None
    assert bo.rank_seconds(tmp_path / "no-build") is None


def test_parse_smi_means_and_maxima():
    text = "50, 1000\n70, 3000\n\nnot a sample\n90, 2000\n"
    assert bo.parse_smi(text) == {"samples": 3, "util_mean_pct": 70.0, "util_max_pct": 90.0, "memory_max_mib": 3000.0}
    assert bo.parse_smi("") == {"samples": 0, "util_mean_pct": None, "util_max_pct": None, "memory_max_mib": None}


def test_full_size_sd_inpaint_has_the_real_architecture():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    with torch.device("meta"):  # shapes only: no memory, no init time
        pipe = bo.full_size_sd_inpaint()

    def count(m):
        return sum(p.numel() for p in m.parameters())

    # stable-diffusion-v1-5/stable-diffusion-inpainting's UNet, VAE and CLIP ViT-L/14 text encoder
    assert pipe.unet.config.in_channels == 9 and count(pipe.unet) == 859_535_364
    assert count(pipe.vae) == 83_653_863
    assert count(pipe.text_encoder) == 123_060_480


def test_gpu_mode_code_path_with_tiny_models_on_the_cpu(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    out = tmp_path / "gpu.json"
    report = bo.main(["--gpu", "--gpu-allow-cpu", "--tiny", "--gpu-images", "2", "--gpu-warmup", "1", "--quiet",
                      "--json", str(out)])  # fmt: skip

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["mode"] == "gpu" and report["models"] == "tiny" and report["images"] == 2 and report["rows"] > 0
    kinds = sorted(name.split()[0] for name in report["loaded"])
    assert kinds == ["AutoModelForZeroShotObjectDetection", "SamModel", "sd_inpaint"]
    assert math.isfinite(report["images_per_s_per_gpu"]) and report["images_per_s_per_gpu"] > 0
    assert report["images_per_s_per_gpu"] == pytest.approx(2 / report["wall_s"])
    assert report["projected_hours"] == pytest.approx(118_000 / (report["images_per_s_per_gpu"] * 8) / 3600)
    assert report["target_met"] == (report["projected_hours"] <= 2.0)
    if report["device"].startswith("CPU"):
        assert all(w["device"] == "cpu" for w in report["loaded"].values())
        assert report["gpu_util"]["samples"] == 0 and report["torch_peak_allocated_gib"] is None


def test_gpu_mode_without_a_gpu_says_so():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit, match="no CUDA GPU"):
        bo.main(["--gpu", "--tiny"])
