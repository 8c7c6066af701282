"""`executor.kind` -> datatrove's `LocalPipelineExecutor`, `SlurmPipelineExecutor` or `RayPipelineExecutor`.

The stages only know the `(data, rank, world_size)` contract; this file is the only one that knows
datatrove's executors. All three write `completions/{rank}` markers into the logging dir, so a rerun
skips finished ranks whichever executor ran them.

Model loading: datatrove hands every task a fresh copy of the pipeline (a deepcopy locally with one
worker, a pickle per task with several, a pickle per job on Slurm and Ray). A backend that kept its
model on `self` would therefore load it once per task; heavy backends load through
`mfpo_data.backends.cache.load_once`, which keeps one model per (key, process), so a model loads once
per worker process: once per local worker, once per Slurm job, once per Ray task.
"""

from __future__ import annotations

from pathlib import Path

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
        from datatrove.executor import LocalPipelineExecutor

        workers = min(cfg.workers or 1, tasks)
        if workers > 1 and cfg.start_method == "forkserver":
            preload_into_forkserver(pipeline)
        return LocalPipelineExecutor(**common, workers=workers, start_method=cfg.start_method)
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


def preload_into_forkserver(pipeline: list) -> None:
    """Import the pipeline's modules (and datasets, pyarrow) once in the forkserver that forks the local
    workers, instead of once in every worker: saves 1-2 s and the CPU of N imports per build. Heavy model
    libraries stay lazy (imported by a backend's first load, inside the worker)."""
    import multiprocess

    modules = {type(step).__module__ for step in pipeline} | {"mfpo_data.schema", "datasets", "pyarrow.parquet"}
    multiprocess.set_forkserver_preload(sorted(m for m in modules if m != "__main__"))
