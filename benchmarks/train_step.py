"""One training step of MFPO (online / precomputed reference; one forward / gradient caching) against TRL's sigmoid DPO.

    python -m benchmarks.train_step [--rounds 8] [--warmup 2] [--batch 4] [--image-size 224] [--hidden 256] [--layers 4]

Same tiny random LLaVA (same seed), same LoRA (r8, q/v of the language model), same rows, same pairs per step,
same optimizer (AdamW) and clipping, float32 and no gradient checkpointing on both sides (TRL's DPOConfig turns
both on by default; they are turned off here to match MFPO's defaults).

**Time, one process.** Batches are collated once, before timing. A step is, on both sides, the same scope:
forward(s) + loss + backward + clip + optimizer step + zero_grad, timed with `time.perf_counter` around the calls:
  * TRL: `DPOTrainer.compute_loss(model, batch)` (its concatenated policy forward and its reference forward with
    the adapters disabled) -> `accelerator.backward` -> clip -> `AdamW.step`;
  * MFPO: `gradcache.policy_logps` -> `Reference.logps` -> `mfpo_loss` -> `PolicyLogps.backward` -> clip -> step,
    i.e. what `mfpo_train.train._step` runs.
Variants are interleaved: each round times one step of every variant, in an order rotated every round, so a
burst of load from other processes hits all of them alike. Warm-up rounds are dropped. Per round, each MFPO step
is divided by TRL's step of the same round; the table gives the median ratio and its min-max over rounds.
Collation (images + tokenisation) is timed separately, the same way: TRL's `DataCollatorForVisionPreference` on
the trainer's dataset rows vs `MFPOCollator`.

**Memory, a fresh subprocess per variant.** Peak memory of a step, as the kernel counts it: after the warm-up steps,
`/proc/self/clear_refs` ("5") resets the RSS high-water mark (VmHWM) to the current RSS, `--mem-steps` steps run,
and the step's peak is VmHWM minus the RSS just before. glibc's malloc is told to serve every allocation of
64 KiB or more with mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors go back to the kernel and RSS follows the
live tensors; otherwise a freed activation stays in the heap and the next step's peak hides in it. This counts
everything a step allocates (activations, gradients, logits, temporaries), not only torch tensors, and measures
both sides in exactly the same way. (`tracemalloc` does not see torch's allocations, and torch keeps no CPU
allocator statistics.) The variant's whole-process high-water mark (VmHWM: Python, libraries, model, data) is
shown for context.

MFPO forwards 3 sequences per pair (y_w|m, y_l|m, y_w|m') where DPO forwards 2, so the issue's targets are:
online <= 1.5x TRL's step, precomputed <= 1.1x, peak memory <= TRL's. `sequence_chunks=3` (gradient caching,
one sequence block at a time) is the memory-saving mode.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = {  # name: (side, precomputed reference, sequence_chunks)
    "trl_dpo_sigmoid": ("trl", False, 1),
    "mfpo_online": ("mfpo", False, 1),
    "mfpo_precomputed": ("mfpo", True, 1),
    "mfpo_online_chunks3": ("mfpo", False, 3),
    "mfpo_precomputed_chunks3": ("mfpo", True, 3),
}


def _base(args):
    import torch

    from mfpo_train.tiny import build_tiny_llava
    from mfpo_train.synthetic import synthetic_rows

    torch.set_num_threads(args.threads)
    model, processor = build_tiny_llava(image_size=args.image_size, hidden_size=args.hidden, num_layers=args.layers)
    rows = synthetic_rows(args.batch, size=(args.image_size * 3 // 2, args.image_size * 2))
    return model, processor, rows


def _lora():
    from mfpo_train.config import LoraConfig

    return LoraConfig(r=8, alpha=16, target_modules=["q_proj", "v_proj"], exclude_modules=".*vision_tower.*")


def _optimizer(model):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return params, torch.optim.AdamW(params, lr=1e-4)


def _finish(params, opt):
    import torch

    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


class TRLSide:
    def __init__(self, args, base, processor, rows):
        import datasets
        import torch
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        trl_rows = [{"images": r["images"], "chosen": r["chosen"], "rejected": r["rejected"],
                     "prompt": [{"role": "user", "content": [{"type": "image"}, r["prompt"][0]["content"][1]]}]}
                    for r in rows]
        lora = _lora()
        cfg = DPOConfig(output_dir=args.tmp, per_device_train_batch_size=args.batch, use_cpu=not torch.cuda.is_available(),
                        report_to=[], save_strategy="no", learning_rate=1e-4, beta=0.1, loss_type=["sigmoid"],
                        max_length=None, dataloader_num_workers=0,
                        # TRL's defaults are True for both; MFPO's (model.gradient_checkpointing, mixed_precision) are off.
                        # bf16 would also put MFPO's chunk re-forwards under bf16 autocast (the accelerator is shared).
                        gradient_checkpointing=False, bf16=False)
        peft = LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules,
                          exclude_modules=lora.exclude_modules, task_type="CAUSAL_LM")
        self.trainer = DPOTrainer(model=copy.deepcopy(base), args=cfg, train_dataset=datasets.Dataset.from_list(trl_rows),
                                  processing_class=processor, peft_config=peft)
        self.model = self.trainer.model.train()
        self.examples = [self.trainer.train_dataset[i] for i in range(len(rows))]
        self.params, self.opt = _optimizer(self.model)
        self.batch = self.collate()

    def collate(self):
        fresh = [{k: copy.deepcopy(v) if k in ("prompt", "chosen", "rejected") else v for k, v in e.items()}
                 for e in self.examples]  # the collator rewrites the messages in place
        return self.trainer.data_collator(fresh)

    def step(self):
        loss = self.trainer.compute_loss(self.model, self.batch)
        self.trainer.accelerator.backward(loss)
        _finish(self.params, self.opt)


class MFPOSide:
    def __init__(self, args, base, processor, rows, precomputed: bool, chunks: int, accelerator):
        import torch

        from mfpo_train.collator import MFPOCollator
        from mfpo_train.model import Reference, add_lora, sequence_logps, split_logps

        rows = [dict(r) for r in rows]
        self.collator = MFPOCollator(processor, max_length=None)
        self.seqs = self.collator.sequences
        if precomputed:  # what `precompute-ref` stores: the base model's log-probs
            with torch.no_grad():
                ref = split_logps(sequence_logps(base.eval(), self.collator(rows)), self.seqs)
            for i, r in enumerate(rows):
                r.update(ref_chosen_logps=ref.chosen[i].item(), ref_rejected_logps=ref.rejected[i].item(),
                         ref_perturbed_logps=ref.perturbed[i].item())
        self.rows = rows
        self.model = add_lora(copy.deepcopy(base), _lora()).train()
        self.reference = Reference(self.model, precomputed=precomputed)
        self.chunks, self.accelerator = chunks, accelerator
        self.params, self.opt = _optimizer(self.model)
        self.batch = self.collate()

    def collate(self):
        return self.collator(self.rows)

    def step(self):
        from mfpo_train.gradcache import policy_logps
        from mfpo_train.losses import mfpo_loss

        policy = policy_logps(self.model, self.batch, self.seqs, chunks=self.chunks)
        ref = self.reference.logps(self.model, self.batch, self.seqs)
        out = mfpo_loss(policy.logps, ref, beta=0.1)
        policy.backward(out.loss, self.accelerator)
        _finish(self.params, self.opt)


def _make(args, names):
    import torch

    base, processor, rows = _base(args)
    sides = {}
    trl = None
    if "trl_dpo_sigmoid" in names or len(names) > 1:
        trl = TRLSide(args, base, processor, rows)
        if "trl_dpo_sigmoid" in names:
            sides["trl_dpo_sigmoid"] = trl
    if trl is not None:
        accelerator = trl.trainer.accelerator  # the same backward call on both sides
    else:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    for name in names:
        side, precomputed, chunks = VARIANTS[name]
        if side == "mfpo":
            sides[name] = MFPOSide(args, base, processor, rows, precomputed, chunks, accelerator)
    return sides


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timing(args) -> dict:
    sides = _make(args, list(VARIANTS))
    names = list(sides)
    steps = {n: [] for n in names}
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            t = _timed(sides[n].step)
            if r >= args.warmup:
                steps[n].append(t)
    collate = {n: [] for n in ("trl_dpo_sigmoid", "mfpo_online")}
    for r in range(args.warmup + args.rounds):
        for n in (list(collate) if r % 2 == 0 else list(collate)[::-1]):
            t = _timed(sides[n].collate)
            if r >= args.warmup:
                collate[n].append(t)
    seq = {n: tuple(s.batch["input_ids"].shape) for n, s in sides.items()}
    return {"steps": steps, "collate": collate, "input_ids": seq}


def memory(args) -> dict:
    sides = _make(args, [args.variant])
    side = sides[args.variant]
    for _ in range(args.warmup):
        side.step()
    setup_peak, before = _status("VmHWM"), _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    for _ in range(args.mem_steps):
        side.step()
    step_hwm = _status("VmHWM")
    # (ru_maxrss would not do: after clear_refs it is this mm's reset mark or, for a child, the parent's RSS at fork)
    return {"step_peak_mb": (step_hwm - before) / 1024, "rss_before_mb": before / 1024,
            "process_peak_mb": max(setup_peak, step_hwm) / 1024}


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(key)


def _summary(xs):
    return statistics.median(xs), min(xs), max(xs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4, help="preference pairs per step")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    import tempfile

    args.tmp = args.tmp or tempfile.mkdtemp()
    if args.variant:
        print("RESULT " + json.dumps(memory(args)))
        return
    load_before = os.getloadavg()
    t = timing(args)
    mem = {}
    if not args.skip_memory:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
        for name in VARIANTS:
            cmd = [sys.executable, "-m", __spec__.name, "--variant", name] + [
                f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("variant", "skip_memory") and v is not None]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            mem[name] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    load_after = os.getloadavg()

    import torch
    import transformers
    import trl

    print(f"tiny LLaVA: image {args.image_size}px, LM hidden {args.hidden} x {args.layers} layers; LoRA r8 q/v; "
          f"{args.batch} pairs/step; {args.rounds} interleaved rounds after {args.warmup} warm-up; {args.threads} "
          f"threads; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    print("input_ids per step: " + ", ".join(f"{n} {s}" for n, s in t["input_ids"].items()))
    trl_steps = t["steps"]["trl_dpo_sigmoid"]
    print(f"{'variant':<26}{'step ms (med)':>14}{'x TRL med [min-max]':>22}{'step peak MB':>14}{'x TRL':>7}"
          f"{'process MB':>12}")
    for name, times in t["steps"].items():
        ratios = [a / b for a, b in zip(times, trl_steps, strict=True)]
        med, lo, hi = _summary(ratios)
        line = f"{name:<26}{statistics.median(times) * 1000:>14.0f}{f'{med:.2f} [{lo:.2f}-{hi:.2f}]':>22}"
        if mem:
            m, m0 = mem[name], mem["trl_dpo_sigmoid"]
            line += f"{m['step_peak_mb']:>14.0f}{m['step_peak_mb'] / m0['step_peak_mb']:>7.2f}{m['process_peak_mb']:>12.0f}"
        print(line)
    c = t["collate"]
    med, lo, hi = _summary([a / b for a, b in zip(c["mfpo_online"], c["trl_dpo_sigmoid"], strict=True)])
    print(f"collation per batch: TRL {statistics.median(c['trl_dpo_sigmoid']) * 1000:.0f} ms, MFPO "
          f"{statistics.median(c['mfpo_online']) * 1000:.0f} ms ({med:.2f}x [{lo:.2f}-{hi:.2f}]); not in the step times")
    print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; cores: {os.cpu_count()}")
    print("targets: mfpo_online <= 1.5x, mfpo_precomputed <= 1.1x TRL's step; peak memory <= TRL's")


if __name__ == "__main__":
    main()
