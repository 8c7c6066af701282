"""Executors: Ray builds the same rows as the local executor; the Slurm submission (array, resources,
command, chained finalize job) is checked without a cluster and then replayed in-process; models load
once per worker process; rank r picks GPU r mod n."""

import os
import re
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import dill
import pytest

from mfpo_data.backends import REGISTRY
from mfpo_data.backends.loading import device_for_rank
from mfpo_data.config import load_recipe
from mfpo_data.errors import ConfigError
from mfpo_data.pipeline.build import build_dataset
from tests.fixtures.builds import rows_by_id


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    """The bundled sample, built by the local executor in 2 tasks."""
    out = tmp_path_factory.mktemp("local") / "out"
    return build_dataset("coco", ["executor.tasks=2", "output.progress=false"], out)


def test_ray_build_equals_local_build(local_build, tmp_path):
    ray = pytest.importorskip("ray", reason='ray is not installed: pip install -e ".[ray]" in the mfpo checkout')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        layout = build_dataset(
            "coco",
            ["executor.kind=ray", "executor.tasks=2", "executor.mem_per_cpu_gb=1", "output.progress=false"],
            tmp_path / "ray",
        )
    finally:
        ray.shutdown()
    assert len(layout.final_shards()) == 2
    local, remote = rows_by_id(local_build), rows_by_id(layout)
    assert local.keys() == remote.keys() and len(local) >= 30
    for key in local:
        assert local[key] == remote[key], key  # same ids, same bytes, same buckets
    assert (layout.logging_dir / "completions" / "00001").is_file()


class FakeSbatch:
    """Stands in for `sbatch`: keeps each script and its arguments, returns job ids 101, 102, ..."""

    def __init__(self):
        self.calls: list[tuple[list[str], str]] = []

    def __call__(self, cmd, *args, **kwargs):
        assert cmd[0] == "sbatch", cmd
        self.calls.append((cmd[1:-1], Path(cmd[-1]).read_text()))
        return f"Submitted batch job {100 + len(self.calls)}\n".encode()

    def script(self, marker: str) -> tuple[list[str], str, int]:
        for i, (args, text) in enumerate(self.calls):
            if marker in text:
                return args, text, 101 + i
        raise AssertionError(f"no submitted script contains {marker!r}")


def _sbatch_lines(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=?(.*)$", script, flags=re.M))


SLURM = [
    "executor.kind=slurm",
    "executor.tasks=3",
    "executor.workers=2",
    "executor.partition=gpu",
    "executor.time=02:00:00",
    "executor.cpus_per_task=4",
    "executor.gpus_per_task=1",
    "executor.mem_per_cpu_gb=3",
    "executor.sbatch_args={account: proj42}",
    "executor.env_command=source /shared/venv/bin/activate",
    "output.progress=false",
    "source.limit=6",
]


def test_slurm_submission_then_replayed_jobs_equal_local_build(tmp_path, monkeypatch):
    import datatrove.executor.slurm as slurm

    sbatch = FakeSbatch()
    monkeypatch.setattr(slurm.subprocess, "check_output", sbatch)
    out = tmp_path / "slurm"
    layout = build_dataset("coco", SLURM, out)
    logs = layout.logging_dir
    assert not layout.stats_file.exists()  # nothing ran here: it was only submitted

    args, script, array_id = sbatch.script(str(logs / "executor.pik"))
    sb = _sbatch_lines(script)
    assert sb["array"] == "0-2%2"  # 3 tasks, at most 2 at once
    assert (sb["partition"], sb["time"], sb["cpus-per-task"], sb["mem-per-cpu"], sb["gpus"]) == ("gpu", "02:00:00", "4", "3G", "1")
    assert sb["account"] == "proj42" and "qos" not in sb
    assert "source /shared/venv/bin/activate" in script
    assert f"launch_pickled_pipeline {logs / 'executor.pik'}" in script
    assert not any(a.startswith("--dependency") for a in args)

    fargs, fscript, _ = sbatch.script(str(logs / "finalize" / "executor.pik"))
    fb = _sbatch_lines(fscript)
    assert fb["array"] == "0-0" and fb["cpus-per-task"] == "1" and "gpus" not in fb
    assert (fb["time"], fb["mem-per-cpu"], fb["partition"]) == ("01:00:00", "8G", "gpu")
    assert f"--dependency=afterok:{array_id}" in fargs  # finalize waits for every rank to succeed

    # Replay what the cluster would run: each array index, then the finalize job.
    monkeypatch.setattr(slurm, "expand_slurm_nodelist", lambda nodelist: ["node1"])
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        for pik, indices in ((logs / "executor.pik", range(3)), (logs / "finalize" / "executor.pik", range(1))):
            with open(pik, "rb") as f:
                executor = dill.load(f)
            for index in indices:
                monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(index))
                executor.run()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    local = build_dataset("coco", ["executor.tasks=3", "output.progress=false", "source.limit=6"], tmp_path / "local")
    assert rows_by_id(layout) == rows_by_id(local)

    # Rerunning the command after a finished build submits nothing: every rank and finalize are complete.
    before = len(sbatch.calls)
    build_dataset("coco", SLURM, out)
    assert len(sbatch.calls) == before


def test_slurm_needs_partition_and_time():
    with pytest.raises(ConfigError, match="executor.partition"):
        load_recipe("coco", ["executor.kind=slurm", "executor.time=01:00:00"])
    with pytest.raises(ConfigError, match="executor.time"):
        load_recipe("coco", ["executor.kind=slurm", "executor.partition=cpu", "executor.time=soon"])


@pytest.mark.parametrize(("tasks", "workers", "start"), [(3, 1, "auto"), (4, 2, "fork"), (4, 2, "forkserver")])
def test_model_loads_once_per_worker_process(tasks, workers, start, tmp_path, monkeypatch):
    monkeypatch.setitem(REGISTRY["grounding"], "counting", "tests.fixtures.counting_backend:CountingGrounder")
    log_dir = tmp_path / "counts"
    log_dir.mkdir()
    overrides = ["grounding.backend=counting", f"grounding.log_dir={log_dir}", f"executor.tasks={tasks}",
                 f"executor.workers={workers}", f"executor.start_method={start}", "output.progress=false",
                 "source.limit=6"]  # fmt: skip
    layout = build_dataset("coco", overrides, tmp_path / "out")
    assert layout.read_stats()["rows"] >= 12
    task_lines = (log_dir / "tasks.txt").read_text().split()
    task_pids, ranks = task_lines[::2], sorted(int(r) for r in task_lines[1::2])
    loads = (log_dir / "loads.txt").read_text().split()
    assert ranks == list(range(tasks))  # every task ran
    assert sorted(loads) == sorted(set(task_pids))  # one load per process that ran tasks
    assert len(loads) <= workers < tasks  # fewer loads than tasks
    if workers == 1:
        assert loads == [str(os.getpid())]  # serial: the tasks ran in this process


def test_auto_start_method_forks_only_when_safe(monkeypatch):
    from mfpo_data.pipeline import executors

    monkeypatch.setattr(executors.threading, "active_count", lambda: 1)
    assert executors.resolve_start_method("auto") == "fork"  # one Python thread, no CUDA context
    assert executors.resolve_start_method("forkserver") == "forkserver"  # an explicit choice is kept
    cuda = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert executors.resolve_start_method("auto") == "forkserver"  # a CUDA context does not survive a fork
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(executors.threading, "active_count", lambda: 2)
    assert executors.resolve_start_method("auto") == "forkserver"  # another thread could hold a lock
    monkeypatch.setattr(executors.sys, "platform", "darwin")
    assert not executors.fork_is_safe()


def test_device_for_rank(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [device_for_rank("auto", r) for r in (0, 1, 5, 7)] == ["cuda:0", "cuda:1", "cuda:1", "cuda:3"]
    assert device_for_rank("cuda:2", 5) == "cuda:2" and device_for_rank("cpu", 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert device_for_rank("auto", 3) == "cpu"


def test_cli_build_on_slurm_submits_and_says_so(tmp_path, monkeypatch):
    import datatrove.executor.slurm as slurm
    from typer.testing import CliRunner

    from mfpo_data.cli import app

    sbatch = FakeSbatch()
    monkeypatch.setattr(slurm.subprocess, "check_output", sbatch)
    args = ["build", "--output", str(tmp_path / "out")] + [a for item in SLURM for a in ("--set", item)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "submitted 3 tasks and a finalize job to Slurm" in result.output
    assert len(sbatch.calls) == 4  # the array, its stats merge, finalize, its stats merge


def test_watchdog_finds_a_dead_worker_only_for_an_unfinished_rank(tmp_path):
    import subprocess
    import time

    from mfpo_data.layout import OutputLayout
    from mfpo_data.pipeline.watchdog import WorkerWatchdog, process_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while process_alive(child.pid) and time.monotonic() < deadline:  # exits, then lingers as a zombie
        time.sleep(0.05)
    assert not process_alive(child.pid)  # not yet reaped, yet dead
    layout = OutputLayout(tmp_path)
    layout.staging_dir.mkdir()
    layout.completion_marker(1).parent.mkdir(parents=True)
    layout.staging_pid(0).write_text(str(os.getpid()))  # running
    layout.staging_pid(1).write_text(str(child.pid))  # died, but its rank finished
    layout.completion_marker(1).touch()
    watchdog = WorkerWatchdog(layout)
    assert watchdog._find_dead() is None
    layout.staging_pid(2).write_text(str(child.pid))  # died mid-rank
    assert watchdog._find_dead() == (2, child.pid)
    child.wait()


def test_modules_every_worker_imports_are_imported_once_before_the_workers_start(monkeypatch):
    from mfpo_data.config import ExecutorConfig
    from mfpo_data.pipeline import executors
    from mfpo_data.pipeline.assemble import worker_modules

    modules = worker_modules(load_recipe("coco"))
    assert "mfpo_data.pipeline.assemble" in modules and "pyarrow" in modules
    assert "pandas" in modules  # pyarrow imports it at its first conversion: once before the workers, not per worker
    imported = []
    monkeypatch.setattr("importlib.import_module", imported.append)
    executors.start_local_workers_early(ExecutorConfig(tasks=4, workers=2, start_method="fork"), ["a", "b"])
    assert imported == ["a", "b"]  # forked workers inherit them from this process
    imported.clear()
    executors.start_local_workers_early(ExecutorConfig(tasks=4, workers=1, start_method="fork"), ["a"])
    executors.start_local_workers_early(ExecutorConfig(tasks=1, workers=2, start_method="fork"), ["a"])
    assert imported == []  # one worker runs in this process: nothing to share
