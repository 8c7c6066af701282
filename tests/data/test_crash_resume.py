"""Crash-resume under random faults: in a 4-task, 2-worker build a worker is SIGKILLed at seeded random
points (mid-shard, after a rank's files are committed but before its completion marker), then the
launcher inside finalize. Each killed run must end by itself (a dead worker stops the build with an
error naming its rank), and after the reruns the output is byte-identical to an uninterrupted build.
After every kill, no file that looks complete holds partial data."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.build import build_dataset
from mfpo_data.pipeline.outdir import sha256_file
from tests.fixtures.coco_folder import make_coco_folder


REPO = Path(__file__).resolve().parents[2]
TASKS = 4
ROWS_PER_RANK = 8  # 8 images x 4 pairs over 4 tasks


def _overrides(root):
    return [f"source.root={root}", "source.split=val2017", "output.progress=false",
            f"executor.tasks={TASKS}", "executor.workers=2", "output.keep_staging=true"]  # staging compared  # fmt: skip


def _build_until_fault(overrides, out: Path, fault: str | None, tmp: Path) -> str:
    """Run the build in its own session with a fault armed and wait for it to end by itself: a worker
    killed mid-rank must stop the build with an error naming its rank, not leave it waiting forever.
    Returns "done" or "killed"."""
    mark = tmp / "fault.fired"
    mark.unlink(missing_ok=True)
    log_path = tmp / "build.log"
    log_path.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "MFPO_FAULT_MARK": str(mark)}
    env.pop("MFPO_FAULT_INJECT", None)
    if fault:
        env["MFPO_FAULT_INJECT"] = fault
    code = f"from mfpo_data.pipeline.build import build_dataset; build_dataset('coco', {overrides!r}, {str(out)!r})"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        try:
            proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the build did not end after fault {fault}: {log_path.read_text()[-2000:]}")
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the killed run left behind
            except ProcessLookupError:
                pass
    if not mark.exists():
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        return "done"
    assert proc.returncode != 0
    if not fault.startswith("finalize"):  # a worker died: the launcher says which rank, and to rerun
        rank = int(fault.split(":")[0])
        assert f"WorkerDiedError: the worker process running rank {rank} " in log_path.read_text(), log_path.read_text()[-2000:]
    return "killed"


def _staging(path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _check_nothing_partial_looks_complete(layout: OutputLayout, reference: OutputLayout) -> None:
    for rank in range(TASKS):
        shard = layout.staging_shard(rank)
        if layout.completion_marker(rank).is_file():
            assert shard.is_file(), f"rank {rank} marked complete without its shard"
        if shard.is_file():  # a shard under its final name is whole, with its rejects and stats beside it
            assert _staging(shard).equals(_staging(reference.staging_shard(rank))), rank
            assert layout.staging_rejects(rank).is_file() and layout.staging_stats(rank).is_file()
    for final in layout.final_shards():
        assert final.read_bytes() == (reference.data_dir / final.name).read_bytes(), final.name


def _outputs(layout: OutputLayout) -> dict[str, bytes]:
    files = {p.relative_to(layout.root).as_posix(): p.read_bytes() for p in layout.final_shards()}
    files["rejects.jsonl"] = layout.rejects_file.read_bytes()
    return files


@pytest.mark.parametrize(("seed", "start"), [(7, "auto"), (11, "forkserver")])
def test_random_sigkills_then_rerun_equal_an_uninterrupted_build(seed, start, tmp_path):
    root = make_coco_folder(tmp_path / "coco", n_images=8)
    overrides = [*_overrides(root), f"executor.start_method={start}"]  # auto forks the workers here
    reference = build_dataset("coco", overrides, tmp_path / "reference")
    assert reference.read_stats()["rows"] == TASKS * ROWS_PER_RANK

    out = tmp_path / "crashy"
    layout = OutputLayout(out)
    rng = random.Random(seed)
    kills = []
    for round_ in range(4):
        incomplete = [r for r in range(TASKS) if not layout.completion_marker(r).is_file()]
        if incomplete and round_ < 3:
            rank, n = rng.choice(incomplete), rng.randint(1, ROWS_PER_RANK)
            fault = rng.choice([f"{rank}:{n}", f"{rank}:s{n}", f"{rank}:commit"])
        else:  # the last round finishes every rank and dies inside finalize
            fault = f"finalize:{rng.randint(1, TASKS - 1)}"  # some final shards written
        kills.append((fault, _build_until_fault(overrides, out, fault, tmp_path)))
        _check_nothing_partial_looks_complete(layout, reference)
    assert [outcome for _, outcome in kills] == ["killed"] * 4, kills
    assert not layout.stats_file.exists()  # finalize never finished

    assert _build_until_fault(overrides, out, None, tmp_path) == "done"
    assert _outputs(layout) == _outputs(reference), kills  # same files, byte for byte
    ids = [i for shard in layout.final_shards() for i in pq.read_table(shard, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == TASKS * ROWS_PER_RANK
    assert layout.read_stats()["rows"] == reference.read_stats()["rows"]


def test_a_finalize_killed_after_it_removed_staging_shards_resumes(tmp_path):
    """Finalize removes each rank's staging shard once its final shard is written (so the disk holds the rows
    once): killed after some of them, the rerun takes those ranks' rows from their final shards and ends with
    the uninterrupted build's files."""
    root = make_coco_folder(tmp_path / "coco", n_images=8)
    overrides = [o for o in _overrides(root) if o != "output.keep_staging=true"]
    reference = build_dataset("coco", overrides, tmp_path / "reference")
    layout = OutputLayout(tmp_path / "crashy")
    assert _build_until_fault(overrides, layout.root, "finalize:2", tmp_path) == "killed"
    consumed = [r for r in range(TASKS) if not layout.staging_shard(r).is_file()]
    assert consumed, "no staging shard was removed before the kill"
    for rank in consumed:  # removed only after its final shard was whole, under its final name
        assert layout.final_shard(rank, TASKS).read_bytes() == reference.final_shard(rank, TASKS).read_bytes()
    assert layout.missing_ranks(TASKS) == []  # every rank's rows are somewhere: no rank runs again
    assert _build_until_fault(overrides, layout.root, None, tmp_path) == "done"
    assert _outputs(layout) == _outputs(reference)
    assert not layout.staging_dir.exists()
    manifest = json.loads(layout.manifest_file.read_text())["files"]
    assert manifest == json.loads(reference.manifest_file.read_text())["files"]
    for name, entry in manifest.items():  # entries of shards written now (hashed while written) and read back alike
        path = layout.root / name
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size, name
