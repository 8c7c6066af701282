"""What each `output.image_format` does to m': bytes, encoding CPU, pixels changed outside the key mask, and how
much of the key object's appearance the stored negative keeps.

    python -m benchmarks.m_prime_encoding [--limit 40] [--rounds 3]

Model-free, on the bundled sample: the default build (`coco`, lossless m') gives each row's original file bytes,
its m' pixels and its key mask. Each round encodes every row's m' with each format, in an order rotated per round
(CPU time of one thread is the verdict; the per-row medians over rounds are summed). Then, per format, on the
decoded m':
  * bytes: summed over the rows, and as a ratio to lossless WebP (the default);
  * outside the mask: the share of its pixels whose value differs from the original, and their mean largest
    channel difference; and how many lie beyond the mask's 16 px blocks and a 2 px band (0 for every format);
  * appearance kept: the correlation of m and m' inside the mask after a 1, 2 and 4 px blur
    (`negative_evidence.appearance_kept`), mean over the distinct key masks: what a detector or a vision encoder
    can still see of the object (lower is a stronger negative). Lossless formats keep the build's m' exactly.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
BLURS = (1.0, 2.0, 4.0)
FORMATS = ("webp", "png", "jpeg_blocks")


def rows_of_default_build(limit: int, out_dir: Path) -> list[dict]:
    """(id, original bytes or None, m, m', mask) of every row of the default build of the bundled sample."""
    import pyarrow.parquet as pq

    from mfpo_data.config import load_recipe
    from mfpo_data.imaging import decode_image, rle_decode
    from mfpo_data.pipeline.build import build_dataset

    layout = build_dataset(load_recipe("coco", [f"source.limit={limit}", "output.progress=false", f"output.dir={out_dir}"]))
    rows = []
    for shard in layout.final_shards():
        for row in pq.read_table(shard).to_pylist():
            data = row["images"][0]["bytes"]
            (m, as_is), mp = decode_image(data), decode_image(row["rejected_images"][0]["bytes"])[0]
            rows.append({"id": row["id"], "original_bytes": data if as_is else None, "m": m, "m_prime": mp,
                         "mask": rle_decode(row["mask"]) if row["mask"] else None, "image_id": row["image_id"]})  # fmt: skip
    return rows


def encoders() -> dict:
    from mfpo_data.schema import Sample
    from mfpo_data.stages.s7_writer import ImageEncoder

    def run(image_format: str):
        encoder = ImageEncoder(image_format)

        def encode(row: dict) -> bytes:
            sample = Sample(row["id"], "coco", row["image_id"], "caption", "q", "a", "b", image=row["m"],
                            image_bytes=row["original_bytes"], rejected_image=row["m_prime"])  # fmt: skip
            return encoder.perturbed(sample)[0]

        return encode

    return {f: run(f) for f in FORMATS}


def measure(rows: list[dict], rounds: int = 1) -> dict[str, dict]:
    """Per format: bytes (summed), CPU ms per m' (per-row medians over interleaved rounds, summed / rows), the
    summed `outside_mask` counts over the rows with a mask, and the mean appearance kept per blur over the
    distinct key masks."""
    import numpy as np

    from benchmarks.negative_evidence import appearance_kept
    from mfpo_data.imaging import decode_image
    from mfpo_data.jpeg_blocks import outside_mask

    encode = encoders()
    cpu = {f: [[] for _ in rows] for f in FORMATS}
    data: dict[str, list[bytes]] = {}
    for r in range(rounds):
        order = FORMATS[r % len(FORMATS):] + FORMATS[: r % len(FORMATS)]
        for i, row in enumerate(rows):
            for f in order:
                t = time.process_time()
                out = encode[f](row)
                cpu[f][i].append(time.process_time() - t)
                if r == 0:
                    data.setdefault(f, []).append(out)
    regions, seen = set(), set()
    for i, row in enumerate(rows):
        key = (row["image_id"], None if row["mask"] is None else row["mask"].tobytes())
        if row["mask"] is not None and key not in seen:
            seen.add(key)
            regions.add(i)
    result = {}
    for f in FORMATS:
        total = {"outside": 0, "changed": 0, "abs_diff": 0, "beyond_blocks": 0}
        kept = {b: [] for b in BLURS}
        for i, row in enumerate(rows):
            if row["mask"] is None:
                continue
            decoded = decode_image(data[f][i])[0]
            part = outside_mask(row["m"], decoded, row["mask"])
            total = {k: total[k] + part[k] for k in total}
            if i in regions:
                for b in BLURS:
                    value = appearance_kept(row["m"], decoded, row["mask"], blur=b)
                    if value is not None:
                        kept[b].append(value)
        result[f] = {"bytes": sum(map(len, data[f])), "cpu_ms": 1e3 * sum(statistics.median(c) for c in cpu[f]) / len(rows),
                     "outside": total, "kept": {b: float(np.mean(v)) for b, v in kept.items()}, "masks": len(regions)}  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=40, help="source items of the bundled sample")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of encoding")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)
    load_before = os.getloadavg()
    rows = rows_of_default_build(args.limit, Path(tempfile.mkdtemp(prefix="mfpo-bench-")) / "build")
    result = measure(rows, args.rounds)
    print(f"m_prime_encoding: bundled sample, {len(rows)} rows (source.limit={args.limit}), {result['webp']['masks']} "
          f"distinct key masks; {args.rounds} interleaved rounds; one thread; load average (1 min) {load_before[0]:.2f} "
          f"before, {os.getloadavg()[0]:.2f} after")  # fmt: skip
    header = ["format", "KB per m'", "vs webp", "CPU ms per m'", "vs webp", "outside mask changed", "mean levels",
              "beyond blocks"] + [f"appearance kept {b:g} px" for b in BLURS]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    web = result["webp"]
    for f, r in result.items():
        o = r["outside"]
        cells = [f, f"{r['bytes'] / len(rows) / 1e3:.1f}", f"{r['bytes'] / web['bytes']:.2f}x", f"{r['cpu_ms']:.1f}",
                 f"{r['cpu_ms'] / web['cpu_ms']:.2f}x", f"{100 * o['changed'] / max(o['outside'], 1):.2f}%",
                 f"{o['abs_diff'] / max(o['changed'], 1):.2f}", str(o["beyond_blocks"])]  # fmt: skip
        print("| " + " | ".join(cells + [f"{r['kept'][b]:.3f}" for b in BLURS]) + " |")


if __name__ == "__main__":
    main()
