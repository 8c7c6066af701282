"""Time one training step of MFPO (online reference, precomputed reference) against TRL's sigmoid DPOTrainer.

Same tiny random LLaVA, same LoRA, same rows, same pairs per step. Each variant runs in its own
subprocess so its peak RSS (resource.ru_maxrss) is its own. MFPO's step time includes collation (image
processing + tokenisation), forward(s), backward and the optimizer step; TRL's is timed with Trainer
callbacks (on_step_begin -> on_step_end), which leave its batch fetch and collation out.

    python benchmarks/train_step.py [--steps 10] [--batch 4] [--image-size 64] [--hidden 128] [--layers 4]

MFPO forwards 3 sequences per pair (y_w|m, y_l|m, y_w|m') where DPO forwards 2, so the online target
is <= 1.5x TRL's step; with precomputed reference log-probs (no reference forward) <= 1.1x.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _setup(args):
    import torch

    from tests.fixtures.tiny_vlm import build_tiny_llava
    from tests.train.synthetic import synthetic_rows

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model, processor = build_tiny_llava(image_size=args.image_size, hidden_size=args.hidden, num_layers=args.layers)
    rows = synthetic_rows(args.batch, size=(args.image_size * 3 // 2, args.image_size * 2))
    return model, processor, rows


def _lora():
    from mfpo_train.config import LoraConfig

    return LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"], exclude_modules=".*vision_tower.*")


def run_mfpo(args, precomputed: bool) -> dict:
    import torch

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.losses import mfpo_loss
    from mfpo_train.model import Reference, add_lora, sequence_logps, split_logps

    model, processor, rows = _setup(args)
    collator = MFPOCollator(processor, max_length=None)
    seqs = collator.sequences
    if precomputed:  # what `precompute-ref` stores: the base model's log-probs, computed once
        with torch.no_grad():
            ref = split_logps(sequence_logps(model.eval(), collator(rows)), seqs)
        for i, r in enumerate(rows):
            r.update(ref_chosen_logps=ref.chosen[i].item(), ref_rejected_logps=ref.rejected[i].item(),
                     ref_perturbed_logps=ref.perturbed[i].item())
    model = add_lora(model, _lora()).train()
    reference = Reference(model, precomputed=precomputed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batch = collator(rows)
        policy = split_logps(sequence_logps(model, batch), seqs)
        ref = reference.logps(model, batch, seqs)
        loss = mfpo_loss(policy, ref, beta=0.1).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"step_s": sorted(times[args.warmup:])[len(times[args.warmup:]) // 2], "seq_len": batch["input_ids"].shape[1]}


def run_trl(args) -> dict:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model, processor, rows = _setup(args)
    trl_rows = [{"images": r["images"], "chosen": r["chosen"], "rejected": r["rejected"],
                 "prompt": [{"role": "user", "content": [{"type": "image"}, r["prompt"][0]["content"][1]]}]}
                for r in rows]
    ds = datasets.Dataset.from_list(trl_rows * (args.warmup + args.steps))
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t0)

    lora = _lora()
    out = tempfile.mkdtemp()
    cfg = DPOConfig(output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
                    use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no", logging_steps=1000,
                    learning_rate=1e-4, beta=0.1, loss_type=["sigmoid"], max_length=None, dataloader_num_workers=0)
    peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                      exclude_modules=lora.exclude_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=processor, peft_config=peft,
                         callbacks=[Timer()])
    trainer.train()
    # transformers' Trainer fetches (and so collates) the batch before on_step_begin: TRL's time excludes
    # collation, MFPO's includes it, so the ratios below are conservative for MFPO.
    return {"step_s": sorted(times[args.warmup:])[len(times[args.warmup:]) // 2]}


def child(args) -> None:
    result = {"mfpo_online": lambda: run_mfpo(args, False), "mfpo_precomputed": lambda: run_mfpo(args, True),
              "trl_dpo_sigmoid": lambda: run_trl(args)}[args.variant]()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="preference pairs per step")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        return child(args)
    results = {}
    for variant in ("trl_dpo_sigmoid", "mfpo_online", "mfpo_precomputed"):
        cmd = [sys.executable, __file__, "--variant", variant] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "variant"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results[variant] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    import torch
    import transformers
    import trl

    trl_r = results["trl_dpo_sigmoid"]
    print(f"tiny LLaVA (image {args.image_size}px, LM hidden {args.hidden} x {args.layers} layers), LoRA r8 q/v, "
          f"{args.batch} pairs/step, median of {args.steps} steps after {args.warmup} warm-up, "
          f"{args.threads} threads; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    print(f"{'variant':<20}{'step ms':>10}{'x TRL':>8}{'peak RSS MB':>14}{'x TRL':>8}")
    for name, r in results.items():
        print(f"{name:<20}{r['step_s'] * 1000:>10.1f}{r['step_s'] / trl_r['step_s']:>8.2f}"
              f"{r['peak_rss_mb']:>14.0f}{r['peak_rss_mb'] / trl_r['peak_rss_mb']:>8.2f}")
    print("targets: mfpo_online <= 1.5x, mfpo_precomputed <= 1.1x TRL's step; peak memory <= TRL's")


if __name__ == "__main__":
    main()
