"""What the benchmark trains, and the three kinds of task it is made of (each cached on disk by a key).

  sft(seed)           the seed's SFT model                                   OUT/seed{S}/sft-{key}/
  data(seed, region)  its preference rows for one image-negative region,     OUT/seed{S}/data-{region}-{key}/
                      with the SFT model's reference log-probs
  run(seed, name)     one `mfpo_train.train.train(cfg)` run from the SFT     OUT/seed{S}/runs/{name}.json
                      checkpoint, evaluated at the end of every epoch

A task whose output exists with the same key is not redone, so one run of the benchmark reuses the SFT
checkpoint and the reference log-probs of a seed across all tables, and a rerun with the same `--out`
picks up where a killed one stopped. Keys cover every setting that changes the output, the torch thread
count among them (results are bit-identical only for the same count).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.efficacy import data, shapes
from benchmarks.efficacy.evaluate import eval_set, evaluate
from benchmarks.efficacy.sft import sft


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

VERSION = 2  # bump when a change to the benchmark's code changes its numbers: old cache entries are not reused


@dataclass(frozen=True)
class Run:
    name: str
    region: str | None  # the preference dataset it trains on (shapes.REGIONS); None: no training (the SFT model)
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (text, image, margin)
    eta: float = 0.0
    curriculum: bool = False  # easy -> medium -> hard (entropy tertiles) instead of one end-to-end stage
    about: str = ""


RUNS = {r.name: r for r in (
    Run("sft", None, about="the SFT model every run starts from (and the reference)"),
    Run("dpo", "key", (1.0, 0.0, 0.0), about="L_text only"),
    Run("dpo+margin", "key", (1.0, 0.0, 1.0), about="MFPO - L_image (the paper's Table 4 row)"),
    Run("dpo+image", "key", (1.0, 1.0, 0.0), about="MFPO - L_margin"),
    Run("mfpo", "key", about="L_text + L_image + L_margin, eta 0, key-region negatives, end-to-end"),
    Run("dpo-blank", "blank", (1.0, 0.0, 0.0), about="DPO on blank images: the answer preference alone"),
    Run("mfpo-global", "global", about="image negative: diffusion noise over the whole image"),
    Run("mfpo-random20", "random20", about="image negative: noise in a random rectangle of 20% of the image"),
    Run("mfpo-curriculum", "key", curriculum=True, about="easy -> medium -> hard, same pairs and steps"),
    Run("mfpo-eta0.2", "key", eta=0.2, about="L_margin with eta 0.2"),
    Run("mfpo-eta0.4", "key", eta=0.4, about="L_margin with eta 0.4"),
)}
TABLE4_METHODS = ("dpo", "dpo+margin", "dpo+image", "mfpo", "dpo-blank")


# -- keys and paths ------------------------------------------------------------------------------------
def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:12]


def sft_key(args, seed: int) -> str:
    return _key("sft", seed, args.p_prior, args.hidden, args.layers, args.sft_steps, args.sft_examples, args.sft_lr,
                args.sft_batch, args.threads, args.task_tokens)


def data_key(args, seed: int, region: str) -> str:
    kind = args.perturbation if region in ("key", "random20") else "diffusion_noise"
    return _key("data", sft_key(args, seed), region, kind, args.pref_pairs, args.prior_fraction)


def run_key(args, seed: int, name: str) -> str:
    run = RUNS[name]
    upstream = data_key(args, seed, run.region) if run.region else sft_key(args, seed)
    train = None if run.region is None else (args.pref_epochs, args.lr, args.beta, args.batch, args.max_grad_norm)
    return _key("run", upstream, asdict(run), train, args.n_eval)


def seed_dir(args, seed: int) -> Path:
    return Path(args.out) / f"seed{seed}"


def sft_dir(args, seed: int) -> Path:
    return seed_dir(args, seed) / f"sft-{sft_key(args, seed)}"


def data_dir(args, seed: int, region: str) -> Path:
    return seed_dir(args, seed) / f"data-{region}-{data_key(args, seed, region)}"


def run_file(args, seed: int, name: str) -> Path:
    return seed_dir(args, seed) / "runs" / f"{name}.json"


def cached_run(args, seed: int, name: str) -> dict | None:
    path = run_file(args, seed, name)
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("key") == run_key(args, seed, name) else None


def _publish(tmp: Path, final: Path) -> None:
    """Atomically put a finished folder in place (a killed task leaves only a `.tmp` folder behind)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def _fresh(path: Path) -> Path:
    if path.exists():  # a leftover of a killed task of ours
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@contextlib.contextmanager
def quiet(verbose: bool):
    """mfpo-train's progress bars and warnings go to stderr; keep them out of the report unless --verbose."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stderr(io.StringIO()):
            yield


# -- tasks ---------------------------------------------------------------------------------------------
def task_sft(args, seed: int) -> dict:
    final = sft_dir(args, seed)
    info = final / "sft_info.json"
    if info.is_file():
        return json.loads(info.read_text())
    t0 = time.perf_counter()
    tmp = _fresh(final.with_name(final.name + ".tmp"))
    result = {**sft(args, seed, tmp), "sft_s": time.perf_counter() - t0}
    (tmp / "sft_info.json").write_text(json.dumps(result, indent=2))
    _publish(tmp, final)
    return result


def task_data(args, seed: int, region: str) -> dict:
    final = data_dir(args, seed, region)
    info = final / "data_info.json"
    if info.is_file():
        return json.loads(info.read_text())
    t0 = time.perf_counter()
    tmp = _fresh(final.with_name(final.name + ".tmp"))
    model = sft_dir(args, seed)
    pairs = shapes.preference_pairs(seed, args.pref_pairs, args.p_prior, args.prior_fraction)
    kind = args.perturbation if region in ("key", "random20") else "diffusion_noise"
    with quiet(args.verbose):
        scores = data.difficulty(pairs, model, seed)
        raw = data.build_dataset(pairs, tmp / "raw", seed, region, kind, scores)
        data.with_reference(train_config(args, seed, model, raw, tmp / "unused", RUNS["mfpo"]), tmp / "ref")
    shutil.rmtree(raw)
    prior = sum(r == s.prior for s, _, r in pairs) / len(pairs)
    result = {"region": region, "perturbation": kind if region != "blank" else "none", "pairs": len(pairs),
              "rejected_is_prior": prior, "data_s": time.perf_counter() - t0}
    (tmp / "data_info.json").write_text(json.dumps(result, indent=2))
    _publish(tmp, final)
    return result


def steps_per_epoch(args) -> int:
    return math.ceil(args.pref_pairs / args.batch)


def train_config(args, seed: int, model_dir: Path, dataset: Path, output_dir: Path, run: Run):
    from mfpo_train.config import load_config

    tw, iw, mw = run.weights
    clip = "null" if not args.max_grad_norm else args.max_grad_norm
    return load_config(None, [
        f"model.name_or_path={model_dir}", "model.dtype=float32", "lora.enabled=false",
        f"data.dataset={dataset}", "data.max_length=128", "reference=precomputed",
        "curriculum=[easy,medium,hard]" if run.curriculum else "curriculum=none",
        f"epochs_per_stage={args.pref_epochs}",
        f"loss.beta={args.beta}", f"loss.text_weight={tw}", f"loss.image_weight={iw}", f"loss.margin_weight={mw}",
        f"loss.eta={run.eta}", f"optim.lr={args.lr}", "optim.scheduler=constant", "optim.warmup_ratio=0.0",
        f"optim.max_grad_norm={clip}", f"train.batch_size={args.batch}", f"train.seed={seed}",
        f"train.output_dir={output_dir}", "train.report_to=[]", f"train.save_every={steps_per_epoch(args)}",
        "train.log_every=1000000",
    ])


_EVAL_SETS: dict = {}  # per process: the seed's evaluation set, built once and shared by all its runs


def _eval_set(args, seed: int, processor) -> dict:
    key = (seed, args.n_eval, args.p_prior)
    if key not in _EVAL_SETS:
        _EVAL_SETS.clear()  # one seed at a time is enough; keeps memory flat
        _EVAL_SETS[key] = eval_set(seed, args.n_eval, args.p_prior, processor)
    return _EVAL_SETS[key]


def task_run(args, seed: int, name: str) -> dict:
    """Train `name` from the seed's SFT model (or just evaluate it), evaluating every epoch's checkpoint."""
    cached = cached_run(args, seed, name)
    if cached is not None:
        return cached
    from safetensors.torch import load_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mfpo_train.checkpoint import checkpoint_dir
    from mfpo_train.train import train

    run, model_dir = RUNS[name], sft_dir(args, seed)
    t0 = time.perf_counter()
    ev = _eval_set(args, seed, AutoProcessor.from_pretrained(model_dir))
    t_eval_set = time.perf_counter() - t0
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    result = {"name": name, "seed": seed, "key": run_key(args, seed, name)}
    if run.region is None:
        result.update(metrics=evaluate(model, ev), curve=[], train={})
    else:
        out = _fresh(seed_dir(args, seed) / "train" / name)
        dataset = data_dir(args, seed, run.region) / "ref"
        with quiet(args.verbose):
            trained = train(train_config(args, seed, model_dir, dataset, out, run))
        t_train = time.perf_counter() - t0
        total, every = trained.state.global_step, steps_per_epoch(args)
        curve = []
        for step in sorted({*range(every, total + 1, every), total}):
            load_model(model, str(checkpoint_dir(out, step) / "model" / "model.safetensors"))
            curve.append({"step": step, **evaluate(model, ev)})
        shutil.rmtree(out)  # checkpoints of our own run, evaluated
        done = [h for h in trained.history if not h.get("skipped")]
        logs = {k: done[-1][k] for k in ("loss", "rewards/margins", "rewards/chosen", "image_rewards/margins",
                                         "logps/chosen") if done and k in done[-1]}
        logs.update(steps=total, skipped=len(trained.history) - len(done), stages=sorted({h["stage"] for h in done}))
        result.update(metrics={k: v for k, v in curve[-1].items() if k != "step"}, curve=curve, train=logs,
                      timing={"train_s": t_train})
    result.setdefault("timing", {}).update(eval_set_s=t_eval_set, run_s=time.perf_counter() - t0)
    path = run_file(args, seed, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)
    return result
