"""Writer: one staging shard per rank, its rejects and its counts, each written atomically.

Rows stream into `staging/{rank}.arrow.tmp` one record batch at a time (memory stays flat); at the
end of the rank the temp files are renamed into place, and only then does datatrove write the rank's
completion marker. A crashed rank leaves no file that looks complete; a rerun redoes it whole.

Staging shards are Arrow IPC files, not parquet: finalize reads each once more, and an IPC batch needs
no decoding, where decoding an uncompressed parquet shard cost as much CPU as writing the final one.
Each record batch becomes one row group of the final parquet shard.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from mfpo_data.imaging import WEBP_MAX_SIDE, encode_png, encode_webp, rle_encode
from mfpo_data.layout import OutputLayout
from mfpo_data.schema import Sample, arrow_schema, targets_key_object, to_row
from mfpo_data.stages.base import Stage


FAULT_ENV = "MFPO_FAULT_INJECT"  # set only by the crash-resume tests


class _NoFault:
    def reached(self, event: str, count: int = 0) -> None:
        pass


def fault_point(where: int | str):
    """The crash point armed for a rank (or "finalize") by `FAULT_ENV`; `mfpo_data.faults`, which kills
    the process there, is imported only when a test sets it, so a normal build never loads it."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return _NoFault()
    from mfpo_data.faults import FaultPoint

    return FaultPoint(where, spec)


def reason_code(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


EVIDENCE_STATS = ("untargeted_negatives", "removal_checked", "removal_still_detected", "removal_unverified",
                  "negated_key_objects")  # fmt: skip


def negative_kind(sample: Sample) -> str:
    """A row's kind of negative in the stats: the perturbation backend and the region it was applied to."""
    return f"{sample.perturbation}/{sample.perturbation_params.get('region', '')}"


def count_evidence(stats: dict, sample: Sample) -> None:
    """What a kept row says about its negative: untargeted by construction (by region), re-detected on m' or not
    (by kind), and whether the chosen answer negated the first key object (`stages/s1_keywords.py`)."""
    if not targets_key_object(sample.perturbation_params):
        stats["untargeted_negatives"][sample.perturbation_params.get("region", "")] += 1
    kind = negative_kind(sample)
    if sample.removal_score is not None:
        stats["removal_checked"][kind] += 1
        stats["removal_still_detected"][kind] += sample.removal_score[1] > 0
    elif sample.key_objects and sample.perturbation_params.get("region") != "inserted":
        stats["removal_unverified"][kind] += 1
    negated = sample.metadata.get("negated_key_object")
    if negated:
        stats["negated_key_objects"]["no_asserted_object" if sample.absent_object else "replaced"] += 1


class ImageEncoder:
    """How the writer embeds an image it encodes (m', an original that cannot be embedded as it is): lossless
    `webp` (libwebp's `webp_method`) or `png` (OpenCV, zlib `png_compress_level`). An image wider or taller
    than WebP allows is PNG. `jpeg_blocks` writes m' as its original's JPEG with the touched blocks re-encoded
    (`mfpo_data/jpeg_blocks.py`) and everything else, and m' where that cannot apply, as lossless WebP."""

    FORMATS = ("png", "webp", "jpeg_blocks")

    def __init__(self, image_format: str = "png", png_compress_level: int = 1, webp_method: int = 0):
        if image_format not in self.FORMATS:
            raise ValueError(f"image format must be one of {', '.join(self.FORMATS)}, got {image_format!r}")
        self.image_format, self.png_compress_level, self.webp_method = image_format, png_compress_level, webp_method

    def __call__(self, array) -> bytes:
        return self._lossless(array)[0]

    def _lossless(self, array) -> tuple[bytes, str]:
        if self.image_format != "png" and max(array.shape[:2]) <= WEBP_MAX_SIDE:
            return encode_webp(array, self.webp_method), "webp"
        return encode_png(array, self.png_compress_level), "png"

    def perturbed(self, sample: Sample) -> tuple[bytes, str]:
        """m''s bytes and how they were made: `jpeg_blocks`, `webp` or `png`."""
        if self.image_format == "jpeg_blocks" and sample.image_bytes is not None:
            from mfpo_data import jpeg_blocks

            data = jpeg_blocks.encode(sample.image_bytes, sample.image, sample.rejected_image)
            if data is not None:
                return data, "jpeg_blocks"
        return self._lossless(sample.rejected_image)


class ShardWriter(Stage):
    """`encode_threads` > 0 encodes the rows' images on that many threads (OpenCV, zlib and libwebp release the
    GIL), up to twice as many rows ahead of the one being written; rows are written in arrival order."""

    name = "writer"

    def __init__(self, output_dir: str, encoder: ImageEncoder | None = None, row_group_size: int = 64,
                 progress: bool = True, encode_threads: int = 0):  # fmt: skip
        super().__init__()
        self.output_dir, self.encoder = output_dir, encoder or ImageEncoder()
        self.row_group_size, self.progress, self.encode_threads = row_group_size, progress, encode_threads

    def __call__(self, data=None, rank: int = 0, world_size: int = 1):
        # Eager, unlike the generator `run`: datatrove calls each step as it assembles a rank's pipeline,
        # so the pid is on disk from the rank's start, for `WorkerWatchdog`.
        layout = OutputLayout(Path(self.output_dir))
        layout.staging_dir.mkdir(parents=True, exist_ok=True)
        tmp = layout.staging_pid(rank).with_name(f"{rank:05d}.pid.tmp")
        tmp.write_text(str(os.getpid()))
        os.replace(tmp, layout.staging_pid(rank))
        return super().__call__(data, rank, world_size)

    def run(self, data: Iterable[Sample], rank: int = 0, world_size: int = 1) -> Iterator[Sample]:
        import pyarrow as pa

        layout = OutputLayout(Path(self.output_dir))
        layout.staging_dir.mkdir(parents=True, exist_ok=True)
        shard, rejects_path, stats_path = layout.staging_shard(rank), layout.staging_rejects(rank), layout.staging_stats(rank)
        tmp = {p: p.with_name(p.name + ".tmp") for p in (shard, rejects_path, stats_path)}
        schema = arrow_schema()  # features() without importing datasets
        stats = {"rows": 0, "pair_types": Counter(), "categories": Counter(), "perturbation_regions": Counter(),
                 "invalid_image_pairs": Counter(), "dropped": Counter(), "dropped_by_stage": Counter(),
                 "rejected_image_formats": Counter(), **{key: Counter() for key in EVIDENCE_STATS}}  # fmt: skip
        fault = fault_point(rank)  # crash-resume tests only; inert otherwise
        seen = 0
        bar = self._bar(layout, rank, world_size)
        last_item = None
        rows: list[dict] = []
        with pa.OSFile(str(tmp[shard]), "wb") as sink, pa.ipc.new_file(sink, schema) as writer, \
                open(tmp[rejects_path], "w", encoding="utf-8") as rejects:  # fmt: skip

            def flush():
                if rows:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows.clear()

            for sample, encoded in self._encoded(data):
                if sample.dropped is not None:
                    stage, reason = sample.dropped
                    rejects.write(json.dumps({"id": sample.id, "stage": stage, "reason": reason}) + "\n")
                    stats["dropped"][reason_code(reason)] += 1
                    stats["dropped_by_stage"][stage] += 1
                    self.stat_update(f"dropped/{reason_code(reason)}")
                else:
                    row, how = encoded
                    rows.append(row)
                    stats["rows"] += 1
                    stats["rejected_image_formats"][how] += 1
                    stats["pair_types"][sample.pair_type] += 1
                    stats["perturbation_regions"][sample.perturbation_params.get("region", "")] += 1
                    if sample.image_pair_invalid:
                        stats["invalid_image_pairs"][reason_code(sample.image_pair_invalid)] += 1
                    count_evidence(stats, sample)
                    if sample.key_objects:
                        stats["categories"][sample.key_objects[0].category or sample.key_objects[0].phrase] += 1
                    elif sample.target:
                        stats["categories"][sample.target] += 1
                    self.stat_update("rows")
                    if len(rows) >= self.row_group_size:
                        flush()
                    fault.reached("rows", stats["rows"])
                seen += 1
                fault.reached("samples", seen)
                if bar is not None and sample.source_item != last_item:  # the rank moved on to its next item
                    if last_item is not None:
                        bar.update(1)
                        bar.set_postfix(pairs=stats["rows"], refresh=False)
                    last_item = sample.source_item
                yield sample
            flush()
        if bar is not None:
            bar.update(bar.total - bar.n if bar.total else 0)
            bar.close()
        tmp[stats_path].write_text(json.dumps({k: dict(v) if isinstance(v, Counter) else v for k, v in stats.items()}, sort_keys=True))
        # Shard last: a present shard implies its rejects and stats are present too.
        for final in (rejects_path, stats_path, shard):
            os.replace(tmp[final], final)
        fault.reached("commit")

    def _encoded(self, data: Iterable[Sample]) -> Iterator[tuple[Sample, tuple[dict, str] | None]]:
        """Each sample with its row and m''s format (None for a dropped one), in arrival order; encoded ahead on
        the pool."""
        if self.encode_threads < 1:
            for sample in data:
                yield sample, (self._row(sample) if sample.dropped is None else None)
            return
        window: deque[tuple[Sample, Future | None]] = deque()

        def oldest() -> tuple[Sample, tuple[dict, str] | None]:
            sample, future = window.popleft()
            return sample, (future.result() if future is not None else None)

        with ThreadPoolExecutor(self.encode_threads, thread_name_prefix="mfpo-encode") as pool:
            for sample in data:
                window.append((sample, pool.submit(self._row, sample) if sample.dropped is None else None))
                if len(window) > 2 * self.encode_threads:
                    yield oldest()
            while window:
                yield oldest()

    def _row(self, sample: Sample) -> tuple[dict, str]:
        if sample.image_bytes is not None:
            original = {"bytes": sample.image_bytes, "path": None}
        else:
            original = {"bytes": self.encoder(sample.image), "path": None}
        data, how = self.encoder.perturbed(sample)
        mask_rle = rle_encode(sample.mask) if sample.mask is not None else None
        return to_row(sample, original, {"bytes": data, "path": None}, mask_rle), how

    def _bar(self, layout: OutputLayout, rank: int, world_size: int):
        """Progress over this rank's source items (images or records), so it has a total and an ETA; the
        pairs written so far are shown beside it. The total follows the sources' `line % world_size` rule
        (a stream sharded by its files has other totals: the bar then shows a count and a rate)."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        try:
            with open(layout.source_index, "rb") as f:
                lines = sum(1 for _ in f)
        except OSError:  # a pipeline run without an index (stages used from Python): no total
            lines = None
        total = None if lines is None else max(0, (lines - rank + world_size - 1) // world_size)
        return tqdm(total=total, desc=f"rank {rank}", unit=" items", mininterval=1.0, leave=False)
