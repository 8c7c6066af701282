"""Build throughput against its floor, 1 vs 2 workers, and peak RSS per worker process.

    python -m benchmarks.build_throughput                # N=500, RSS build of 5,000
    python -m benchmarks.build_throughput --n 2000 --rss-n 0 --repeat 3

Input: the bundled COCO sample repeated (a COCO folder in a temp dir whose image folder links to the
bundled one; image and annotation ids renumbered per copy), built with the default recipe (CPU backends).

The floor is the I/O every build must do, in one process, without the pipeline: decode each image
once, embed the original the way the writer does (its own bytes when lossless, else PNG) plus one
PNG-encoded image per pair, in the same `Features`, parquet row groups and compress level.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mfpo_data.sources.coco import BUNDLED_COCO


PAIRS_PER_IMAGE = 4  # 2 caption + 2 presence pairs in the default recipe


def repeated_coco(root: Path, n_samples: int) -> tuple[Path, int]:
    """A COCO folder with enough copies of the bundled sample for about `n_samples` pairs; returns (root, images)."""
    instances = json.loads((BUNDLED_COCO / "annotations" / "instances_sample.json").read_text())
    captions = json.loads((BUNDLED_COCO / "annotations" / "captions_sample.json").read_text())
    n_images = math.ceil(n_samples / PAIRS_PER_IMAGE)
    copies = math.ceil(n_images / len(instances["images"]))
    (root / "annotations").mkdir(parents=True)
    os.symlink(BUNDLED_COCO / "sample", root / "sample")  # the copies share the files; ids differ per copy
    step = 10 ** len(str(max(i["id"] for i in instances["images"]) + 1))
    images, anns, caps = [], [], []
    for c in range(copies):
        for img in instances["images"]:
            images.append({**img, "id": c * step + img["id"]})
        anns += [{**a, "id": c * 10**7 + a["id"], "image_id": c * step + a["image_id"]} for a in instances["annotations"]]
        caps += [{**a, "id": c * 10**7 + a["id"], "image_id": c * step + a["image_id"]} for a in captions["annotations"]]
    (root / "annotations" / "instances_sample.json").write_text(json.dumps({**instances, "images": images, "annotations": anns}))
    (root / "annotations" / "captions_sample.json").write_text(json.dumps({**captions, "images": images, "annotations": caps}))
    return root, n_images


def build(root: Path, n_images: int, out: Path, tasks: int, workers: int, extra=()) -> tuple[float, int]:
    from mfpo_data.pipeline.build import build_dataset

    overrides = [f"source.root={root}", f"source.limit={n_images}", f"executor.tasks={tasks}",
                 f"executor.workers={workers}", "output.progress=false", *extra]  # fmt: skip
    start = time.perf_counter()
    layout = build_dataset("coco", overrides, out)
    return time.perf_counter() - start, layout.read_stats()["rows"]


def floor(root: Path, n_images: int, out: Path, n_rows: int, encode_original: bool) -> float:
    """Decode each image once; per pair, PNG-encode the rejected image (and the original when
    `encode_original`, else embed its file bytes as the writer does); write parquet as finalize does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mfpo_data.config import load_recipe
    from mfpo_data.imaging import decode_image, encode_png
    from mfpo_data.pipeline.finalize import final_parquet_options
    from mfpo_data.schema import Sample, features, to_row
    from mfpo_data.sources.coco import CocoSource

    output = load_recipe("coco").output
    index = out / "index.jsonl"
    CocoSource(root=str(root), limit=n_images).prepare(index)  # the same images, not timed
    files = [json.loads(line)["file_name"] for line in index.read_text().splitlines()]
    feats = features()
    start = time.perf_counter()
    written = 0
    with pq.ParquetWriter(out / "floor.parquet", feats.arrow_schema, **final_parquet_options()) as writer:
        rows = []
        for name in files:
            data = (root / "sample" / name).read_bytes()  # the pipeline reads and decodes each image once too
            image, as_is = decode_image(data)
            for k in range(PAIRS_PER_IMAGE):
                if written == n_rows:
                    break
                embed = data if as_is and not encode_original else encode_png(image, output.png_compress_level)
                sample = Sample(f"{name}:{k}", "coco", name, "caption", "Is there a cat?", "Yes.", "No.", image=image)
                rejected = {"bytes": encode_png(image, output.png_compress_level), "path": None}
                rows.append(feats.encode_example(to_row(sample, {"bytes": embed, "path": None}, rejected, None)))
                written += 1
                if len(rows) >= output.row_group_size:
                    writer.write_table(pa.Table.from_pylist(rows, schema=feats.arrow_schema))
                    rows.clear()
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=feats.arrow_schema))
    return time.perf_counter() - start


def run_tree(cmd: list[str]) -> tuple[str, float, dict[int, tuple[int, str]]]:
    """Run `cmd`, sampling every process of its tree: last CPU time seen and peak RSS (VmHWM).
    Returns (stdout, CPU seconds of its descendants, {pid: (peak RSS bytes, command)})."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cpu: dict[int, float] = {}
    peaks: dict[int, tuple[int, str]] = {}

    def watch():
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    times = p.cpu_times()
                    cpu[p.pid] = times.user + times.system
                    with open(f"/proc/{p.pid}/status") as f:
                        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
                    name = peaks.get(p.pid, (0, ""))[1] or " ".join(p.cmdline()[1:4])[:70]
                    peaks[p.pid] = (max(peaks.get(p.pid, (0, ""))[0], hwm), name)
                except (OSError, StopIteration, psutil.Error):
                    continue
            time.sleep(0.25)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed with {proc.returncode}")
    return out, sum(v for pid, v in cpu.items() if pid != proc.pid), peaks


def child_build(root: Path, n_images: int, out: Path, tasks: int, workers: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", __spec__.name, "--_child", str(root), str(n_images), str(out), str(tasks), str(workers),
           *[f"--set={e}" for e in extra]]  # fmt: skip
    stdout, cpu_children, peaks = run_tree(cmd)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "cpu": result["cpu_self"] + cpu_children, "peaks": peaks}  # imports before the build not counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="samples (pairs) per throughput build")
    parser.add_argument("--rss-n", type=int, default=5000, help="samples of the peak-RSS build, 2 workers (0 skips it)")
    parser.add_argument("--repeat", type=int, default=1, help="repeat each timing, keep the best")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="recipe override for the builds")
    parser.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        root, n_images, out, tasks, workers = args._child
        import mfpo_data.pipeline.build  # noqa: F401  (imports are not the build's work)
        from mfpo_data.config import load_recipe
        from mfpo_data.pipeline.executors import resolve_start_method

        start = resolve_start_method(load_recipe("coco", tuple(args.extra)).executor.start_method)  # as the build will
        c0 = time.process_time()
        wall, rows = build(Path(root), int(n_images), Path(out), int(tasks), int(workers), args.extra)
        print(json.dumps({"wall": wall, "rows": rows, "cpu_self": time.process_time() - c0, "start": start}))
        return

    with tempfile.TemporaryDirectory(prefix="mfpo-bench-") as tmp:
        tmp = Path(tmp)
        root, _ = repeated_coco(tmp / "coco", max(args.n, args.rss_n))
        n_images = math.ceil(args.n / PAIRS_PER_IMAGE)
        child_build(root, 4, tmp / "warmup", 1, 1, args.extra)  # page cache warm
        best: dict[str, dict] = {}
        for r in range(args.repeat):
            runs = {"1 worker": child_build(root, n_images, tmp / f"w1-{r}", 1, 1, args.extra),
                    "2 workers": child_build(root, n_images, tmp / f"w2-{r}", 2, 2, args.extra)}  # fmt: skip
            rows = runs["1 worker"]["rows"]
            assert runs["2 workers"]["rows"] == rows
            for name, encode_original in (("floor, both images encoded", True), ("floor, original embedded", False)):
                (tmp / f"{name[-8:]}-{r}").mkdir()
                c0 = time.process_time()
                wall = floor(root, n_images, tmp / f"{name[-8:]}-{r}", rows, encode_original)
                runs[name] = {"wall": wall, "cpu": time.process_time() - c0, "rows": rows}
            for name, run in runs.items():
                if name not in best or run["wall"] < best[name]["wall"]:
                    best[name] = run
        load = os.getloadavg()[0]
        print(f"samples: {rows} ({n_images} images: the bundled sample repeated); best of {args.repeat}; "
              f"{os.cpu_count()} CPUs, load average {load:.1f} at the end")  # fmt: skip
        print(f"{'':30} {'samples/s':>10} {'wall s':>8} {'CPU s':>8}")
        for name in ("floor, both images encoded", "floor, original embedded", "1 worker", "2 workers"):
            run = best[name]
            print(f"{name:30} {rows / run['wall']:10.1f} {run['wall']:8.2f} {run['cpu']:8.2f}")
        one, two = best["1 worker"], best["2 workers"]
        for name in ("floor, both images encoded", "floor, original embedded"):
            f = best[name]
            print(f"ratio 1-worker build / {name}: wall {one['wall'] / f['wall']:.2f}x, CPU {one['cpu'] / f['cpu']:.2f}x")
        print(f"2 workers vs 1: speed-up (wall) {one['wall'] / two['wall']:.2f}x; CPU spent {two['cpu'] / one['cpu']:.2f}x "
              f"(workers started by {two['start']})")  # fmt: skip
        if args.rss_n:
            n_rss = math.ceil(args.rss_n / PAIRS_PER_IMAGE)
            run = child_build(root, n_rss, tmp / "rss", 2, 2, args.extra)
            print(f"peak RSS per process, {run['rows']}-sample build, tasks=2 workers=2 "
                  f"({run['wall']:.0f} s wall, {run['rows'] / run['wall']:.1f} samples/s):")  # fmt: skip
            for pid, (peak, name) in sorted(run["peaks"].items(), key=lambda kv: -kv[1][0]):
                print(f"  {peak / 2**20:7.0f} MiB  pid {pid:<8} {name}")


if __name__ == "__main__":
    main()
