"""Efficacy micro-benchmark (issue 7): does the image reward undo DPO's text shortcut? CPU, minutes.

Per seed:
  1. SFT a tiny random LLaVA (mfpo_train/tiny.py) from scratch on biased synthetic data
     ("What color is the {shape}?", each shape on its prior colour `--p-prior` of the time). The SFT
     loop is here (mfpo_train has none) but runs on MFPOCollator + mfpo_train.model.sequence_logps.
  2. Preference rows built by mfpo-data's code: chosen = true colour, rejected = the prior colour for a
     `--prior-fraction` of pairs (else another wrong colour), perturbed image = the asked shape's exact
     mask noised by DiffusionNoisePerturber(t=500) through PerturbationStage; written with the schema.
     Reference log-probs of the frozen SFT model: mfpo_train.precompute.precompute_reference.
  3. Four runs of mfpo_train.train.train(cfg) from the same SFT checkpoint, same seed and data order
     (full fine-tuning, reference: precomputed = the frozen SFT model, curriculum: none), differing only
     in the loss weights: DPO only, DPO + L_margin, DPO + L_image, MFPO (1:1:1, eta 0).
  4. Evaluation on held-out anti-prior items, their twins (asked shape repainted in its prior colour),
     the key region noised (t=500) or greyed, and pure-noise images (t=999, whole image). The answer is
     the colour with the highest log p(colour | image, question) (sequence_logps over the 4 colours).

    python -m benchmarks.efficacy.efficacy                 # 5 seeds, the README's table
    python -m benchmarks.efficacy.efficacy --fast          # 1 seed, few steps: the test suite's smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.efficacy import shapes  # noqa: E402


METHODS = {  # name: (text_weight, image_weight, margin_weight)
    "dpo": (1.0, 0.0, 0.0),
    "dpo+margin": (1.0, 0.0, 1.0),
    "dpo+image": (1.0, 1.0, 0.0),
    "mfpo": (1.0, 1.0, 1.0),
}
METRICS = {  # name: (description, higher is better?)
    "acc_anti": ("accuracy on anti-prior items", True),
    "acc_twin": ("accuracy on their twins (prior colour)", True),
    "acc_both": ("item and twin both right", True),
    "chg_noise": ("answer changes, key region noised t=500", True),
    "chg_grey": ("answer changes, key region greyed", True),
    "noise_pref": ("log p(y_w) > log p(y_l) on pure noise", False),
    "grey_drop": ("mean drop of log p(true) when greyed", True),
}
VARIANTS = ("orig", "twin", "noised", "grey", "pure_noise")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    p.add_argument("--fast", action="store_true", help="1 seed, few steps, small sets (smoke test)")
    p.add_argument("--jobs", type=int, default=2, help="seeds trained in parallel processes (1 = in this process)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (results are deterministic for a given count)")
    p.add_argument("--out", type=Path, default=None, help="keep work files and write results.json / table.md here")
    p.add_argument("--p-prior", type=float, default=0.85, help="P(shape has its prior colour) in the biased data")
    p.add_argument("--prior-fraction", type=float, default=0.9, help="fraction of pairs whose rejected = prior colour")
    p.add_argument("--hidden", type=int, default=64, help="LM hidden size of the tiny LLaVA")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--sft-examples", type=int, default=3200, help="unique SFT examples (collated once, reused)")
    p.add_argument("--sft-lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32, help="SFT examples / preference pairs per step")
    p.add_argument("--pref-pairs", type=int, default=512)
    p.add_argument("--pref-epochs", type=int, default=4)
    p.add_argument("--perturbation", default="diffusion_noise",
                   choices=("diffusion_noise", "opencv_inpaint", "blur", "gaussian_noise"),
                   help="mfpo-data backend for the dispreferred image's key region (the paper: diffusion noise, t=500)")
    p.add_argument("--lr", type=float, default=5e-4, help="preference-training learning rate")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--n-eval", type=int, default=128, help="held-out anti-prior items per seed")
    p.add_argument("--verbose", action="store_true", help="show mfpo-train's progress bars and warnings")
    args = p.parse_args(argv)
    if args.fast:
        args.seeds, args.jobs, args.sft_steps, args.sft_examples = 1, 1, 20, 160
        args.pref_pairs, args.pref_epochs, args.n_eval, args.batch = 32, 1, 16, 16
    return args


# -- setup ---------------------------------------------------------------------------------------------
def _determinism(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _quiet(verbose: bool):
    """mfpo-train's progress bars go to stderr; keep them out of the table unless --verbose."""
    import contextlib
    import io

    return contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO())


def _batches(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


# -- 1. SFT ---------------------------------------------------------------------------------------------
def sft(args, seed: int, out: Path) -> tuple[Path, dict]:
    """Train a tiny random LLaVA from scratch on the biased data; save it like a model id."""
    import torch

    from mfpo_train.collator import MFPOCollator
    from mfpo_train.model import sequence_logps
    from mfpo_train.tiny import build_tiny_llava

    torch.manual_seed(seed)
    model, processor = build_tiny_llava(image_size=shapes.SIZE, hidden_size=args.hidden, num_layers=args.layers,
                                        seed=seed)
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    scenes = shapes.make_scenes(seed, "sft", args.sft_examples, args.p_prior)
    batches = [collator([shapes.chat_row(shapes.render(s)[0], s.question, s.asked.color) for s in chunk])
               for chunk in _batches(scenes, args.batch)]  # collated once; epochs reuse them in a seeded order
    opt = torch.optim.AdamW(model.parameters(), lr=args.sft_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    model.train()
    losses = []
    for _ in range(args.sft_steps):
        if not order:
            order = torch.randperm(len(batches), generator=gen).tolist()
        batch = batches[order.pop()]
        logps = sequence_logps(model, batch)  # summed over the answer tokens ("red</s>")
        loss = -(logps / batch["completion_mask"].sum(-1)).mean()  # token-mean NLL
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    path = out / "sft"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    tail = losses[-20:]
    return path, {"sft_final_loss": sum(tail) / len(tail)}


# -- 2. preference data ---------------------------------------------------------------------------------
def train_config(args, seed: int, model_dir: Path, dataset: Path, output_dir: Path, weights=(1.0, 1.0, 1.0)):
    from mfpo_train.config import load_config

    tw, iw, mw = weights
    return load_config(None, [
        f"model.name_or_path={model_dir}", "model.dtype=float32", "lora.enabled=false",
        f"data.dataset={dataset}", "data.max_length=128", "reference=precomputed", "curriculum=none",
        f"epochs_per_stage={args.pref_epochs}",
        f"loss.beta={args.beta}", f"loss.text_weight={tw}", f"loss.image_weight={iw}", f"loss.margin_weight={mw}",
        "loss.eta=0.0", f"optim.lr={args.lr}", "optim.scheduler=constant", "optim.warmup_ratio=0.0",
        f"train.batch_size={args.batch}", f"train.seed={seed}", f"train.output_dir={output_dir}",
        "train.report_to=[]", "train.save_every=null", "train.log_every=1000000",
    ])


def preference_data(args, seed: int, sft_dir: Path, out: Path) -> Path:
    from mfpo_train.precompute import precompute_reference

    pairs = shapes.preference_pairs(seed, args.pref_pairs, args.p_prior, args.prior_fraction)
    raw, _ = shapes.build_preference_dataset(pairs, out / "pref", seed=seed, kind=args.perturbation)
    cfg = train_config(args, seed, sft_dir, raw, out / "unused")
    return precompute_reference(cfg, out / "pref_ref", batch_size=64)


# -- 4. evaluation ----------------------------------------------------------------------------------------
def eval_set(args, seed: int, processor):
    """Collated batches (built once, reused for every model) of every (variant, item, colour) row."""
    import numpy as np

    from mfpo_data.backends.perturbers import DiffusionNoisePerturber
    from mfpo_train.collator import MFPOCollator

    scenes = shapes.make_scenes(seed, "eval", args.n_eval, args.p_prior, anti=True)
    images = {"orig": [shapes.render(s)[0] for s in scenes], "twin": [shapes.render(s.twin())[0] for s in scenes]}
    for variant, perturber, kind, masked in (("noised", DiffusionNoisePerturber(t=500), "diffusion_noise", True),
                                             ("grey", shapes.GreyFillPerturber(), "grey_fill", True),
                                             ("pure_noise", DiffusionNoisePerturber(t=999), "diffusion_noise", False)):
        samples = [shapes.to_sample(s, s.asked.color, s.prior) for s in scenes]
        if not masked:  # no region: PerturbationStage noises the whole image
            for smp in samples:
                smp.mask = None
        images[variant] = [smp.rejected_image for smp in shapes.perturb(samples, perturber, kind, seed + 1000)]
    collator = MFPOCollator(processor, max_length=None, sequences=("chosen",))
    rows = [shapes.chat_row(images[v][i], s.question, c)
            for v in VARIANTS for i, s in enumerate(scenes) for c in shapes.COLORS]
    batches = [collator(b) for b in _batches(rows, 256)]
    truth = np.array([shapes.COLORS.index(s.asked.color) for s in scenes])
    prior = np.array([shapes.COLORS.index(s.prior) for s in scenes])
    return {"batches": batches, "true": truth, "prior": prior, "n": len(scenes)}


def evaluate(model, ev) -> dict:
    import numpy as np
    import torch

    from mfpo_train.model import sequence_logps

    model.eval()
    with torch.no_grad():
        flat = torch.cat([sequence_logps(model, b) for b in ev["batches"]]).numpy()
    lp = {v: a for v, a in zip(VARIANTS, flat.reshape(len(VARIANTS), ev["n"], len(shapes.COLORS)), strict=True)}
    pred = {v: a.argmax(-1) for v, a in lp.items()}
    idx = np.arange(ev["n"])
    true, prior = ev["true"], ev["prior"]
    right, twin_right = pred["orig"] == true, pred["twin"] == prior
    return {
        "acc_anti": float(right.mean()),
        "acc_twin": float(twin_right.mean()),
        "acc_both": float((right & twin_right).mean()),
        "chg_noise": float((pred["noised"] != pred["orig"]).mean()),
        "chg_grey": float((pred["grey"] != pred["orig"]).mean()),
        "noise_pref": float((lp["pure_noise"][idx, true] > lp["pure_noise"][idx, prior]).mean()),
        "grey_drop": float((lp["orig"][idx, true] - lp["grey"][idx, true]).mean()),
    }


# -- one seed ------------------------------------------------------------------------------------------------
def run_seed(args, seed: int, out: Path) -> dict:
    from transformers import AutoProcessor

    from mfpo_train.train import train

    t0 = time.perf_counter()
    sft_dir, info = sft(args, seed, out)
    t_sft = time.perf_counter() - t0
    with _quiet(args.verbose):
        ref_dir = preference_data(args, seed, sft_dir, out)
    ev = eval_set(args, seed, AutoProcessor.from_pretrained(sft_dir))
    from transformers import AutoModelForImageTextToText

    results = {"sft": evaluate(AutoModelForImageTextToText.from_pretrained(sft_dir), ev)}
    timing = {"sft_s": t_sft, "data_s": time.perf_counter() - t0 - t_sft}
    train_logs = {}
    for name, weights in METHODS.items():
        t1 = time.perf_counter()
        cfg = train_config(args, seed, sft_dir, ref_dir, out / name, weights)
        with _quiet(args.verbose):
            result = train(cfg)
        results[name] = evaluate(result.model, ev)
        last = [h for h in result.history if not h.get("skipped")][-1]
        train_logs[name] = {k: last[k] for k in ("loss", "rewards/margins", "rewards/chosen", "image_rewards/margins",
                                                 "logps/chosen") if k in last}
        train_logs[name]["steps"] = result.state.global_step
        timing[f"{name}_s"] = time.perf_counter() - t1
    timing["seed_s"] = time.perf_counter() - t0
    return {"seed": seed, "metrics": results, "train": train_logs, "timing": timing, **info}


# -- report ----------------------------------------------------------------------------------------------------
def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def table(runs: list[dict]) -> str:
    rows = ["sft", *METHODS]
    head = "| model | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (len(METRICS) + 1)]
    for r in rows:
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (_mean_std([x["metrics"][r][k] for x in runs]) for k in METRICS)]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences vs DPO only (same seed, same SFT checkpoint), mean ± std over seeds:", "",
              head, lines[1]]
    for r in [x for x in rows if x != "dpo"]:
        cells = []
        for k in METRICS:
            m, s = _mean_std([x["metrics"][r][k] - x["metrics"]["dpo"][k] for x in runs])
            cells.append(f"{m:+.3f} ± {s:.3f}")
        lines.append(f"| {r} − dpo | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _worker_init(threads: int) -> None:
    import transformers

    _determinism(threads)
    transformers.logging.set_verbosity_error()


def _progress(r: dict) -> None:
    print(f"seed {r['seed']}: {r['timing']['seed_s']:.0f} s; " + "; ".join(
        f"{n} twin {m['acc_twin']:.2f} anti {m['acc_anti']:.2f} noise_pref {m['noise_pref']:.2f}"
        for n, m in r["metrics"].items()), flush=True)


def main(argv=None) -> dict:
    import torch

    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        return _main(parse_args(argv))
    finally:  # the test suite calls main() in its own process
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _main(args) -> dict:
    _determinism(args.threads)
    import logging

    import torch
    import transformers

    logging.getLogger("mfpo_train").setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="mfpo-efficacy-")
        out = Path(tmp.name)
    else:
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        if args.jobs > 1 and args.seeds > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(min(args.jobs, args.seeds), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_init, initargs=(args.threads,)) as pool:
                futures = [pool.submit(run_seed, args, seed, out / f"seed{seed}") for seed in range(args.seeds)]
                for f in futures:
                    runs.append(f.result())
                    _progress(runs[-1])
        else:
            for seed in range(args.seeds):
                runs.append(run_seed(args, seed, out / f"seed{seed}"))
                _progress(runs[-1])
    finally:
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.perf_counter() - start
    load = os.getloadavg()
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "runs": runs, "elapsed_s": elapsed, "loadavg_at_end": load, "torch": torch.__version__,
        "transformers": transformers.__version__, "cpu_count": os.cpu_count(),
    }
    text = table(runs)
    header = (f"{args.seeds} seed(s), {elapsed:.0f} s total, {min(args.jobs, args.seeds)} process(es) x "
              f"{args.threads} torch thread(s) "
              f"(load average at end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; torch {torch.__version__})")
    print("\n" + header + "\n\n" + text)
    print("\nmetrics: " + "; ".join(f"{k} = {d}" for k, (d, _) in METRICS.items()))
    if args.out is not None:
        (out / "results.json").write_text(json.dumps(summary, indent=2))
        (out / "table.md").write_text(header + "\n\n" + text + "\n")
    summary["table"] = text
    return summary


if __name__ == "__main__":
    main()
