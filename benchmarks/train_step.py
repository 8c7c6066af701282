"""One training step of MFPO (online / precomputed reference; scoring paths; gradient caching) against TRL's sigmoid DPO.

    python -m benchmarks.train_step [--shapes short,long] [--rounds 6] [--warmup 2] [--batch 4] [--image-size 224]
    python -m benchmarks.train_step --llava-7b      # on a GPU: random LLaVA-1.5-7B-shaped model, bf16, CUDA

Same random LLaVA (same seed), same LoRA (r8, q/v of the language model), same rows, same pairs per step,
same optimizer (AdamW) and clipping, no gradient checkpointing and no autocast on both sides (TRL's DPOConfig turns
both on by default; they are turned off here to match MFPO's defaults). Default model: tiny LLaVA, float32, CPU
(784 image tokens at 224 px). `--llava-7b`: CLIP ViT-L/14-336 (576 image tokens) + a Llama-2-7B-shaped language
model, random weights in bfloat16 on CUDA (nothing is downloaded).

Shapes: `short` is the synthetic rows' answers (about 10 tokens); `long` gives every chosen and rejected answer
about `--long-tokens` tokens (200 by default, as RLHF-V's descriptions).

Variants (`--variants`), each against TRL's `DPOTrainer` step in the same run:
  * mfpo_online: the default: shared prefix (y_w|m and y_l|m as one packed row, the image encoded once) and the
    chunked LM head, reference = the same model with adapters disabled, scored the same way;
  * mfpo_precomputed: the same, with reference log-probs precomputed (`mfpo-train precompute-ref`);
  * mfpo_online_packed: the shared prefix as packed `[prompt, y_w, y_l]` rows (what gradient checkpointing uses);
  * mfpo_online_today: `train.shared_prefix=false, train.logps_chunk_size=0`: one row per sequence, logits from
    the first answer position (the scoring before the fast paths);
  * mfpo_online_chunks3: gradient caching (`train.sequence_chunks=3`), one row per sequence, chunked LM head;
  * mfpo_online_reencode: mfpo_online with the reference forward encoding the images again instead of taking the
    policy forward's image features (`Reference(share_image_features=False)`): the gain of that reuse;
  * mfpo_online_rows: the shared-prefix fallback: one row per sequence with the chunked LM head, what a family
    the shared prefix does not cover runs (Gemma 3, InternVL's tiles; mfpo_train/shared_prefix.py). The report
    gives its CPU time over mfpo_online's: the fallback's cost.
TRL 1.16 always scores with its own chunked ("fused") LM head, so both sides hold no full logits.

**The token floor F** of a shape: the LM tokens MFPO's default scoring forwards per step (y_w|m and y_w|m' rows,
plus the rejected answers after the shared prompt) / the LM tokens TRL's step forwards (its y_w|m and y_l|m rows),
both counted from the collated batches (non-padding, image tokens included). MFPO scores three sequences where DPO
scores two, so a step at F x TRL's is as cheap per token as TRL's. F is printed beside every ratio, and the
targets are relative to it.

**Time, one process.** Batches are collated once, before timing. A step is, on both sides, the same scope:
forward(s) + loss + backward + clip + optimizer step + zero_grad, timed with `time.perf_counter` around the calls
(after `torch.cuda.synchronize` on a GPU):
  * TRL: `DPOTrainer.compute_loss(model, batch)` (its concatenated policy forward and its reference forward with
    the adapters disabled) -> `accelerator.backward` -> clip -> `AdamW.step`;
  * MFPO: `gradcache.policy_logps` -> `Reference.logps` -> `mfpo_loss` -> `PolicyLogps.backward` -> clip -> step,
    i.e. what `mfpo_train.train._step` runs.
Each step's CPU time (`time.process_time`: the process's user + system time, one torch thread) is the verdict on
a CPU: unlike wall time it does not grow when other processes take the cores. Wall time (`time.perf_counter`)
is shown beside it, and is the verdict on a GPU (after `torch.cuda.synchronize`). Variants are interleaved: each
round times one step of every variant, in an order rotated every round, so a change of load hits all of them
alike. Warm-up rounds are dropped. Per round, each MFPO step is divided by TRL's step of the same round; the table
gives the median ratio and its min-max over rounds, and the median / F.
Tokens/s counts each side's own non-padding input tokens (MFPO's packed rows count the shared prefix once).

**Memory.** CPU, a fresh subprocess per variant: peak memory of a step, as the kernel counts it: after the warm-up
steps, `/proc/self/clear_refs` ("5") resets the RSS high-water mark (VmHWM) to the current RSS, `--mem-steps` steps
run, and the step's peak is VmHWM minus the RSS just before. glibc's malloc is told to serve every allocation of
64 KiB or more with mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors go back to the kernel and RSS follows the
live tensors. This counts everything a step allocates, not only torch tensors, and measures both sides in exactly
the same way. The variant's whole-process high-water mark (VmHWM) is shown for context. GPU, in the timing
process, each side in turn: `torch.cuda.max_memory_allocated` minus the allocated memory before its steps (and the
process's peak). Each side builds its own copy of the model from the same seed (nothing is deep-copied), so a
process holds one model per variant it times: `--llava-7b` runs TRL and one MFPO variant per process (two 7B
copies in bf16, about 28 GB, fit an 80 GB card with the steps' activations).

Targets, relative to F: mfpo_online <= 1.05 F x TRL's step time and <= 1.0 F x its peak step memory, on both
shapes; mfpo_precomputed <= 0.8 F x TRL's step time. Each is printed met / not met.
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

FAST = dict(shared_prefix=True, chunk_size=1024)
TODAY = dict(shared_prefix=False, chunk_size=0)
VARIANTS = {  # name: (side, precomputed reference, sequence_chunks, scoring)
    "trl_dpo_sigmoid": ("trl", False, 1, None),
    "mfpo_online": ("mfpo", False, 1, FAST),
    "mfpo_precomputed": ("mfpo", True, 1, FAST),
    "mfpo_online_packed": ("mfpo", False, 1, dict(FAST, packed=True)),
    "mfpo_online_today": ("mfpo", False, 1, TODAY),
    "mfpo_online_rows": ("mfpo", False, 1, dict(FAST, shared_prefix=False)),
    "mfpo_online_chunks3": ("mfpo", False, 3, FAST),
    "mfpo_online_reencode": ("mfpo", False, 1, dict(FAST, share_image_features=False)),
}
TARGETS = {"mfpo_online": (1.05, 1.0), "mfpo_precomputed": (0.8, None)}  # (time, memory) ratios to TRL's, x F
GPU_VARIANTS = "trl_dpo_sigmoid,mfpo_online"  # one model copy each: 7B in bf16 is 14 GB; two fit an 80 GB card
_ANSWER_WORDS = {  # long answers: a description, and a rejected one with other objects
    "chosen": "there is a black cat sitting on the chair to the left of the table and a person holding a cup of "
              "coffee. the sky is blue and there are two bicycles and a red car in the picture.",
    "rejected": "there is a white dog standing on the sofa to the right of the tv and a man holding a book. "
                "the building is green and there are four buses and a blue truck in the image.",
}


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _base(args):
    """(make_model, processor, rows): `make_model()` builds a fresh copy of the same random model (same seed), so
    no side deep-copies another's and a process holds one copy per side."""
    import torch

    from mfpo_train.synthetic import synthetic_rows
    from mfpo_train.tiny import build_tiny_llava

    torch.set_num_threads(args.threads)
    if args.llava_7b:
        def make_model():
            return _build_llava_7b(args)[0]
        processor = _llava_7b_processor()
    else:
        def make_model():
            return build_tiny_llava(image_size=args.image_size, hidden_size=args.hidden, num_layers=args.layers)[0]
        processor = build_tiny_llava(image_size=args.image_size, hidden_size=8, num_layers=1)[1]
    size = args.image_size if not args.llava_7b else 336
    rows = synthetic_rows(args.batch, size=(size * 3 // 2, size * 2))
    if args.shape == "long":
        rows = [_long_answers(r, processor.tokenizer, args.long_tokens) for r in rows]
    return make_model, processor, rows


def _llava_7b_processor():
    """The tiny tokenizer with CLIP's processor at 336 px (576 image tokens)."""
    from transformers import LlavaProcessor

    from mfpo_train.tiny import LLAVA_CHAT_TEMPLATE, make_tokenizer

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    return LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 336},
                                                             crop_size={"height": 336, "width": 336}),
                          tokenizer=make_tokenizer(), patch_size=14, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)


def _build_llava_7b(args):
    """A random LLaVA-1.5-7B-shaped model in bfloat16 on CUDA (seed 0: every call builds the same weights)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    if not torch.cuda.is_available() and not args.allow_cpu:
        raise SystemExit("--llava-7b needs a CUDA GPU (about 28 GB of weights for TRL and one MFPO variant)")
    processor = _llava_7b_processor()
    tok = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=args.vision_layers,
                                       num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
        text_config=LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                                num_hidden_layers=args.layers, num_attention_heads=32, num_key_value_heads=32,
                                max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-2, projector_hidden_act="gelu",
    )
    torch.manual_seed(0)
    with _device(), _default_dtype(torch.bfloat16):
        model = LlavaForConditionalGeneration(config)
    return model, processor


class _default_dtype:
    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        import torch

        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        import torch

        torch.set_default_dtype(self.previous)


def _long_answers(row: dict, tokenizer, tokens: int) -> dict:
    from mfpo_data.schema import assistant_turn

    row = dict(row)
    for col, text in _ANSWER_WORDS.items():
        words, out = text.split(), []
        while len(tokenizer(" ".join(out), add_special_tokens=False)["input_ids"]) < tokens:
            out.append(words[len(out) % len(words)])
        row[col] = assistant_turn(" ".join(out))
    return row


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


def _tokens(batch) -> int:
    return int(batch["attention_mask"].sum())


class TRLSide:
    def __init__(self, args, make_model, processor, rows):
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
        self.trainer = DPOTrainer(model=make_model(), args=cfg, train_dataset=datasets.Dataset.from_list(trl_rows),
                                  processing_class=processor, peft_config=peft)
        self.model = self.trainer.model.train()
        self.examples = [self.trainer.train_dataset[i] for i in range(len(rows))]
        self.params, self.opt = _optimizer(self.model)
        self.batch = self.collate()
        self.tokens = _tokens(self.batch)

    def collate(self):
        fresh = [{k: copy.deepcopy(v) if k in ("prompt", "chosen", "rejected") else v for k, v in e.items()}
                 for e in self.examples]  # the collator rewrites the messages in place
        return self.trainer._prepare_inputs(self.trainer.data_collator(fresh))

    def step(self):
        loss = self.trainer.compute_loss(self.model, self.batch)
        self.trainer.accelerator.backward(loss)
        _finish(self.params, self.opt)


class MFPOSide:
    def __init__(self, args, make_model, processor, rows, precomputed: bool, chunks: int, scoring: dict, accelerator):
        import torch

        from mfpo_train.collator import MFPOCollator
        from mfpo_train.model import Reference, add_lora, batch_logps, split_logps

        rows = [dict(r) for r in rows]
        scoring = dict(scoring)
        self.packed = scoring.pop("packed", False)  # the shared prefix as packed rows instead of the cache
        share = scoring.pop("share_image_features", True)
        self.collator = MFPOCollator(processor, max_length=None)
        self.seqs = self.collator.sequences
        self.device = _device()
        model = make_model().to(self.device)
        if precomputed:  # what `precompute-ref` stores: the base model's log-probs (this copy, before its LoRA)
            with torch.no_grad():
                flat = batch_logps(model.eval(), self._to_device(self.collator(rows)), self.seqs)
                ref = split_logps(flat, self.seqs)
            for i, r in enumerate(rows):
                r.update(ref_chosen_logps=ref.chosen[i].item(), ref_rejected_logps=ref.rejected[i].item(),
                         ref_perturbed_logps=ref.perturbed[i].item())
        self.rows = rows
        self.model = add_lora(model, _lora()).train()
        self.reference = Reference(self.model, precomputed=precomputed, share_image_features=share, **scoring)
        self.chunks, self.scoring, self.accelerator = chunks, scoring, accelerator
        self.params, self.opt = _optimizer(self.model)
        self.batch = self.collate()
        self.tokens = self._count_tokens(self.batch)

    def _to_device(self, batch):
        import torch

        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _count_tokens(self, batch) -> int:
        """Tokens forwarded: with the shared prefix, y_l|m's prompt is not forwarded a second time."""
        if not self.scoring["shared_prefix"] or self.chunks > 1:
            return _tokens(batch)
        n = batch["num_pairs"]
        prompt = (batch["attention_mask"] - batch["completion_mask"])[n : 2 * n].sum()
        return _tokens(batch) - int(prompt)

    def collate(self):
        return self._to_device(self.collator(self.rows))

    def step(self):
        import mfpo_train.shared_prefix as shared_prefix
        from mfpo_train.gradcache import policy_logps
        from mfpo_train.losses import mfpo_loss

        shared_prefix.PREFER_PACKED = self.packed
        try:
            with self.reference.sharing_image_features(self.model):  # as `train._step`
                policy = policy_logps(self.model, self.batch, self.seqs, chunks=self.chunks, **self.scoring)
                ref = self.reference.logps(self.model, self.batch, self.seqs)
        finally:
            shared_prefix.PREFER_PACKED = False
        out = mfpo_loss(policy.logps, ref, beta=0.1)
        policy.backward(out.loss, self.accelerator)
        _finish(self.params, self.opt)


def _make(args, names):
    import torch

    make_model, processor, rows = _base(args)
    sides = {}
    trl = None
    if "trl_dpo_sigmoid" in names or len(names) > 1:
        trl = TRLSide(args, make_model, processor, rows)
        if "trl_dpo_sigmoid" in names:
            sides["trl_dpo_sigmoid"] = trl
    if trl is not None:
        accelerator = trl.trainer.accelerator  # the same backward call on both sides
    else:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    for name in names:
        side, precomputed, chunks, scoring = VARIANTS[name]
        if side == "mfpo":
            sides[name] = MFPOSide(args, make_model, processor, rows, precomputed, chunks, scoring, accelerator)
    return sides


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of one call."""
    _sync()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    _sync()
    return time.process_time() - c0, time.perf_counter() - t0


def timing(args) -> dict:
    sides = _make(args, args.variants)
    names = list(sides)
    cpu, wall = {n: [] for n in names}, {n: [] for n in names}
    for r in range(args.warmup + args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            c, w = _timed(sides[n].step)
            if r >= args.warmup:
                cpu[n].append(c)
                wall[n].append(w)
    collate = {n: [] for n in ("trl_dpo_sigmoid", "mfpo_online") if n in sides}
    for r in range(args.warmup + args.rounds):
        for n in (list(collate) if r % 2 == 0 else list(collate)[::-1]):
            c, _ = _timed(sides[n].collate)
            if r >= args.warmup:
                collate[n].append(c)
    shapes = {n: tuple(s.batch["input_ids"].shape) for n, s in sides.items()}
    answer = {n: int(s.batch["completion_mask"].sum()) for n, s in sides.items()}
    mem = gpu_memory(args, sides) if _on_gpu() and not args.skip_memory else {}
    return {"cpu": cpu, "wall": wall, "collate": collate, "input_ids": shapes, "answer_tokens": answer,
            "tokens": {n: s.tokens for n, s in sides.items()}, "floor": token_floor(sides), "memory": mem}


def token_floor(sides: dict) -> float | None:
    """F: the LM tokens MFPO's default scoring forwards per step / the LM tokens TRL's step forwards, from the
    collated batches (the shared-prefix count of `MFPOSide._count_tokens`, whichever MFPO side is there)."""
    trl = sides.get("trl_dpo_sigmoid")
    mfpo = next((s for s in sides.values() if isinstance(s, MFPOSide) and s.scoring["shared_prefix"] and s.chunks == 1),
                None)  # fmt: skip
    return None if trl is None or mfpo is None else mfpo.tokens / trl.tokens


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_memory(args, sides: dict) -> dict:
    """Each side in turn, in this process: its steps' peak allocated memory above what was allocated before them
    (the other sides' models included in both, so they cancel)."""
    import torch

    out = {}
    for name, side in sides.items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        for _ in range(args.mem_steps):
            side.step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out[name] = {"step_peak_mb": (peak - before) / 2**20, "rss_before_mb": before / 2**20,
                     "process_peak_mb": peak / 2**20}
    return out


def memory(args) -> dict:
    """CPU, in a fresh process (`main` starts one per variant): the peak RSS of a step above the RSS before it."""
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


def _verdict(value: float, target: float | None) -> str:
    return "" if target is None else ("met" if value <= target else "NOT met")


def _report(args, t: dict, mem: dict) -> dict:
    """Print the shape's table; return its figures (median ratios, F, verdicts) for the summary."""
    verdict_clock = "wall" if _on_gpu() else "cpu"
    f = t["floor"]
    print(f"\n## shape: {args.shape} (answer tokens per step: TRL {t['answer_tokens']['trl_dpo_sigmoid']}, MFPO "
          f"{next(v for k, v in t['answer_tokens'].items() if k != 'trl_dpo_sigmoid')}); token floor F = "
          f"{'n/a' if f is None else f'{f:.3f}'} (MFPO's LM tokens {next((v for k, v in t['tokens'].items() if k != 'trl_dpo_sigmoid'), 0)} "
          f"/ TRL's {t['tokens']['trl_dpo_sigmoid']})")  # fmt: skip
    print("input_ids per step: " + ", ".join(f"{n} {s}" for n, s in t["input_ids"].items()))
    clock = "CPU" if verdict_clock == "cpu" else "wall"
    print(f"| {'variant':<22}| {clock + ' ms':>8} | {'x TRL med [min-max]':>20} | {'/ F':>5} | {'wall x TRL':>10} | "
          f"{'tokens/s':>9} | {'step peak MB':>12} | {'x TRL':>6} | {'/ F':>5} | {'process MB':>10} | targets |")  # fmt: skip
    print("|" + "|".join("-" * w for w in (23, 10, 22, 7, 12, 11, 14, 8, 7, 12, 9)) + "|")
    verdict_times, trl_wall = t[verdict_clock]["trl_dpo_sigmoid"], t["wall"]["trl_dpo_sigmoid"]
    figures = {"floor": f, "variants": {}}
    for name, times in t[verdict_clock].items():
        med, lo, hi = _summary([a / b for a, b in zip(times, verdict_times, strict=True)])
        wall_med = statistics.median(a / b for a, b in zip(t["wall"][name], trl_wall, strict=True))
        step = statistics.median(times)
        per_f = med / f if f else float("nan")
        shown_f = f"{per_f:>5.2f}" if name != "trl_dpo_sigmoid" else f"{'-':>5}"
        line = (f"| {name:<22}| {step * 1000:>8.0f} | {f'{med:.2f} [{lo:.2f}-{hi:.2f}]':>20} | {shown_f} | "
                f"{wall_med:>10.2f} | {t['tokens'][name] / statistics.median(t['wall'][name]):>9.0f} |")  # fmt: skip
        time_target, mem_target = TARGETS.get(name, (None, None))
        verdicts = [f"time {_verdict(per_f, time_target)} (<= {time_target} F)"] if time_target else []
        entry = {"time_x_trl": med, "time_per_floor": per_f, "wall_x_trl": wall_med}
        if mem:
            m, m0 = mem[name], mem["trl_dpo_sigmoid"]
            ratio = m["step_peak_mb"] / m0["step_peak_mb"]
            mem_f = ratio / f if f else float("nan")
            shown_mf = f"{mem_f:>5.2f}" if name != "trl_dpo_sigmoid" else f"{'-':>5}"
            line += f" {m['step_peak_mb']:>12.0f} | {ratio:>6.2f} | {shown_mf} | {m['process_peak_mb']:>10.0f} |"
            entry.update(memory_x_trl=ratio, memory_per_floor=mem_f)
            if mem_target:
                verdicts.append(f"memory {_verdict(mem_f, mem_target)} (<= {mem_target} F)")
        else:
            line += f" {'-':>12} | {'-':>6} | {'-':>5} | {'-':>10} |"
        entry["verdicts"] = verdicts
        figures["variants"][name] = entry
        print(line + f" {', '.join(verdicts)} |")
    if {"mfpo_online", "mfpo_online_rows"} <= set(t["cpu"]):
        cpu_med, cpu_lo, cpu_hi = _summary([a / b for a, b in zip(t["cpu"]["mfpo_online_rows"], t["cpu"]["mfpo_online"],
                                                                   strict=True)])
        wall = statistics.median(a / b for a, b in zip(t["wall"]["mfpo_online_rows"], t["wall"]["mfpo_online"],
                                                       strict=True))
        print(f"shared-prefix fallback (mfpo_online_rows / mfpo_online, same rounds): CPU time {cpu_med:.2f}x "
              f"[{cpu_lo:.2f}-{cpu_hi:.2f}], wall {wall:.2f}x")
    c = t["collate"]
    if len(c) == 2:
        med, lo, hi = _summary([a / b for a, b in zip(c["mfpo_online"], c["trl_dpo_sigmoid"], strict=True)])
        print(f"collation per batch (CPU): TRL {statistics.median(c['trl_dpo_sigmoid']) * 1000:.0f} ms, MFPO "
              f"{statistics.median(c['mfpo_online']) * 1000:.0f} ms ({med:.2f}x [{lo:.2f}-{hi:.2f}]); not in the step "
              "times")
    if "mfpo_online" in t[verdict_clock] and "mfpo_online_reencode" in t[verdict_clock]:
        gain = statistics.median(a / b for a, b in zip(t[verdict_clock]["mfpo_online_reencode"],
                                                       t[verdict_clock]["mfpo_online"], strict=True))  # fmt: skip
        print(f"reference forward reusing the policy's image features: mfpo_online_reencode / mfpo_online = {gain:.3f}x "
              f"({clock} time per step, median over rounds)")  # fmt: skip
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="short,long", help="short (synthetic answers), long (--long-tokens answers)")
    p.add_argument("--long-tokens", type=int, default=200, help="answer tokens of the long shape")
    p.add_argument("--variants", default=None, help=f"comma-separated, from {', '.join(VARIANTS)} (TRL always runs)")
    p.add_argument("--rounds", type=int, default=6, help="timed rounds (one step of every variant each)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=4, help="preference pairs per step")
    p.add_argument("--image-size", type=int, default=224, help="tiny model only (LLaVA-7B: 336)")
    p.add_argument("--hidden", type=int, default=256, help="tiny model only")
    p.add_argument("--layers", type=int, default=None, help="language model layers (tiny: 4, LLaVA-7B: 32)")
    p.add_argument("--vision-layers", type=int, default=24, help="LLaVA-7B's vision tower layers")
    p.add_argument("--llava-7b", action="store_true", help="random LLaVA-1.5-7B-shaped model, bf16, on CUDA")
    p.add_argument("--allow-cpu", action="store_true", help=argparse.SUPPRESS)  # a smoke test of --llava-7b
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write every shape's figures here")
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--shape", default="short", help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    import tempfile

    args.layers = args.layers or (32 if args.llava_7b else 4)
    names = (args.variants or (GPU_VARIANTS if args.llava_7b else ",".join(VARIANTS))).split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    args.variants = ["trl_dpo_sigmoid"] + [n for n in names if n != "trl_dpo_sigmoid"]
    args.tmp = args.tmp or tempfile.mkdtemp()
    if args.variant:
        print("RESULT " + json.dumps(memory(args)))
        return

    import torch
    import transformers
    import trl

    model = ("LLaVA-1.5-7B-shaped (random, bf16), 336 px, 576 image tokens" if args.llava_7b else
             f"tiny LLaVA: image {args.image_size}px, {(args.image_size // 8) ** 2} image tokens, LM hidden {args.hidden}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {args.threads} threads"
    print(f"{model} x {args.layers} layers; LoRA r8 q/v; {args.batch} pairs/step; {args.rounds} interleaved rounds "
          f"after {args.warmup} warm-up; {device}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}")
    load_before = os.getloadavg()
    figures = {}
    for shape in args.shapes.split(","):
        args.shape = shape
        t = timing(args)
        mem = t["memory"]
        if not args.skip_memory and not mem:  # CPU: a fresh process per variant
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
            for name in args.variants:
                cmd = [sys.executable, "-m", __spec__.name, "--variant", name] + [
                    f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                    if k not in ("variant", "skip_memory", "variants", "llava_7b", "allow_cpu", "json") and v is not None]
                cmd += ["--variants", ",".join(args.variants)] + [f"--{f.replace('_', '-')}" for f in
                                                                  ("llava_7b", "allow_cpu") if getattr(args, f)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
                mem[name] = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        figures[shape] = _report(args, t, mem)
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; cores: {os.cpu_count()}")
    print(f"targets, F the shape's token floor: mfpo_online <= 1.05 F x TRL's step time and <= 1.0 F x its peak step "
          f"memory (both shapes); mfpo_precomputed <= 0.8 F x TRL's step time; verdicts on "
          f"{'wall time (GPU)' if _on_gpu() else 'CPU time (one process, ' + str(args.threads) + ' torch thread(s))'}")


    if args.json is not None:
        args.json.write_text(json.dumps({"device": device, "load_average": [load_before, load_after],
                                         "shapes": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
