"""What the benchmark trains, and the kinds of task it is made of (each cached on disk by a key).

  sft                      the SFT model every seed starts from (one per run of    OUT/sft-{key}/
                           the benchmark: the paper's setting, one base model)
  data(seed, regime, reg)  the seed's correction pairs of one regime as an mfpo     OUT/seed{S}/data-{regime}-{region}-{key}/
                           dataset for one image-negative region, with the SFT
                           model's reference log-probs
  run(seed, name)          one `mfpo_train.train.train(cfg)` run from the SFT      OUT/seed{S}/runs/{name}.json
                           checkpoint, evaluated at its last checkpoints
  determinism(seed)        the same short run at 1 and at 2 torch threads, twice   OUT/seed{S}/determinism.json

A task whose output exists with the same key is not redone (its result comes back with `"reused": true` and
the CPU seconds it recorded when it ran), so one invocation reuses the SFT checkpoint and the reference
log-probs of a seed across all tables, and a rerun with the same `--out` picks up where a killed one stopped. Keys cover every setting that changes the output, the torch thread count among them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.efficacy import data, pairs
from benchmarks.efficacy.evaluate import eval_set, evaluate
from benchmarks.efficacy.sft import sft


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

VERSION = 5  # bump when a change to the benchmark's code changes its numbers: old cache entries are not reused
REGIMES = ("shortcut", "natural")  # the knob at its two ends: --prior-fraction, and the uniform error rate


@dataclass(frozen=True)
class Run:
    name: str
    region: str | None  # the image-negative region of its dataset (pairs.REGIONS); None: no training (SFT)
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (text, image, margin)
    eta: float = 0.0
    curriculum: bool = False  # easy -> medium -> hard (entropy tertiles) instead of one end-to-end stage
    regime: str = "shortcut"
    about: str = ""


RUNS = {r.name: r for r in (
    Run("sft", None, about="the SFT model every run starts from (and the reference)"),
    Run("dpo", "key", (1.0, 0.0, 0.0), about="L_text only (plain DPO)"),
    Run("mfpo", "key", about="L_text + L_image + L_margin, eta 0, key-region negatives, end-to-end"),
    Run("mfpo-no-image", "key", (1.0, 0.0, 1.0), about="MFPO without L_image (Table 4)"),
    Run("mfpo-no-margin", "key", (1.0, 1.0, 0.0), about="MFPO without L_margin (Table 4)"),
    Run("mfpo-no-text", "key", (0.0, 1.0, 1.0), about="MFPO without L_text (Table 4)"),
    Run("mfpo-eta0.2", "key", eta=0.2, about="L_margin with eta 0.2 (Table 5)"),
    Run("mfpo-eta0.4", "key", eta=0.4, about="L_margin with eta 0.4 (Table 5)"),
    Run("mfpo-curriculum", "key", curriculum=True, about="easy -> medium -> hard, same pairs and steps (Table 7)"),
    Run("mfpo-global", "global", about="image negative: diffusion noise over the whole image (Table 8)"),
    Run("mfpo-random20", "random20", about="image negative: noise in a random rectangle of 20% of the image (Table 8)"),
    Run("mfpo@natural", "key", regime="natural", about="MFPO on pairs at the natural error rate (negative control)"),
    Run("mfpo-no-image@natural", "key", (1.0, 0.0, 1.0), regime="natural",
        about="MFPO without L_image at the natural error rate (negative control)"),
)}


# -- keys and paths ------------------------------------------------------------------------------------
def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:12]


def sft_key(args) -> str:
    return _key("sft", args.sft_seed, args.p_prior, args.p_co, args.hidden, args.layers, args.vision_hidden, args.sft_steps,
                args.sft_examples, args.sft_lr, args.sft_batch, args.threads)


def prior_fraction(args, regime: str) -> float | None:
    return args.prior_fraction if regime == "shortcut" else None


def data_key(args, seed: int, regime: str, region: str) -> str:
    return _key("data", sft_key(args), seed, regime, region, args.pref_pairs, prior_fraction(args, regime))


def train_settings(args) -> tuple:
    return (args.steps, args.save_every, args.lr, args.beta, args.batch, args.max_grad_norm)


def run_key(args, seed: int, name: str) -> str:
    run = RUNS[name]
    upstream = data_key(args, seed, run.regime, run.region) if run.region else sft_key(args)
    train = None if run.region is None else train_settings(args)
    return _key("run", upstream, seed, asdict(run), train, args.n_eval, args.n_probe, args.checkpoints)


def seed_dir(args, seed: int) -> Path:
    return Path(args.out) / f"seed{seed}"


def sft_dir(args) -> Path:
    return Path(args.out) / f"sft-{sft_key(args)}"


def data_dir(args, seed: int, regime: str, region: str) -> Path:
    return seed_dir(args, seed) / f"data-{regime}-{region}-{data_key(args, seed, regime, region)}"


def run_file(args, seed: int, name: str) -> Path:
    return seed_dir(args, seed) / "runs" / f"{name}.json"


def cached_json(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("key") == key else None


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


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)


@contextlib.contextmanager
def quiet(verbose: bool):
    """mfpo-train's progress bars and warnings go to stderr; keep them out of the report unless --verbose."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stderr(io.StringIO()):
            yield


# -- tasks ---------------------------------------------------------------------------------------------
def task_sft(args) -> dict:
    final = sft_dir(args)
    info = final / "sft_info.json"
    if info.is_file():
        return {**json.loads(info.read_text()), "reused": True}
    t0 = time.process_time()
    tmp = _fresh(final.with_name(final.name + ".tmp"))
    result = {**sft(args, args.sft_seed, tmp), "cpu_s": time.process_time() - t0}
    (tmp / "sft_info.json").write_text(json.dumps(result, indent=2))
    _publish(tmp, final)
    return result


def task_data(args, seed: int, what: tuple[str, str]) -> dict:
    regime, region = what
    final = data_dir(args, seed, regime, region)
    info = final / "data_info.json"
    if info.is_file():
        return {**json.loads(info.read_text()), "reused": True}
    t0 = time.process_time()
    tmp = _fresh(final.with_name(final.name + ".tmp"))
    model = sft_dir(args)
    pair_list = pairs.preference_pairs(seed, args.pref_pairs, args.p_prior, args.p_co, prior_fraction(args, regime))
    with quiet(args.verbose):
        scores = data.difficulty([pairs.to_sample(p, "key", seed) for p in pair_list], model)
        raw = data.build_dataset(pair_list, tmp / "raw", seed, region, scores)
        data.with_reference(train_config(args, seed, model, raw, tmp / "unused", RUNS["mfpo"]), tmp / "ref")
    shutil.rmtree(raw)
    kinds = [p.error.kind for p in pair_list]
    result = {"regime": regime, "region": region, "pairs": len(pair_list),
              "prior_driven": sum(k != "other" for k in kinds) / len(kinds),
              "errors": {k: kinds.count(k) for k in ("attr", "co", "other")}, "cpu_s": time.process_time() - t0}
    (tmp / "data_info.json").write_text(json.dumps(result, indent=2))
    _publish(tmp, final)
    return result


def train_config(args, seed: int, model_dir: Path, dataset: Path, output_dir: Path, run: Run, steps: int | None = None):
    from mfpo_train.config import load_config

    tw, iw, mw = run.weights
    clip = "null" if not args.max_grad_norm else args.max_grad_norm
    epochs = -(-args.steps * args.batch // args.pref_pairs)  # enough epochs for `steps`; max_steps stops there
    return load_config(None, [
        f"model.name_or_path={model_dir}", "model.dtype=float32", "lora.enabled=false",
        f"data.dataset={dataset}", "data.max_length=128", "data.eval_split=null", "reference=precomputed",
        "curriculum=[easy,medium,hard]" if run.curriculum else "curriculum=none",
        f"epochs_per_stage={epochs}",
        f"loss.beta={args.beta}", f"loss.text_weight={tw}", f"loss.image_weight={iw}", f"loss.margin_weight={mw}",
        f"loss.eta={run.eta}", f"optim.lr={args.lr}", "optim.scheduler=constant", "optim.warmup_ratio=0.0",
        f"optim.max_grad_norm={clip}", f"train.batch_size={args.batch}", f"train.seed={seed}",
        f"train.output_dir={output_dir}", "train.report_to=[]", f"train.save_every={args.save_every}",
        f"train.max_steps={steps or args.steps}", "train.log_every=1000000",
    ])


_EVAL_SETS: dict = {}  # per process: the seed's evaluation set, built once and shared by all its runs


def _eval_set(args, seed: int, processor) -> dict:
    key = (seed, args.n_eval, args.n_probe, args.p_prior, args.p_co)
    if key not in _EVAL_SETS:
        _EVAL_SETS.clear()  # one seed at a time is enough; keeps memory flat
        _EVAL_SETS[key] = eval_set(seed, args.n_eval, processor, args.n_probe, (args.p_prior, args.p_co))
    return _EVAL_SETS[key]


def checkpoint_steps(args) -> list[int]:
    """The checkpoints a run is evaluated at: the last `args.checkpoints` saves, `save_every` apart."""
    last = args.steps - args.steps % args.save_every if args.steps % args.save_every else args.steps
    return [s for s in range(last - (args.checkpoints - 1) * args.save_every, last + 1, args.save_every) if s > 0]


def task_run(args, seed: int, name: str) -> dict:
    """Train `name` from the seed's SFT model (or just evaluate it), evaluating its last checkpoints."""
    key = run_key(args, seed, name)
    cached = cached_json(run_file(args, seed, name), key)
    if cached is not None:
        return {**cached, "reused": True}
    from safetensors.torch import load_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mfpo_train.checkpoint import checkpoint_dir
    from mfpo_train.train import train

    run, model_dir = RUNS[name], sft_dir(args)
    t0 = time.process_time()
    processor = AutoProcessor.from_pretrained(model_dir)
    ev = _eval_set(args, seed, processor)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    result = {"name": name, "seed": seed, "key": key}
    if run.region is None:
        result.update(checkpoints=[{"step": 0, **evaluate(model, processor, ev, in_dist=True)}], train={})
        result["timing"] = {"cpu_s": time.process_time() - t0}
    else:
        out = _fresh(seed_dir(args, seed) / "train" / name)
        dataset = data_dir(args, seed, run.regime, run.region) / "ref"
        with quiet(args.verbose):
            trained = train(train_config(args, seed, model_dir, dataset, out, run))
        t_train = time.process_time() - t0
        checkpoints = []
        steps = checkpoint_steps(args)
        for step in steps:
            load_model(model, str(checkpoint_dir(out, step) / "model" / "model.safetensors"))
            checkpoints.append({"step": step, **evaluate(model, processor, ev, full=step == steps[-1])})
        shutil.rmtree(out)  # checkpoints of our own run, evaluated
        done = [h for h in trained.history if not h.get("skipped")]
        logs = {k: done[-1][k] for k in ("loss", "rewards/margins", "rewards/chosen", "image_rewards/margins",
                                         "logps/chosen") if done and k in done[-1]}
        logs.update(steps=trained.state.global_step, skipped=len(trained.history) - len(done),
                    stages=sorted({h["stage"] for h in done}))
        result.update(checkpoints=checkpoints, train=logs)
        result["timing"] = {"train_cpu_s": t_train, "cpu_s": time.process_time() - t0}
    _write_json(run_file(args, seed, name), result)
    return result


def per_seed_metric(result: dict, metric: str) -> float:
    """The seed's value of `metric`: the mean over the run's last `--checkpoints` checkpoints (POPE and the probes,
    measured at the last one only, are that one's value)."""
    values = [c[metric] for c in result["checkpoints"] if metric in c]
    return sum(values) / len(values)
