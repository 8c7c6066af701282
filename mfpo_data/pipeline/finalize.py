"""Finalize a build after every rank: difficulty buckets cut over the whole build, the final parquet
shards, merged stats and rejects, then `manifest.json` with each final file's rows and sha256 (what
publish verifies). The last step; `run.py` calls it (or chains it as a Slurm job).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache

from mfpo_data.config import Recipe
from mfpo_data.errors import MfpoError
from mfpo_data.layout import OutputLayout, atomic_write
from mfpo_data.pipeline.outdir import remove_staging
from mfpo_data.pipeline.assemble import describe_backends
from mfpo_data.pipeline.outdir import file_entry, read_manifest, write_manifest
from mfpo_data.schema import arrow_schema
from mfpo_data.sources.base import index_stats_file
from mfpo_data.stages.s7_writer import fault_point


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
        items += _ids_and_difficulties(layout, rank, tasks)
    ids = [i for i, _ in items]
    if len(ids) != len(set(ids)):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise MfpoError(f"duplicate sample id across shards: {dup}")
    buckets, edges = tertile_buckets(items)

    layout.data_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(layout)
    expected = {layout.final_shard(r, tasks) for r in range(tasks)}
    for stale in set(layout.final_shards()) - expected:  # an earlier finalize's shards (other task count)
        if stale.relative_to(layout.root).as_posix() in manifest.get("files", {}):  # never a file we did not write
            stale.unlink()
    fault = fault_point("finalize")  # crash-resume tests only

    written: dict[int, dict] = {}  # rank -> the manifest entry of the final shard written now

    def write_final(rank: int) -> None:
        fault.reached("finalize", rank)
        if not layout.staging_shard(rank).is_file():  # an earlier finalize wrote this shard, then removed its staging
            return
        final = layout.final_shard(rank, tasks)
        tmp = final.with_name(final.name + ".tmp")
        rows = 0
        with _open_staging(layout, rank) as staging, open(tmp, "wb") as raw:
            sink = HashingFile(raw)
            bucket_index = staging.schema.get_field_index("difficulty_bucket")
            with pq.ParquetWriter(sink, staging.schema, **final_parquet_options()) as writer:  # a row group per batch
                for group in range(staging.num_record_batches):
                    batch = staging.get_batch(group)
                    column = pa.array([buckets[i] for i in batch.column("id").to_pylist()], pa.string())
                    writer.write_batch(batch.set_column(bucket_index, "difficulty_bucket", column))
                    rows += batch.num_rows
        os.replace(tmp, final)
        written[rank] = {"bytes": sink.size, "sha256": sink.hexdigest(), "rows": rows}
        if not recipe.output.keep_staging:  # its rows are in the final shard: the disk holds them once, not twice
            layout.staging_shard(rank).unlink()

    # Shards are independent and pyarrow's reading, compression and writing release the GIL: threads. Each shard
    # being written is on disk twice until its staging shard goes, so at most half of them are written at once:
    # the peak stays near 1.5x the output (2x with one task, whose only shard must be written before it goes).
    threads = min(recipe.executor.workers or tasks, tasks, os.cpu_count() or 1)
    if not recipe.output.keep_staging:
        threads = min(threads, tasks // 2)
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
    indexed = index_stats_file(layout.source_index)  # what the source counted while indexing (source.exclude)
    if indexed.is_file():
        stats.update(json.loads(indexed.read_text()))
    atomic_write(layout.stats_file, json.dumps(stats, indent=2, sort_keys=True))
    rejects = []
    for rank in range(tasks):
        with open(layout.staging_rejects(rank), encoding="utf-8") as f:
            rejects += [json.loads(line) for line in f if line.strip()]
    rejects.sort(key=lambda r: r["id"])
    atomic_write(layout.rejects_file, "".join(json.dumps(r) + "\n" for r in rejects))
    entries = {}
    for r in range(tasks):  # a shard an earlier finalize wrote is read back for its entry
        final = layout.final_shard(r, tasks)
        entries[final] = written.get(r) or file_entry(final, pq.ParquetFile(final).metadata.num_rows)
    others = [layout.stats_file, layout.rejects_file] + ([layout.answers_file] if _merge_answers(layout, tasks) else [])
    entries.update({p: file_entry(p) for p in others})
    manifest["files"] = {p.relative_to(layout.root).as_posix(): entry for p, entry in entries.items()}
    write_manifest(layout, manifest)  # last: a manifest that lists files means finalize finished
    for pid_file in layout.staging_dir.glob("*.pid"):  # which process ran each rank: of no use now
        pid_file.unlink(missing_ok=True)
    if not recipe.output.keep_staging:
        remove_staging(layout)
    return stats


def _ids_and_difficulties(layout: OutputLayout, rank: int, tasks: int) -> list[tuple[str, float]]:
    """(id, difficulty) of each of a rank's rows: from its staging shard, or from the final shard that an
    interrupted finalize wrote before it removed that staging shard."""
    import pyarrow.parquet as pq

    if not layout.staging_shard(rank).is_file():
        table = pq.read_table(layout.final_shard(rank, tasks), columns=["id", "difficulty"])
        return list(zip(table.column("id").to_pylist(), table.column("difficulty").to_pylist(), strict=True))
    items = []
    with _open_staging(layout, rank, columns=("id", "difficulty")) as staging:
        for group in range(staging.num_record_batches):
            batch = staging.get_batch(group)
            items += zip(batch.column("id").to_pylist(), batch.column("difficulty").to_pylist(), strict=True)
    return items


class HashingFile:
    """A binary file that counts and sha256-hashes what is written through it: the manifest's entry of a final
    shard without reading the shard back."""

    def __init__(self, raw):
        import hashlib

        self.raw, self.size, self.hash = raw, 0, hashlib.sha256()
        self.closed = False

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


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


def _merge_answers(layout: OutputLayout, tasks: int) -> bool:
    """An on-policy build's sampled answers (one file per rank) as one file sorted by key, the same for any
    number of tasks. Returns whether there were any."""
    parts = [layout.staging_answers(r) for r in range(tasks) if layout.staging_answers(r).is_file()]
    if not parts:
        return False
    lines = []
    for path in parts:
        with open(path, encoding="utf-8") as f:
            lines += [(json.loads(line)["key"], line if line.endswith("\n") else line + "\n") for line in f if line.strip()]
    lines.sort(key=lambda kv: kv[0])
    atomic_write(layout.answers_file, "".join(line for _, line in lines))
    return True


def _jsonable(options: dict) -> dict:
    return json.loads(json.dumps(options, default=str))
