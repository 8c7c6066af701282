"""Validity gates, checked before any claim is judged. A failed gate turns every verdict into "no verdict, because ...".

1. **SFT capable but biased** (the SFT model, mean over the seeds' held-out sets): on scenes from its training
   distribution it names most objects with their colour and rarely hallucinates, yet on the balanced set it
   leans on both priors. Bands in `SFT_BANDS`.
2. **DPO shows the shortcut**: from the same SFT model, DPO on the shortcut-regime pairs over-corrects more
   (`overcorrect`: prior-coloured objects named in another colour, present companions left out): the rule's
   interval of DPO - SFT lies above 0.
3. **Negative control**: at the natural error rate, where there is no shortcut to undo, Table 4's image-term
   claim (MFPO vs MFPO without L_image, CHAIR_i) must not come out "holds".
4. **Determinism across thread counts**: one short MFPO run from the SFT model on the first seed's pairs, at 1
   torch thread twice and at 2 threads once, gives the same greedy descriptions (of the first `GEN_BATCH`
   held-out scenes) and the same CHAIR counts; the 1-thread runs give bit-identical weights.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from benchmarks.efficacy import rule


# name: (metric, lowest, highest) on the SFT model, mean over seeds. Calibrated on pilot seeds (README).
# Capable where its priors hold (the training distribution), biased where they do not (the balanced set).
SFT_BANDS = {
    "names objects with their colour": ("recall_in_dist", 75.0, 100.0),
    "hallucinates rarely": ("CHAIRi_in_dist", 0.0, 25.0),
    "leans on the colour prior": ("prior_said", 10.0, 100.0),
    "leans on the companion prior": ("co_added", 15.0, 100.0),
}
GATE_RUNS = ("dpo", "mfpo", "mfpo-no-image", "mfpo@natural", "mfpo-no-image@natural")
DETERMINISM_STEPS = 4


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: str  # what was measured
    requirement: str
    reason: str = ""  # why it failed, one line

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def sft_gate(sft_metrics: list[dict]) -> Gate:
    values = {m: _mean([r[m] for r in sft_metrics]) for m, _, _ in SFT_BANDS.values()}
    failed = [f"{what}: {m} {values[m]:.1f} outside [{lo:g}, {hi:g}]" for what, (m, lo, hi) in SFT_BANDS.items()
              if not lo <= values[m] <= hi]
    value = ", ".join(f"{m} {values[m]:.1f}" for m in values)
    requirement = ", ".join(f"{m} in [{lo:g}, {hi:g}]" for _, (m, lo, hi) in SFT_BANDS.items())
    return Gate("SFT model capable but biased", not failed, value, requirement,
                "the SFT model is outside its band (" + "; ".join(failed) + ")" if failed else "")


def shortcut_gate(diffs: list[float], k: int) -> Gate:
    """`diffs`: per seed, overcorrect(DPO) - overcorrect(SFT), points."""
    mean, _, lo, hi = rule.interval(diffs, k)
    passed = lo > 0.0
    value = f"DPO - SFT overcorrect {mean:+.1f} points, {rule.level(k):.2%} interval [{lo:+.1f}, {hi:+.1f}]"
    return Gate("DPO shows the shortcut", passed, value, "interval above 0",
                "" if passed else "DPO does not over-correct measurably more than the SFT model, so the toy "
                                  "has no shortcut for the image term to undo")


def control_gate(decision: rule.Decision) -> Gate:
    passed = decision.verdict != rule.HOLDS
    value = (f"MFPO without L_image - MFPO at the natural rate: {decision.mean:+.1f} CHAIR_i points, "
             f"{decision.level:.2%} interval {decision.interval(1)}: {decision.verdict}")
    return Gate("negative control (natural rate)", passed, value, "not \"holds\"",
                "" if passed else "the image-term claim also holds without a shortcut to undo, so what the toy "
                                  "measures is not the shortcut")


def determinism_gate(det: dict) -> Gate:
    passed = det["same_threads_identical"] and det["thread_counts_identical"]
    value = (f"{det['answers']} descriptions: 1 thread twice {'identical' if det['same_threads_identical'] else 'differ'}"
             f", 1 vs 2 threads {det['answers_differing']} differ; weights max |diff| {det['max_weight_diff']:.1e}")
    return Gate("determinism across thread counts", passed, value, "identical descriptions",
                "" if passed else "results depend on the torch thread count or are not repeatable")


def check(sft_metrics, shortcut_diffs, control: rule.Decision, determinism: dict, k: int) -> list[Gate]:
    return [sft_gate(sft_metrics), shortcut_gate(shortcut_diffs, k), control_gate(control),
            determinism_gate(determinism)]


def task_determinism(args, seed: int) -> dict:
    """A short MFPO run (DETERMINISM_STEPS steps) on the seed's pairs, at 1 thread twice and 2 threads once."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from benchmarks.efficacy import runs
    from benchmarks.efficacy.evaluate import chair, generate, MAX_NEW_TOKENS
    from mfpo_train.checkpoint import checkpoint_dir
    from mfpo_train.train import train

    t0 = time.process_time()
    model_dir = runs.sft_dir(args)
    dataset = runs.data_dir(args, seed, "shortcut", "key") / "ref"
    processor = AutoProcessor.from_pretrained(model_dir)
    ev = runs._eval_set(args, seed, processor)
    steps = min(DETERMINISM_STEPS, args.steps)
    before = torch.get_num_threads()
    outputs = []
    try:
        for i, threads in enumerate((1, 1, 2)):
            torch.set_num_threads(threads)
            out = runs._fresh(runs.seed_dir(args, seed) / "train" / f"determinism-{i}")
            cfg = runs.train_config(args, seed, model_dir, dataset, out, runs.RUNS["mfpo"], steps=steps)
            cfg.train.save_every = steps
            with runs.quiet(args.verbose):
                train(cfg)
            weights = load_file(str(checkpoint_dir(out, steps) / "model" / "model.safetensors"))
            model = AutoModelForImageTextToText.from_pretrained(model_dir)
            model.load_state_dict(weights, strict=False)
            idx, enc = ev["describe"][0]
            answers = generate(model.eval(), processor, [(list(range(len(idx))), enc)], len(idx), MAX_NEW_TOKENS)
            counts = chair(answers, [ev["scenes"][i].phrases for i in idx])["counts"]
            outputs.append((weights, answers, counts))
            runs.shutil.rmtree(out)
    finally:
        torch.set_num_threads(before)
    (w1, a1, c1), (w1b, a1b, c1b), (w2, a2, c2) = outputs
    max_diff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    return {"steps": steps, "answers": len(a1), "same_threads_identical": a1 == a1b and c1 == c1b and all(
        torch.equal(w1[k], w1b[k]) for k in w1), "thread_counts_identical": a1 == a2 and c1 == c2,
            "answers_differing": sum(x != y for x, y in zip(a1, a2, strict=True)), "max_weight_diff": max_diff,
            "cpu_s": time.process_time() - t0}
