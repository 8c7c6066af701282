"""Build cost against the writer's floor, 2 workers against 1, bytes per pair and peak disk, peak RSS per worker.

    python -m benchmarks.build_throughput                          # 125 images, 3 interleaved rounds (~5 min, 2 cores)
    python -m benchmarks.build_throughput --images 500 --rounds 3  # long enough for the 2-worker speed-up
    python -m benchmarks.build_throughput --images 2000 --long-side 640 --rounds 1 --modes build1 --tasks 4

Input: a COCO folder of exactly `--images` images, always the same ones for the same `--images`: copies of the
bundled sample with image and annotation ids renumbered per copy. Default: the copies share the sample's files
(512 px JPEGs of about 50 KB). `--long-side N`: every copy is its own JPEG (quality 90), resized to a long side
of N - (copy % 67) px and mirrored on odd rounds of 67 copies, its boxes and polygons moved with it: distinct
COCO-sized images (COCO's are 640 px). The default recipe (`coco`, CPU backends) builds it.

Each round runs, in an order rotated every round so that a change of the machine's load falls on all alike:
  * `floor`: the writer's own work on the same pairs, in this process, without the pipeline: read and decode
    each image once, embed each original as the writer does (its own bytes when lossless, else encoded), encode
    each pair's m' with the writer's encoder (`output.image_format`), and write the rows to parquet with the
    final shards' options. The m' pixels are the build's own, decoded from a build made before the rounds;
  * `build1`: the build, 1 task, 1 worker, in a subprocess; `build2`: 2 tasks, 2 workers (`--tasks` sets the
    task count of `build1`; `build2` uses max(2, --tasks)).
CPU time is the verdict (user + system of the build's processes, taken from the kernel's accounting of the child and
every process it waited for, less the child's CPU before the build starts: its imports, those of a worker's modules
included, pandas among them, which pyarrow imports at its first conversion and the floor's process has imported
before the rounds); wall time is shown beside it. Per round: build1 CPU / floor CPU, build1 wall / build2 wall,
build2 CPU / build1 CPU; the table gives the median and the min-max over rounds.
Targets: build1 <= 1.3x the floor's CPU time; 2 workers >= 1.9x 1 worker's speed (wall; only a machine with
idle cores can show it, so the load average is printed before and after). One worker's stage and encoding threads
keep more than one core busy (its CPU / wall is printed), so on 2 CPUs the default build can gain at most 2 / that;
`--set executor.overlap=false --set output.encode_threads=0` makes each worker one thread, which 2 idle cores can
show the scaling of.

Disk: bytes per pair = the final parquet shards' bytes / pairs, split into the originals (`images`), m'
(`rejected_images`) and the rest (parquet's compressed column sizes); peak disk = the largest total size of the
output folder seen while the build ran (sampled every 0.1 s), also as a multiple of the final output.
`--rss-images N`: one more 2-worker build of N images (its own folder) and every process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mfpo_data.sources.coco import BUNDLED_COCO


PAIRS_PER_IMAGE = 4  # 2 caption + 2 presence pairs in the default recipe (at most)
SIZE_VARIANTS = 67  # --long-side: long sides N, N-1, ..., N-66, then the same mirrored
TARGET_FLOOR, TARGET_SPEEDUP = 1.3, 1.9
MODES = ("floor", "build1", "build2")


def coco_folder(root: Path, n_images: int, long_side: int | None = None) -> Path:
    """A COCO folder (split `sample`) of exactly `n_images` images: copies of the bundled sample, ids renumbered per
    copy. Without `long_side` the copies link to the sample's files; with it each copy is a distinct JPEG
    (module docstring). Returns `root`."""
    instances = json.loads((BUNDLED_COCO / "annotations" / "instances_sample.json").read_text())
    captions = json.loads((BUNDLED_COCO / "annotations" / "captions_sample.json").read_text())
    base = sorted(instances["images"], key=lambda i: i["id"])
    step = 10 ** len(str(max(i["id"] for i in base) + 1))
    (root / "annotations").mkdir(parents=True)
    if long_side is None:
        os.symlink(BUNDLED_COCO / "sample", root / "sample")
    else:
        (root / "sample").mkdir()
    images, anns, caps = [], [], []
    by_image = {}
    for a in instances["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for k in range(n_images):
        copy, img = divmod(k, len(base))
        img = base[img]
        new_id = copy * step + img["id"]
        entry, transform = {**img, "id": new_id}, None
        if long_side is not None:
            entry, transform = _distinct_copy(root / "sample", img, entry, copy, long_side)
        images.append(entry)
        for a in by_image.get(img["id"], []):
            a = {**a, "id": copy * 10**7 + a["id"], "image_id": new_id}
            anns.append(transform(a) if transform else a)
        caps += [{**c, "id": copy * 10**7 + c["id"], "image_id": new_id} for c in captions["annotations"]
                 if c["image_id"] == img["id"]]  # fmt: skip
    (root / "annotations" / "instances_sample.json").write_text(json.dumps({**instances, "images": images, "annotations": anns}))
    (root / "annotations" / "captions_sample.json").write_text(json.dumps({**captions, "images": images, "annotations": caps}))
    return root


def _distinct_copy(folder: Path, img: dict, entry: dict, copy: int, long_side: int):
    """Copy `copy` of a sample image as its own JPEG (resized, mirrored on odd rounds), and the function that moves
    an annotation onto it."""
    from PIL import Image, ImageOps

    side = long_side - copy % SIZE_VARIANTS
    mirror = (copy // SIZE_VARIANTS) % 2 == 1
    with Image.open(BUNDLED_COCO / "sample" / img["file_name"]) as im:
        scale = side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        out = im.convert("RGB").resize(size, Image.BICUBIC)
    out = ImageOps.mirror(out) if mirror else out
    name = f"{copy:05d}_{img['file_name']}"
    out.save(folder / name, quality=90)
    sx, sy = size[0] / img["width"], size[1] / img["height"]

    def x(v: float) -> float:
        return size[0] - v * sx if mirror else v * sx

    def move(a: dict) -> dict:
        bx, by, bw, bh = a["bbox"]
        box = [x(bx + bw) if mirror else x(bx), by * sy, bw * sx, bh * sy]
        polygons = [[x(v) if i % 2 == 0 else v * sy for i, v in enumerate(p)] for p in a["segmentation"]]
        return {**a, "bbox": box, "segmentation": polygons, "area": a["area"] * sx * sy}

    return {**entry, "file_name": name, "width": size[0], "height": size[1]}, move


def build(root: Path, n_images: int, out: Path, tasks: int, workers: int, extra=()) -> tuple[float, int]:
    """The default recipe on the first `n_images` images of the COCO folder `root`: (wall seconds, rows)."""
    from mfpo_data.pipeline.build import build_dataset

    overrides = [f"source.root={root}", f"source.limit={n_images}", f"executor.tasks={tasks}",
                 f"executor.workers={workers}", "output.progress=false", *extra]  # fmt: skip
    start = time.perf_counter()
    layout = build_dataset("coco", overrides, out)
    return time.perf_counter() - start, layout.read_stats()["rows"]


# ------------------------------------------------------------------------------------------------ the floor


def floor_inputs(root: Path, layout_root: Path) -> list[tuple[str, bytes | None, list]]:
    """From a finished build: per image, its file name and each of its rows' m' pixels (decoded here, not timed)."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from mfpo_data.layout import OutputLayout

    files = {str(i["id"]): i["file_name"]
             for i in json.loads((root / "annotations" / "instances_sample.json").read_text())["images"]}  # fmt: skip
    per_image: dict[str, list] = {}
    for shard in OutputLayout(layout_root).final_shards():
        table = pq.read_table(shard, columns=["image_id", "rejected_images"])
        for image_id, rejected in zip(table.column("image_id").to_pylist(), table.column("rejected_images").to_pylist(),
                                      strict=True):  # fmt: skip
            with Image.open(io.BytesIO(rejected[0]["bytes"])) as im:
                per_image.setdefault(image_id, []).append(np.asarray(im.convert("RGB")))
    return [(files[i], None, arrays) for i, arrays in sorted(per_image.items(), key=lambda kv: int(kv[0]))]


def floor(root: Path, inputs, out: Path, extra=()) -> int:
    """The writer's work on `inputs` (see the module docstring); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mfpo_data.config import load_recipe
    from mfpo_data.imaging import decode_image
    from mfpo_data.pipeline.finalize import final_parquet_options
    from mfpo_data.schema import Sample, arrow_schema, to_row
    from mfpo_data.stages.s7_writer import ImageEncoder

    output = load_recipe("coco", tuple(extra)).output
    encoder = ImageEncoder(output.image_format, output.png_compress_level, output.webp_method)
    schema = arrow_schema()
    written, rows = 0, []
    with pq.ParquetWriter(out, schema, **final_parquet_options()) as writer:
        for name, _, rejected in inputs:
            data = (root / "sample" / name).read_bytes()
            image, as_is = decode_image(data)
            original = {"bytes": data if as_is else encoder(image), "path": None}
            for k, array in enumerate(rejected):
                sample = Sample(f"{name}:{k}", "coco", name, "caption", "Is there a cat?", "Yes.", "No.", image=image,
                                image_bytes=data if as_is else None, rejected_image=array)  # fmt: skip
                rows.append(to_row(sample, original, {"bytes": encoder.perturbed(sample)[0], "path": None}, None))
                written += 1
                if len(rows) >= output.row_group_size:
                    writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                    rows.clear()
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    return written


# ------------------------------------------------------------------------------------------------ measuring


class Watcher:
    """While a build runs: every 0.1 s, the total size of its output folder and each process's peak RSS."""

    def __init__(self, pid: int, folder: Path):
        self.pid, self.folder = pid, folder
        self.peak_disk, self.peaks = 0, {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.done.is_set():
            self.peak_disk = max(self.peak_disk, folder_bytes(self.folder))
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                procs = []
            for p in procs:
                try:
                    with open(f"/proc/{p.pid}/status") as f:
                        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
                    name = self.peaks.get(p.pid, (0, ""))[1] or " ".join(p.cmdline()[1:4])[:70]
                    self.peaks[p.pid] = (max(self.peaks.get(p.pid, (0, ""))[0], hwm), name)
                except (OSError, StopIteration, psutil.Error):
                    continue
            self.done.wait(0.1)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        self.peak_disk = max(self.peak_disk, folder_bytes(self.folder))


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except OSError:
                continue
    return total


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def child_build(root: Path, n_images: int, out: Path, tasks: int, workers: int, extra: list[str]) -> dict:
    """The build in a subprocess: wall, rows, CPU of it and of every process it waited for (less its imports),
    peak disk of its folder, peak RSS of each of its processes."""
    cmd = [sys.executable, "-m", __spec__.name, "--_child", str(root), str(n_images), str(out), str(tasks), str(workers),
           *[f"--set={e}" for e in extra]]  # fmt: skip
    out.mkdir(parents=True)
    cpu0 = children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watcher = Watcher(proc.pid, out)
    stdout, _ = proc.communicate()
    watcher.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    cpu = children_cpu() - cpu0 - result["cpu_before"]
    return {**result, "cpu": cpu, "peak_disk": watcher.peak_disk, "peaks": watcher.peaks, **output_bytes(out)}


def output_bytes(folder: Path) -> dict:
    """Bytes of the final shards, and parquet's compressed sizes of the original and m' image columns."""
    import pyarrow.parquet as pq

    from mfpo_data.layout import OutputLayout

    shards = OutputLayout(folder).final_shards()
    sizes = {"output_bytes": sum(s.stat().st_size for s in shards), "original_bytes": 0, "rejected_bytes": 0}
    for shard in shards:
        meta = pq.ParquetFile(shard).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                key = {"images": "original_bytes", "rejected_images": "rejected_bytes"}.get(column.path_in_schema.split(".")[0])
                if key:
                    sizes[key] += column.total_compressed_size
    return sizes


def outside_mask_changes(folder: Path) -> dict:
    """Summed over the rows with a mask, what m' changed outside the key mask (`jpeg_blocks.outside_mask`)."""
    import pyarrow.parquet as pq

    from mfpo_data.imaging import decode_image, rle_decode
    from mfpo_data.jpeg_blocks import outside_mask
    from mfpo_data.layout import OutputLayout

    total = {"outside": 0, "changed": 0, "abs_diff": 0, "beyond_blocks": 0}
    for shard in OutputLayout(folder).final_shards():
        table = pq.read_table(shard, columns=["images", "rejected_images", "mask"])
        for images, rejected, rle in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
            if rle is not None:
                part = outside_mask(decode_image(images[0]["bytes"])[0], decode_image(rejected[0]["bytes"])[0], rle_decode(rle))
                total = {k: total[k] + part[k] for k in total}
    return total


def timed_floor(root: Path, inputs, out: Path, extra: list[str]) -> dict:
    c0, w0 = time.process_time(), time.perf_counter()
    rows = floor(root, inputs, out, extra)
    return {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "rows": rows}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=125, help="source images of every timed build (fixed sample)")
    parser.add_argument("--long-side", type=int, default=None, help="distinct COCO-sized JPEGs of this long side")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each runs every mode once)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--tasks", type=int, default=1, help="tasks of the 1-worker build (its shards)")
    parser.add_argument("--rss-images", type=int, default=0, help="images of a 2-worker build for peak RSS (0: none)")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="recipe override for every build")
    parser.add_argument("--_child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        root, n_images, out, tasks, workers = args._child
        import importlib

        import mfpo_data.pipeline.build  # noqa: F401  (imports are not the build's work)
        from mfpo_data.config import load_recipe
        from mfpo_data.pipeline.assemble import worker_modules
        from mfpo_data.pipeline.executors import resolve_start_method

        recipe = load_recipe("coco", tuple(args.extra))
        start = resolve_start_method(recipe.executor.start_method)  # as the build will
        # What a worker has imported before its rank starts (`worker_modules`), pandas among them: pyarrow imports
        # it at its first conversion of Python values, which the floor's process did before the rounds.
        for module in worker_modules(recipe):
            importlib.import_module(module)
        before = time.process_time()
        wall, rows = build(Path(root), int(n_images), Path(out), int(tasks), int(workers), args.extra)
        print(json.dumps({"wall": wall, "rows": rows, "cpu_before": before, "start": start}))
        return

    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown mode {sorted(unknown)[0]!r}; choose from {', '.join(MODES)}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mfpo-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        root = coco_folder(tmp / "coco", args.images, args.long_side)
        made = time.perf_counter() - t0
        jpeg = [p.stat().st_size for p in (root / "sample").iterdir()] if args.long_side else []
        print(f"input: {args.images} images ({'distinct JPEGs, long side %d' % args.long_side if args.long_side else 'the bundled sample repeated'}"
              f"{', mean %.0f KB, made in %.0f s' % (statistics.fmean(jpeg) / 1e3, made) if jpeg else ''})", flush=True)  # fmt: skip
        inputs = None
        if "floor" in modes:  # the m' pixels of these pairs (also warms the page cache and the imports)
            ref = child_build(root, args.images, tmp / "reference", 1, 1, args.extra)
            inputs = floor_inputs(root, tmp / "reference")
            print(f"reference build for the floor's m': {ref['rows']} pairs, {ref['wall']:.1f} s", flush=True)
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for r in range(args.rounds):
            order = modes[r % len(modes):] + modes[: r % len(modes)]
            for mode in order:
                out = tmp / f"{mode}-{r}"
                if mode == "floor":
                    out.mkdir()
                    run = timed_floor(root, inputs, out / "floor.parquet", args.extra)
                else:
                    tasks = args.tasks if mode == "build1" else max(2, args.tasks)
                    run = child_build(root, args.images, out, tasks, 1 if mode == "build1" else 2, args.extra)
                runs[mode].append(run)
                print(f"round {r + 1}/{args.rounds} {mode}: CPU {run['cpu']:.1f} s, wall {run['wall']:.1f} s", flush=True)
                if mode != "floor":
                    import shutil

                    if r == 0:  # the bytes per pair and these are reported from the first round's build
                        run["outside_mask"] = outside_mask_changes(out)

                    shutil.rmtree(out)
        load_after = os.getloadavg()
        report(args, runs, load_before, load_after)
        if args.rss_images:
            rss_root = coco_folder(tmp / "coco-rss", args.rss_images, args.long_side)
            run = child_build(rss_root, args.rss_images, tmp / "rss", 2, 2, args.extra)
            print(f"\npeak RSS per process, {run['rows']}-pair build of {args.rss_images} images, tasks=2 workers=2 "
                  f"({run['wall']:.0f} s wall):")  # fmt: skip
            for pid, (peak, name) in sorted(run["peaks"].items(), key=lambda kv: -kv[1][0]):
                print(f"  {peak / 2**20:7.0f} MiB  pid {pid:<8} {name}")


def report(args, runs: dict[str, list[dict]], load_before, load_after) -> None:
    runs = {mode: rs for mode, rs in runs.items() if rs}
    if not runs:  # --rounds 0: only the peak-RSS build
        return
    rows = {run["rows"] for rs in runs.values() for run in rs}
    print(f"\nbuild_throughput: {args.images} images, {'/'.join(map(str, sorted(rows)))} pairs; {args.rounds} interleaved "
          f"rounds; median [min-max]; {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; overrides: {' '.join(args.extra) or 'none'}")  # fmt: skip
    print(f"| {'mode':<28} | {'CPU s':>18} | {'wall s':>18} | {'pairs/s (wall)':>14} |")
    print(f"|{'-' * 30}|{'-' * 20}|{'-' * 20}|{'-' * 16}|")
    labels = {"floor": "floor (the writer's work)", "build1": f"build, {args.tasks} task(s), 1 worker",
              "build2": f"build, {max(2, args.tasks)} tasks, 2 workers"}  # fmt: skip
    for mode, rs in runs.items():
        per_s = statistics.median(r["rows"] / r["wall"] for r in rs)
        print(f"| {labels[mode]:<28} | {spread([r['cpu'] for r in rs]):>18} | {spread([r['wall'] for r in rs]):>18} | "
              f"{per_s:>14.1f} |")  # fmt: skip
    if "floor" in runs and "build1" in runs:
        cpu = [b["cpu"] / f["cpu"] for b, f in zip(runs["build1"], runs["floor"], strict=True)]
        wall = [b["wall"] / f["wall"] for b, f in zip(runs["build1"], runs["floor"], strict=True)]
        mark = "met" if statistics.median(cpu) <= TARGET_FLOOR else "NOT met"
        print(f"build (1 worker) / floor: CPU {spread(cpu)}x (target <= {TARGET_FLOOR}x: {mark}); wall {spread(wall)}x")
    if "build1" in runs and "build2" in runs:
        speed = [a["wall"] / b["wall"] for a, b in zip(runs["build1"], runs["build2"], strict=True)]
        cpu = [b["cpu"] / a["cpu"] for a, b in zip(runs["build1"], runs["build2"], strict=True)]
        mark = "met" if statistics.median(speed) >= TARGET_SPEEDUP else "NOT met"
        print(f"2 workers vs 1: speed-up (wall) {spread(speed)}x (target >= {TARGET_SPEEDUP}x: {mark}); CPU spent "
              f"{spread(cpu)}x; workers started by {runs['build2'][0]['start']}")  # fmt: skip
        # A worker's stage and encoding threads already use more than one core: 2 workers can only be as much
        # faster as the cores left allow (CPU / wall of one worker = the cores it keeps busy).
        cores = statistics.median(a["cpu"] / a["wall"] for a in runs["build1"])
        print(f"1 worker keeps {cores:.2f} cores busy (CPU / wall): on {os.cpu_count()} idle CPUs 2 workers can be at most "
              f"{min(2.0, (os.cpu_count() or 1) / cores):.2f}x faster")  # fmt: skip
    for mode in ("build1", "build2"):
        if mode in runs:
            r = runs[mode][0]
            n = r["rows"]
            other = r["output_bytes"] - r["original_bytes"] - r["rejected_bytes"]
            print(f"{labels[mode]}: {r['output_bytes'] / n / 1e3:.1f} KB per pair (originals {r['original_bytes'] / n / 1e3:.1f}, "
                  f"m' {r['rejected_bytes'] / n / 1e3:.1f}, the rest {other / n / 1e3:.1f}); output {r['output_bytes'] / 2**20:.1f} MiB, "
                  f"peak disk {r['peak_disk'] / 2**20:.1f} MiB = {r['peak_disk'] / max(r['output_bytes'], 1):.2f}x the output")  # fmt: skip
            o = r["outside_mask"]
            print(f"{labels[mode]}: m' outside the key mask: {o['changed']} of {o['outside']} pixels differ from the original "
                  f"({100 * o['changed'] / max(o['outside'], 1):.2f}%, mean largest channel difference "
                  f"{o['abs_diff'] / max(o['changed'], 1):.2f} levels), {o['beyond_blocks']} of them beyond the mask's 16 px "
                  f"blocks and a 2 px band")  # fmt: skip


if __name__ == "__main__":
    main()
