"""Generation throughput of `mfpo-eval run`: batched greedy decoding against batch size 1, and the probes' cost per row.

    python -m benchmarks.eval_throughput [--items 48] [--batch-sizes 4,8,16] [--rounds 3] [--max-new-tokens 16]
                                         [--image-size 64] [--hidden 128] [--layers 4] [--threads 1] [--device auto]

The verdict is CPU time (of the whole process, every thread counted, with `--threads 1` torch thread), which stays
within a few percent between rounds on a shared machine; wall time is printed beside it as information.

Same tiny random LLaVA (fixed seed; `mfpo_train.tiny.build_tiny_llava` with the sizes given), same items: the
bundled COCO sample's 15 images, each asked POPE-style questions about different objects (prompts of different
lengths) and the description prompt, cycled to `--items` (so each image is asked about about `items / 15` times, as
POPE asks several questions per image). Two ways of generating them, at each batch size:

- `run`: `mfpo_data.backends.vlm.generate_answers`, what `mfpo-eval run` calls (chat template, image loading and
  processing, left padding, `model.generate` greedy, answers written to a file).
- `generate`: `model.generate` alone on batches encoded beforehand (untimed): the ceiling `run` can reach.

A random model never emits EOS, so every item decodes exactly `max_new_tokens` tokens: batching is measured without
the waste of finished rows that a real model's early EOS causes. Rounds are interleaved: each round times every
(way, batch size) once, in an order rotated every round; the table gives the median per-round ratio of batch size
1's CPU time to each batch size's. Answers of every batch size are checked against batch size 1's (greedy: they
must be equal). Target: `run` at the largest batch size >= 4x batch size 1 in CPU time.

Probes: `mfpo_train.eval.probes.run_probes` over synthetic rows (`mfpo_train.synthetic`, 40x56 images resized by the
processor) at probe batch sizes 1 and 4: CPU seconds per row (6 sequence log-probs: y_w and y_l on m, m' and
noise), and the ratio of that to one generated item at the largest batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OBJECTS = ("person", "dog", "chair", "traffic light", "cup", "potted plant", "bicycle", "tennis racket")
DESCRIBE = "Please describe this image in detail."
TARGET = 4.0  # run at the largest batch size, x batch size 1, CPU time


def _items(n: int) -> list[dict]:
    from mfpo_data.scorers.coco import bundled_coco_root, read_coco

    coco = read_coco(None, "sample", captions=False)
    folder = bundled_coco_root() / "sample"
    images = [folder / f for _, f in sorted(coco.images.items())]
    prompts = [f"Is there a {o} in the image?" for o in OBJECTS] + [DESCRIBE]
    return [{"key": str(k), "image": images[k % len(images)], "prompt": prompts[(k * 7 + k // len(images)) % len(prompts)]}
            for k in range(n)]


def _model(args):
    import torch

    from mfpo_data.backends.vlm import resolve_device
    from mfpo_train.tiny import build_tiny_llava

    model, processor = build_tiny_llava(image_size=args.image_size, hidden_size=args.hidden, num_layers=args.layers)
    device = resolve_device(args.device)
    return model.to(device).eval().requires_grad_(False), processor, device


def _encoded(model, processor, items: list[dict], bs: int) -> list[dict]:
    """The batches `model.generate` gets, encoded the way the runner encodes them (chat template, left padding)."""
    from PIL import Image

    from mfpo_data.backends.vlm import render_prompt, to_model

    processor.tokenizer.padding_side = "left"
    try:
        out = []
        for start in range(0, len(items), bs):
            batch = items[start:start + bs]
            images = []
            for it in batch:
                with Image.open(it["image"]) as f:
                    images.append([f.convert("RGB")])
            enc = processor(text=[render_prompt(processor, it["prompt"]) for it in batch], images=images,
                            padding=True, return_tensors="pt")
            out.append(to_model(enc, model))
        return out
    finally:
        processor.tokenizer.padding_side = "right"


class _Clock:
    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=48)
    p.add_argument("--batch-sizes", default="4,8,16")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--probe-rows", type=int, default=12)
    p.add_argument("--skip-probes", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = p.parse_args()

    import torch

    from mfpo_data.backends.vlm import generate_answers

    torch.set_num_threads(args.threads)
    model, processor, device = _model(args)
    items = _items(args.items)
    sizes = [1] + [int(b) for b in args.batch_sizes.split(",") if int(b) > 1]
    tmp = Path(tempfile.mkdtemp())
    runs = iter(range(10**9))

    def run(bs):  # what mfpo-eval run does for one part: a fresh answers file each time
        return [a["answer"] for a in generate_answers(model, processor, items, tmp / f"{next(runs)}.answers.jsonl",
                                                      batch_size=bs, max_new_tokens=args.max_new_tokens,
                                                      progress=False)]

    encoded = {bs: _encoded(model, processor, items, bs) for bs in sizes}
    pad = processor.tokenizer.pad_token_id

    def generate(bs):
        with torch.inference_mode():
            for enc in encoded[bs]:
                model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=args.max_new_tokens,
                               pad_token_id=pad, temperature=None, top_p=None, top_k=None)

    load_before = os.getloadavg()
    run(sizes[-1])  # warm-up
    generate(sizes[-1])
    cases = [(way, bs) for bs in sizes for way in ("run", "generate")]
    cpu = {c: [] for c in cases}
    wall = {c: [] for c in cases}
    answers = {}
    for r in range(args.rounds):
        for way, bs in cases[r % len(cases):] + cases[: r % len(cases)]:
            with _Clock() as clock:
                out = run(bs) if way == "run" else generate(bs)
            cpu[way, bs].append(clock.cpu)
            wall[way, bs].append(clock.wall)
            if way == "run":
                answers[bs] = out
    load_after = os.getloadavg()
    same = {bs: sum(a == b for a, b in zip(answers[bs], answers[1], strict=True)) for bs in sizes}

    n = len(items)
    print(f"tiny LLaVA: hidden {args.hidden}, {args.layers} layers, {args.image_size} px "
          f"({(args.image_size // 8) ** 2} image tokens), {device}, {torch.get_num_threads()} torch threads; "
          f"{n} items ({len({str(it['image']) for it in items})} images) x {args.max_new_tokens} new tokens, "
          f"{args.rounds} interleaved rounds; torch {torch.__version__}")
    print("| batch size | run: CPU ms/item | run: x batch 1, CPU (median, min-max) | run: x batch 1, wall | "
          "generate alone: CPU ms/item | generate alone: x batch 1, CPU | answers equal to batch 1 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")

    def ratios(times, bs, way):
        return [times[way, 1][r] / times[way, bs][r] for r in range(args.rounds)]

    result = {"items": n, "rounds": args.rounds, "threads": torch.get_num_threads(), "generation": {}}
    for bs in sizes:
        run_cpu, run_wall, gen_cpu = ratios(cpu, bs, "run"), ratios(wall, bs, "run"), ratios(cpu, bs, "generate")
        ms, gen_ms = (1000 * statistics.median(cpu[way, bs]) / n for way in ("run", "generate"))
        print(f"| {bs} | {ms:.1f} | {statistics.median(run_cpu):.2f}x ({min(run_cpu):.2f}-{max(run_cpu):.2f}) | "
              f"{statistics.median(run_wall):.2f}x | {gen_ms:.1f} | {statistics.median(gen_cpu):.2f}x | {same[bs]}/{n} |")
        result["generation"][bs] = {"run_cpu_ms_per_item": ms, "generate_cpu_ms_per_item": gen_ms,
                                    "run_cpu_ratio": statistics.median(run_cpu),
                                    "run_cpu_ratio_min": min(run_cpu), "run_cpu_ratio_max": max(run_cpu),
                                    "run_wall_ratio": statistics.median(run_wall),
                                    "generate_cpu_ratio": statistics.median(gen_cpu), "equal_answers": same[bs]}
    top = result["generation"][sizes[-1]]
    met = top["run_cpu_ratio"] >= TARGET and top["equal_answers"] == n
    print(f"target: run at batch {sizes[-1]} >= {TARGET}x batch 1 in CPU time, answers equal: "
          f"{top['run_cpu_ratio']:.2f}x, {'met' if met else 'NOT met'}")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; cores: {os.cpu_count()}")
    result.update(target=TARGET, met=met, load_before=load_before, load_after=load_after)

    if not args.skip_probes:
        from mfpo_train.eval.probes import run_probes
        from mfpo_train.synthetic import synthetic_rows

        rows = synthetic_rows(args.probe_rows)
        run_probes(model, processor, rows[:2], batch_size=2, progress=False)  # warm-up
        probe_s = {}
        for pbs in (1, 4):
            times = []
            for _ in range(args.rounds):
                with _Clock() as clock:
                    run_probes(model, processor, rows, batch_size=pbs, progress=False)
                times.append(clock.cpu)
            probe_s[pbs] = statistics.median(times) / len(rows)
        per_item = statistics.median(cpu["run", sizes[-1]]) / n
        print(f"\nprobes ({len(rows)} rows, 6 sequences each), CPU time: "
              + ", ".join(f"batch {b}: {s * 1000:.0f} ms/row" for b, s in probe_s.items())
              + f"; a row at batch 4 costs {probe_s[4] / per_item:.2f}x one generated item at batch {sizes[-1]}")
        result["probes"] = {"cpu_s_per_row": probe_s, "row_over_generated_item": probe_s[4] / per_item}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
