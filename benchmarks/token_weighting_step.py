"""Training step time with and without `loss.token_weighting: image_reliance`, on a tiny LLaVA.

Builds a few rows of the bundled sample with the `reliance` stage, then times one optimizer step's work
(policy log-probs, reference log-probs with the adapters disabled, the MFPO loss, backward) for: uniform
weights with the shared prefix (the default), uniform weights one row per sequence, and token weighting
(which scores one row per sequence). CPU time, one torch thread, the three interleaved over rounds.

    python -m benchmarks.token_weighting_step [--rounds 5] [--rows 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=4)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mfpo_data.pipeline.build import build_dataset
    from mfpo_train.collator import MFPOCollator
    from mfpo_train.config import LoraConfig
    from mfpo_train.data import load_preference_dataset
    from mfpo_train.gradcache import policy_logps
    from mfpo_train.losses import mfpo_loss
    from mfpo_train.model import Reference, add_lora
    from mfpo_train.tiny import make_tiny_llava

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp())
    model_path = make_tiny_llava(root / "llava")
    build = build_dataset("coco", [f"reliance={{backend: vlm, model_id: {model_path}, device: cpu}}",
                                   f"source.limit={args.rows}", "output.progress=false"], root / "build").root  # fmt: skip
    ds = load_preference_dataset(build)
    rows = [ds[i] for i in range(min(args.rows, len(ds)))]
    processor = AutoProcessor.from_pretrained(model_path)
    model = add_lora(AutoModelForImageTextToText.from_pretrained(model_path), LoraConfig(target_modules="all-linear"))
    sequences = ("chosen", "rejected", "perturbed")
    settings = {"uniform, shared prefix (default)": (False, True), "uniform, one row per sequence": (False, False),
                "token_weighting: image_reliance": (True, False)}  # fmt: skip
    batches = {name: MFPOCollator(processor, sequences=sequences, token_weighting=w)(rows) for name, (w, _) in settings.items()}

    class _Acc:  # the accelerator calls PolicyLogps.backward makes
        @staticmethod
        def backward(loss):
            loss.backward()

    def step(name):
        weighted, shared = settings[name]
        batch = batches[name]
        policy = policy_logps(model, batch, sequences, shared_prefix=shared)
        ref = Reference(model, shared_prefix=shared).logps(model, batch, sequences)
        out = mfpo_loss(policy.logps, ref, beta=0.1)
        policy.backward(out.loss, _Acc)
        model.zero_grad(set_to_none=True)

    for name in settings:  # warm up
        step(name)
    cpu = {name: [] for name in settings}
    wall = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name in settings:
            c, w = time.process_time(), time.perf_counter()
            step(name)
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    base = sorted(cpu["uniform, shared prefix (default)"])[args.rounds // 2]
    print(f"tiny LLaVA + LoRA, {len(rows)} pairs per step, {args.rounds} interleaved rounds, 1 torch thread; median per step")
    for name in settings:
        c, w = sorted(cpu[name])[args.rounds // 2], sorted(wall[name])[args.rounds // 2]
        print(f"{name}: {c * 1000:.0f} ms CPU ({c / base:.2f}x), {w * 1000:.0f} ms wall")


if __name__ == "__main__":
    main()
