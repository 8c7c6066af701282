"""Generation throughput of `mfpo-eval run`: batched greedy decoding against batch size 1; the probes' cost per row.

    python -m benchmarks.eval_throughput [--items 32] [--batch-sizes 4,8,16] [--rounds 3] [--max-new-tokens 16]
                                         [--image-size 64] [--hidden 128] [--layers 4] [--device auto]

Same tiny random LLaVA (fixed seed; `mfpo_train.tiny.build_tiny_llava` with the sizes given), same items (the bundled
COCO sample's images, each asked POPE-style and description prompts, cycled to `--items`), same `max_new_tokens`,
through `mfpo_data.backends.vlm.generate_answers` (chat template, left padding, `model.generate` greedy). A random
model never emits EOS, so every item decodes exactly `max_new_tokens` tokens: batching is measured without the
waste of finished rows that a real model's early EOS causes in a batch (sort by prompt length does not help there;
answer lengths vary). Rounds are interleaved: each round times every batch size once, in an order rotated every
round; the table gives items/s (median over rounds) and the median per-round ratio to batch size 1. Answers of every
batch size are checked against batch size 1's (greedy: they must be equal).

Probes: `mfpo_train.eval.probes.run_probes` over synthetic rows (`mfpo_train.synthetic`, 40x56 images resized by the
processor) at probe batch sizes 1 and 4: seconds per row (6 sequence log-probs: y_w and y_l on m, m' and noise), and
the ratio of that to one generated item at the largest batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ("Is there a person in the image?", "Please describe this image in detail.")


def _items(n: int) -> list[dict]:
    from mfpo_data.scorers.coco import bundled_coco_root, read_coco

    coco = read_coco(None, "sample", captions=False)
    folder = bundled_coco_root() / "sample"
    base = [(i, folder / f) for i, f in sorted(coco.images.items())]
    return [{"key": str(k), "image": base[k % len(base)][1], "prompt": PROMPTS[(k // len(base)) % len(PROMPTS)]}
            for k in range(n)]


def _model(args):
    import torch

    from mfpo_data.backends.vlm import resolve_device
    from mfpo_train.tiny import build_tiny_llava

    model, processor = build_tiny_llava(image_size=args.image_size, hidden_size=args.hidden, num_layers=args.layers)
    device = resolve_device(args.device)
    return model.to(device).eval().requires_grad_(False), processor, device, torch


def _time(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=32)
    p.add_argument("--batch-sizes", default="4,8,16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--probe-rows", type=int, default=12)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = p.parse_args()

    from mfpo_train.eval.probes import run_probes
    from mfpo_data.backends.vlm import generate_answers
    from mfpo_train.synthetic import synthetic_rows

    model, processor, device, torch = _model(args)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    items = _items(args.items)
    sizes = [1] + [int(b) for b in args.batch_sizes.split(",") if int(b) > 1]

    def generate(bs):
        return generate_answers(model, processor, items, batch_size=bs, max_new_tokens=args.max_new_tokens,
                                progress=False)

    generate(sizes[-1])  # warm-up
    seconds = {bs: [] for bs in sizes}
    answers = {}
    for r in range(args.rounds):
        order = sizes[r % len(sizes):] + sizes[: r % len(sizes)]
        for bs in order:
            t, out = _time(lambda bs=bs: generate(bs))
            seconds[bs].append(t)
            answers[bs] = [a["answer"] for a in out]
    same = {bs: sum(a == b for a, b in zip(answers[bs], answers[1], strict=True)) for bs in sizes}

    rows = synthetic_rows(args.probe_rows)
    run_probes(model, processor, rows[:2], batch_size=2, progress=False)  # warm-up
    probe_s = {}
    for pbs in (1, 4):
        ts = [_time(lambda pbs=pbs: run_probes(model, processor, rows, batch_size=pbs, progress=False))[0]
              for _ in range(args.rounds)]
        probe_s[pbs] = statistics.median(ts) / len(rows)

    n = len(items)
    print(f"tiny LLaVA: hidden {args.hidden}, {args.layers} layers, {args.image_size} px "
          f"({(args.image_size // 8) ** 2} image tokens), {device}, {torch.get_num_threads()} threads; "
          f"{n} items x {args.max_new_tokens} new tokens, {args.rounds} rounds")
    print("| batch size | items/s | ratio to batch 1 (median, min-max) | answers equal to batch 1 |")
    print("|---:|---:|---:|---:|")
    result = {"generation": {}, "probes": {}}
    for bs in sizes:
        ratios = [seconds[1][r] / seconds[bs][r] for r in range(args.rounds)]
        ips = n / statistics.median(seconds[bs])
        print(f"| {bs} | {ips:.2f} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{same[bs]}/{n} |")
        result["generation"][bs] = {"items_per_s": ips, "ratio_median": statistics.median(ratios),
                                    "ratio_min": min(ratios), "ratio_max": max(ratios), "equal_answers": same[bs]}
    per_item = statistics.median(seconds[sizes[-1]]) / n
    print(f"\nprobes ({len(rows)} rows, 6 sequences each): "
          + ", ".join(f"batch {b}: {s * 1000:.0f} ms/row" for b, s in probe_s.items())
          + f"; a row at batch 4 costs {probe_s[4] / per_item:.2f}x one generated item at batch {sizes[-1]}")
    result["probes"] = {"s_per_row": probe_s, "row_over_generated_item": probe_s[4] / per_item}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
