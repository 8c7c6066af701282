"""`executor.kind` -> datatrove's `LocalPipelineExecutor`, `SlurmPipelineExecutor` or `RayPipelineExecutor`.

The stages only know the `(data, rank, world_size)` contract; this file is the only one that knows
datatrove's executors. All three write `completions/{rank}` markers into the logging dir, so a rerun
skips finished ranks whichever executor ran them.

Model loading: datatrove hands every task a fresh copy of the pipeline (a deepcopy locally with one
worker, a pickle per task with several, a pickle per job on Slurm and Ray). A backend that kept its
model on `self` would therefore load it once per task; heavy backends load through
`mfpo_data.backends.loading.load_once`, which keeps one model per (key, process), so a model loads once
per worker process: once per local worker, once per Slurm job, once per Ray task.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor

from mfpo_data._deps import require
from mfpo_data.config import ExecutorConfig, time_to_seconds


def make_executor(
    cfg: ExecutorConfig,
    pipeline: list,
    logging_dir: str | Path,
    *,
    tasks: int | None = None,
    depends=None,
    job_name: str | None = None,
    finalize_job: bool = False,
):
    """The datatrove executor for `cfg`. `tasks`, `job_name` and `finalize_job` describe an extra
    one-task job such as the Slurm finalize step (1 CPU, no GPU, its own time and memory)."""
    tasks = cfg.tasks if tasks is None else tasks
    common = dict(pipeline=pipeline, tasks=tasks, logging_dir=str(logging_dir), skip_completed=True, depends=depends)
    if cfg.kind == "local":
        workers = min(cfg.workers or 1, tasks)
        start_method = resolve_start_method(cfg.start_method)
        if workers > 1 and start_method == "forkserver":  # a no-op when build_dataset started it already
            start_forkserver(sorted({type(step).__module__ for step in pipeline} | {"pyarrow"}))
        return QuietLocalExecutor(**common, workers=workers, start_method=start_method)
    if cfg.kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            **common,
            workers=-1 if finalize_job else cfg.workers or -1,
            time=cfg.finalize_time if finalize_job else cfg.time,
            partition=cfg.partition,
            cpus_per_task=1 if finalize_job else cfg.cpus_per_task,
            gpus_per_task=0 if finalize_job else cfg.gpus_per_task,
            mem_per_cpu_gb=cfg.finalize_mem_gb if finalize_job else cfg.mem_per_cpu_gb,
            tasks_per_job=1 if finalize_job else cfg.tasks_per_job,
            job_name=job_name or cfg.job_name,
            qos=cfg.qos,
            env_command=cfg.env_command,
            venv_path=cfg.venv_path,
            condaenv=cfg.condaenv,
            sbatch_args={k: str(v) for k, v in cfg.sbatch_args.items()},
            max_array_size=cfg.max_array_size,
        )
    if cfg.kind == "ray":
        require("ray", extra="ray", feature="executor.kind: ray")
        import ray
        from datatrove.executor.ray import RayPipelineExecutor

        if not ray.is_initialized():
            ray.init(address=cfg.ray_address)
        return RayPipelineExecutor(
            **common,
            workers=cfg.workers or -1,
            cpus_per_task=cfg.cpus_per_task,
            gpus_per_task=cfg.gpus_per_task,
            mem_per_cpu_gb=cfg.mem_per_cpu_gb,
            tasks_per_job=cfg.tasks_per_job,
            time=time_to_seconds(cfg.time) if cfg.time else None,
        )
    raise ValueError(f"unknown executor kind {cfg.kind!r}")


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's local executor, with each rank's pipeline listing and stats block in the rank's log file
    (`logs/logs/task_N.log`) and not on the console; errors are still shown. datatrove prints a rank's log to
    the console only for local rank 0 ("at the moment only used for logging"), so every rank runs as 1+."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        return super()._run_for_rank(rank, local_rank=local_rank + 1, node_rank=node_rank)


def resolve_start_method(requested: str) -> str:
    """How local workers start. `auto` forks when that is safe (Linux, no other Python thread, no CUDA
    context: the workers then start at once and share this process's imports) and uses a forkserver
    otherwise (a notebook kernel's threads, a parent that touched the GPU, macOS)."""
    if requested != "auto":
        return requested
    return "fork" if fork_is_safe() else "forkserver"


def fork_is_safe() -> bool:
    """A fork copies only the calling thread: another Python thread may hold a lock that the child then
    waits on forever, and a CUDA context does not survive a fork. Native worker pools (OpenBLAS,
    Arrow's jemalloc) are not counted: they re-create themselves in the child through their own
    at-fork handlers, as they do under every fork-based multiprocessing pool."""
    if sys.platform != "linux" or threading.active_count() > 1:
        return False
    torch = sys.modules.get("torch")
    return not (torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())


def start_local_workers_early(cfg: ExecutorConfig, modules: list[str]) -> None:
    """For a local build with several workers: have `modules` imported once for all of them. Workers that
    start from a forkserver: start it now, so that it imports them on another core while the caller goes
    on. Workers forked from this process: import them here, before the fork, so that no worker imports
    them again (this process needs them too: finalize converts rows with pyarrow, which imports pandas)."""
    if cfg.kind != "local" or min(cfg.workers or 1, cfg.tasks) <= 1:
        return
    method = resolve_start_method(cfg.start_method)
    if method == "forkserver":
        start_forkserver(modules)
    elif method == "fork":
        import importlib

        for module in modules:
            importlib.import_module(module)


def start_forkserver(modules: list[str]) -> None:
    """Start the forkserver that forks local workers, with `modules` imported once in it instead of
    once per worker. Returns at once (the server imports them in the background); the executor's
    pool then uses it. Does nothing when it runs already."""
    import multiprocess
    from multiprocess import forkserver

    multiprocess.set_forkserver_preload([m for m in modules if m != "__main__"])
    forkserver.ensure_running()


class _ParentDeathSignal:
    """Arms `PR_SET_PDEATHSIG` in a forked child. Everything is resolved in the parent: the child only calls
    a C function, never imports (another thread of the parent may have held the import lock at the fork)."""

    def __init__(self):
        import ctypes
        import os
        import signal

        from multiprocess.process import current_process, parent_process

        self.prctl, self.signal, self.getppid, self.exit = ctypes.CDLL(None).prctl, int(signal.SIGTERM), os.getppid, os._exit
        self.parent_process, self.current_process = parent_process, current_process

    def arm(self) -> None:
        # Not in pool workers: the signal fires when the *thread* that forked the child ends, and a pool forks
        # replacement workers from its worker-handler thread, which ends inside Pool.terminate. A worker killed
        # then, idle in the task queue's get() with its read lock held, would deadlock terminate for good.
        # Workers end with the launcher anyway once their task pipe closes; the Manager is the one left behind.
        if self.current_process().name.startswith("ForkPoolWorker"):
            return
        self.prctl(1, self.signal)  # PR_SET_PDEATHSIG
        parent = self.parent_process()
        if parent is not None and self.getppid() != parent.pid:  # the parent died before the signal was armed
            self.exit(1)


_ARMED: list = []


def children_die_with_launcher() -> None:
    """Make the processes that `multiprocess` forks from here (datatrove's Manager and its pool workers)
    receive SIGTERM when the launcher dies, even by SIGKILL, instead of living on as orphans (Linux's
    `PR_SET_PDEATHSIG`, set in each child as it starts). Elsewhere, and for spawned children, a no-op."""
    if sys.platform != "linux" or _ARMED:
        return
    from multiprocess import util

    _ARMED.append(_ParentDeathSignal())  # kept alive: `register_after_fork` holds a weak reference
    util.register_after_fork(_ARMED[0], _ParentDeathSignal.arm)
