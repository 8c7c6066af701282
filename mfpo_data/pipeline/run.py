"""Run an assembled stage list on datatrove's executor (`executors.py`), then finalize (`finalize.py`).

Locally the ranks run here and finalize follows; on Slurm both are submitted as jobs.
"""

from __future__ import annotations

from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from mfpo_data.config import Recipe
from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.executors import children_die_with_launcher, make_executor
from mfpo_data.pipeline.finalize import final_parquet_options, finalize
from mfpo_data.pipeline.watchdog import WorkerWatchdog


def run_executor(recipe: Recipe, pipeline: list, layout: OutputLayout) -> None:
    """Run the ranks, then finalize. On Slurm nothing runs here: the rank array is submitted with a
    one-task finalize job chained after it (`afterok`), so one `mfpo-data build` does the whole build;
    rerunning it resubmits only unfinished ranks (and finalize, unless that finished)."""
    logs = layout.logging_dir
    executor = make_executor(recipe.executor, pipeline, logs)
    if recipe.executor.kind == "local":
        children_die_with_launcher()  # a killed launcher leaves no Manager or worker process behind
    if recipe.executor.kind == "slurm":
        job = make_executor(recipe.executor, [FinalizeStep(str(layout.root), recipe)], logs / "finalize", tasks=1,
                            depends=executor, job_name=f"{recipe.executor.job_name}-finalize", finalize_job=True)  # fmt: skip
        job.run()  # launches the dependency (the rank array) first
        return
    if recipe.executor.kind == "local" and min(recipe.executor.workers or 1, recipe.executor.tasks) > 1:
        # A worker killed mid-rank stops the build instead of hanging it; finalize's Parquet set-up runs meanwhile.
        with WorkerWatchdog(layout, while_waiting=final_parquet_options):
            executor.run()
    else:
        executor.run()
    finalize(layout, recipe)


class FinalizeStep(PipelineStep):
    """`finalize()` as a one-rank pipeline, for executors that run it as a job of its own (Slurm)."""

    name, type = "finalize", "mfpo"

    def __init__(self, output_dir: str, recipe: Recipe):
        super().__init__()
        self.output_dir, self.recipe = output_dir, recipe

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        finalize(OutputLayout(Path(self.output_dir), self.recipe.executor.logging_dir), self.recipe)
        yield from ()


def forget_ranks_without_shards(layout: OutputLayout, tasks: int) -> None:
    """A completion marker whose staging shard is gone (deleted by hand, or written by a version that
    staged in another format) would make datatrove skip a rank that finalize then finds missing, on
    every rerun. Remove such markers so that the rank runs again."""
    for rank in layout.missing_ranks(tasks):
        layout.completion_marker(rank).unlink(missing_ok=True)
