"""Assemble the stages from a recipe, run them on datatrove's executor, and finalize the output.

This module and `config.py` are the only readers of recipes: stages and backends take flat keyword
arguments and can be used from Python without YAML.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import yaml
from datatrove.pipeline.base import PipelineStep

from mfpo_data.backends import module_of, resolve
from mfpo_data.config import Recipe, load_recipe
from mfpo_data.errors import MfpoError
from mfpo_data.faults import FaultPoint
from mfpo_data.layout import OutputLayout
from mfpo_data.pipeline.executors import make_executor, start_local_workers_early
from mfpo_data.pipeline.watchdog import WorkerWatchdog
from mfpo_data.schema import arrow_schema
from mfpo_data.stages.filters import RegionFilter
from mfpo_data.stages.grounding import GroundingStage
from mfpo_data.stages.keywords import KeywordStage
from mfpo_data.stages.perturbation import PerturbationStage
from mfpo_data.stages.scoring import ScoringStage
from mfpo_data.stages.segmentation import SegmentationStage
from mfpo_data.stages.writer import ShardWriter


logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("mfpo", "datasets", "datatrove", "numpy", "pillow", "pyarrow", "opencv-python-headless",
                      "pycocotools", "torch", "transformers", "diffusers")  # fmt: skip


IMAGE_BYTES = ("images.list.element.bytes", "rejected_images.list.element.bytes")  # parquet column paths


@lru_cache(maxsize=1)
def final_parquet_options() -> dict:
    """`ParquetWriter` options of the final shards: a dictionary only where values repeat (an image's
    pairs share its original bytes); no statistics (min/max of image bytes are useless and slow);
    snappy for every column but the image bytes, which are PNG or JPEG already (snappy saved 0.3% of
    their size and cost an eighth of finalize's time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(arrow_schema().empty_table(), sink)
    paths = [column.path for column in pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema]
    return {"use_dictionary": [IMAGE_BYTES[0]], "write_statistics": False,
            "compression": {path: "none" if path in IMAGE_BYTES else "snappy" for path in paths}}  # fmt: skip


BACKEND_SECTIONS = ("keywords", "grounding", "segmentation", "perturbation", "scoring")


def make_backends(recipe: Recipe) -> dict:
    """Construct each backend from its section (cheap: models load lazily inside the workers)."""
    out = {}
    for name in BACKEND_SECTIONS:
        section = getattr(recipe, name)
        out[name] = resolve(name, section.backend)(**section.options)
    return out


def make_source(recipe: Recipe):
    return resolve("source", recipe.source.kind)(**recipe.source.options, seed=recipe.seed)


def worker_modules(recipe: Recipe) -> list[str]:
    """What every worker imports to run the recipe: this module (all stages) and the chosen source and
    backends (whose model libraries stay lazy until a backend's first load)."""
    chosen = [("source", recipe.source.kind), *((name, getattr(recipe, name).backend) for name in BACKEND_SECTIONS)]
    return sorted({__name__, "pyarrow", *(module_of(section, name) for section, name in chosen)})


def build_pipeline(recipe: Recipe, source=None) -> list:
    """The stage list, in pipeline order: source, keywords, grounding, segmentation, filters,
    perturbation, scoring, writer."""
    b = make_backends(recipe)
    return [
        source if source is not None else make_source(recipe),
        KeywordStage(b["keywords"], top_k=recipe.keywords.top_k, batch_size=recipe.keywords.batch_size),
        GroundingStage(b["grounding"], batch_size=recipe.grounding.batch_size),
        SegmentationStage(b["segmentation"], batch_size=recipe.segmentation.batch_size),
        RegionFilter(**vars(recipe.filters)),
        PerturbationStage(b["perturbation"], kind=recipe.perturbation.backend, seed=recipe.seed,
                          batch_size=recipe.perturbation.batch_size),  # fmt: skip
        ScoringStage(b["scoring"], batch_size=recipe.scoring.batch_size),
        ShardWriter(recipe.output.dir, recipe.output.png_compress_level, recipe.output.row_group_size, recipe.output.progress),
    ]


def describe_backends(recipe: Recipe) -> dict:
    return {name: backend.describe() for name, backend in make_backends(recipe).items()}


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _identity(resolved: dict) -> dict:
    """What decides the rows: the recipe less how it runs (workers, progress bars, package versions)."""
    out = json.loads(json.dumps(resolved, default=str))
    out.pop("versions", None)
    out["executor"] = {"tasks": out.get("executor", {}).get("tasks", 1)}  # kind, workers, resources: how, not what
    out.get("output", {}).pop("progress", None)
    return out


def _check_same_recipe(layout: OutputLayout, resolved: dict) -> None:
    if not layout.recipe_file.is_file():
        return
    previous = yaml.safe_load(layout.recipe_file.read_text()) or {}
    if _identity(previous) != _identity(resolved):
        raise MfpoError(
            f"{layout.root} holds a build of a different recipe; choose another output.dir or remove the folder"
        )


def build_dataset(
    recipe: str | Path | Recipe = "coco",
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> OutputLayout:
    """Build the dataset a recipe describes; rerunning the same call resumes an interrupted build."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, tuple(overrides))
    if output_dir is not None:
        recipe.output.dir = str(output_dir)
    layout = recipe_layout(recipe)
    resolved = recipe.to_yaml_dict()
    _check_same_recipe(layout, resolved)
    layout.root.mkdir(parents=True, exist_ok=True)
    # Local workers that start from a forkserver: start it now, so that it imports their modules on
    # another core while this process indexes the source and builds the pipeline.
    start_local_workers_early(recipe.executor, worker_modules(recipe))
    _atomic_write(layout.recipe_file, yaml.safe_dump({**resolved, "versions": package_versions()}, sort_keys=False))

    source = make_source(recipe)
    n_items = source.prepare(layout.staging_dir / "source_index.jsonl")
    logger.info("indexed %d source items into %d tasks", n_items, recipe.executor.tasks)
    pipeline = build_pipeline(recipe, source=source)
    _forget_ranks_without_shards(layout, recipe.executor.tasks)
    run_executor(recipe, pipeline, layout)
    return layout


def recipe_layout(recipe: Recipe) -> OutputLayout:
    """The output folder of `recipe`, with datatrove's logging dir where `executor.logging_dir` puts it."""
    return OutputLayout(Path(recipe.output.dir), recipe.executor.logging_dir)


def run_executor(recipe: Recipe, pipeline: list, layout: OutputLayout) -> None:
    """Run the ranks, then finalize. On Slurm nothing runs here: the rank array is submitted with a
    one-task finalize job chained after it (`afterok`), so one `mfpo-data build` does the whole build;
    rerunning it resubmits only unfinished ranks (and finalize, unless that finished)."""
    logs = layout.logging_dir
    executor = make_executor(recipe.executor, pipeline, logs)
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


def _forget_ranks_without_shards(layout: OutputLayout, tasks: int) -> None:
    """A completion marker whose staging shard is gone (deleted by hand, or written by a version that
    staged in another format) would make datatrove skip a rank that finalize then finds missing, on
    every rerun. Remove such markers so that the rank runs again."""
    for rank in layout.missing_ranks(tasks):
        layout.completion_marker(rank).unlink(missing_ok=True)


def tertile_buckets(items: list[tuple[str, float]]) -> tuple[dict[str, str], list[float]]:
    """Bucket by rank over the whole build: the easiest third, the middle, the hardest third.

    Ties are broken by id so the split does not depend on shard order. Returns the bucket of each id
    and the two difficulty values at the cuts.
    """
    ordered = sorted(items, key=lambda t: (t[1], t[0]))
    n = len(ordered)
    sizes = (n // 3 + (n % 3 > 0), n // 3 + (n % 3 > 1))  # thirds; the remainder goes to easy, then medium
    cuts = (sizes[0], sizes[0] + sizes[1])
    buckets = {}
    for i, (sample_id, _) in enumerate(ordered):
        buckets[sample_id] = "easy" if i < cuts[0] else "medium" if i < cuts[1] else "hard"
    edges = [ordered[c - 1][1] if 0 < c <= n else float("nan") for c in cuts]
    return buckets, edges


def finalize(layout: OutputLayout, recipe: Recipe) -> dict:
    """After every rank: cut difficulty buckets over the whole build, write the final shards, merge
    stats and rejects. Idempotent; refuses an incomplete build."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tasks = recipe.executor.tasks
    missing = layout.missing_ranks(tasks)
    if missing:
        raise MfpoError(f"build incomplete: ranks {missing} of {tasks} did not finish; rerun the same command to resume")
    items = []
    for rank in range(tasks):
        with _open_staging(layout, rank, columns=("id", "difficulty")) as staging:
            for group in range(staging.num_record_batches):
                batch = staging.get_batch(group)
                items += zip(batch.column("id").to_pylist(), batch.column("difficulty").to_pylist(), strict=True)
    ids = [i for i, _ in items]
    if len(ids) != len(set(ids)):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise MfpoError(f"duplicate sample id across shards: {dup}")
    buckets, edges = tertile_buckets(items)

    layout.data_dir.mkdir(parents=True, exist_ok=True)
    expected = {layout.final_shard(r, tasks) for r in range(tasks)}
    for stale in set(layout.final_shards()) - expected:
        stale.unlink()
    fault = FaultPoint("finalize")  # crash-resume tests only

    def write_final(rank: int) -> None:
        fault.reached("finalize", rank)
        final = layout.final_shard(rank, tasks)
        tmp = final.with_name(final.name + ".tmp")
        with _open_staging(layout, rank) as staging:
            bucket_index = staging.schema.get_field_index("difficulty_bucket")
            with pq.ParquetWriter(tmp, staging.schema, **final_parquet_options()) as writer:  # a row group per batch
                for group in range(staging.num_record_batches):
                    batch = staging.get_batch(group)
                    column = pa.array([buckets[i] for i in batch.column("id").to_pylist()], pa.string())
                    writer.write_batch(batch.set_column(bucket_index, "difficulty_bucket", column))
        os.replace(tmp, final)

    # Shards are independent and pyarrow's reading, compression and writing release the GIL: threads.
    threads = min(recipe.executor.workers or tasks, tasks, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for future in [pool.submit(write_final, rank) for rank in range(tasks)]:
            future.result()

    stats = _merge_stats(layout, tasks)
    stats.update(
        tasks=tasks,
        difficulty_buckets=dict(Counter(buckets.values())),
        difficulty_edges=edges,
        backends={"source": {"kind": recipe.source.kind, **_jsonable(recipe.source.options)}, **describe_backends(recipe)},
        filters=vars(recipe.filters),
        seed=recipe.seed,
    )
    excluded = layout.staging_dir / "source_excluded.json"  # written by a source that honours source.exclude
    if excluded.is_file():
        stats["excluded"] = json.loads(excluded.read_text())
    _atomic_write(layout.stats_file, json.dumps(stats, indent=2, sort_keys=True))
    rejects = []
    for rank in range(tasks):
        with open(layout.staging_rejects(rank), encoding="utf-8") as f:
            rejects += [json.loads(line) for line in f if line.strip()]
    rejects.sort(key=lambda r: r["id"])
    _atomic_write(layout.rejects_file, "".join(json.dumps(r) + "\n" for r in rejects))
    for pid_file in layout.staging_dir.glob("*.pid"):  # which process ran each rank: of no use now
        pid_file.unlink(missing_ok=True)
    return stats


@contextmanager
def _open_staging(layout: OutputLayout, rank: int, columns: Sequence[str] | None = None):
    """A rank's staging shard. Each `get_batch` reads one record batch (one row group) into memory, or
    only `columns` of it, and Arrow IPC needs no decoding; not memory-mapped, so the shards do not add
    up in this process's RSS."""
    import pyarrow as pa

    options = None
    if columns is not None:
        options = pa.ipc.IpcReadOptions(included_fields=[arrow_schema().get_field_index(c) for c in columns])
    with pa.OSFile(str(layout.staging_shard(rank))) as source:
        yield pa.ipc.open_file(source, options=options)


def _merge_stats(layout: OutputLayout, tasks: int) -> dict:
    merged: dict = {"rows": 0}
    for rank in range(tasks):
        part = json.loads(layout.staging_stats(rank).read_text())
        merged["rows"] += part.pop("rows")
        for key, counts in part.items():
            target = merged.setdefault(key, Counter())
            target.update(counts)
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in merged.items()}


def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options, default=str))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
