"""Build time with the model stages overlapped with the CPU work, against the CPU-only build and the model alone.

    python -m benchmarks.build_overlap                                # CPU, simulated model (~5 min on 2 cores)
    python -m benchmarks.build_overlap --images 400 --repeat 5 --json overlap.json
    python -m benchmarks.build_overlap --policies one_stage,shared,budget --share 0.5     # how stages share a GPU
    python -m benchmarks.build_overlap --gpu --json gpu.json          # full-size random models, one GPU (~7 min)
    python -m benchmarks.build_overlap --gpu --gpu-allow-cpu --tiny   # the GPU mode's code path, tiny models, CPU

**CPU mode** (default). Grounding and segmentation run a simulated model, then return COCO's ground truth, so
the rows are real. Each batch call asks a simulated device (`SimulatedDevice`) for a fixed cost in seconds of the
whole device and holds memory there (1 unit per sample for grounding, `--segmentation-memory` for segmentation)
while it runs; calls running at once share the device (`--share`: the part of it one call fills; 1 = a call fills
it, as a large batch does a GPU). It sleeps, which holds no GIL, as a GPU call does not. How the two model stages
share the device (`--policies`): `one_stage` takes the pipeline's own turn on the device (`loading.device_turn`,
what the heavy backends do: one model stage on a GPU at a time), `shared` has no coordination (both stages' calls
at once), `budget` lets a call start when its memory fits beside the others' in `--budget` units per sample of a
batch. The default recipe (`coco`, CPU perturbation, image encoding on `output.encode_threads` threads) on the
bundled COCO sample repeated (`build_throughput.coco_folder`), one task, one worker.

Each repeat first builds `cpu_only` (the overlapped build with a cost of 0; the calls are counted), and sets its
own cost per batch to the time of that build's rank (datatrove's task log: the build less indexing, start-up and
finalize, the part where the model stages run) / its calls: the hard case, where the model alone takes as long as
the CPU work it can overlap with. (Until issue 29's last change the cost was the whole build's time / calls, which
also charged the model with indexing, start-up and finalize: the model then outlasted the CPU work by that much,
and no overlap could bring the ratio below 1 + their share of the build, about 1.17 here.) Then, in an order rotated
per repeat, the costed builds: `sequential` (`executor.overlap=false` and `output.encode_threads=0`: one thread
runs everything, about the sum) and one `overlapped` build per policy (`overlapped` is `one_stage`, the defaults).
A repeat's ratio is its overlapped build's time / max(its cpu_only, the model alone: cpu_only's time outside its
rank + the time at least one call ran, what a build whose rank did nothing but the model would take); the
model/CPU balance reached is that model time / cpu_only's rank time (1.00 is the hard case: a machine whose load
fell after the calibration gives less). A change of the machine's load between repeats thus moves both sides of
each ratio. Target: the median ratio of `overlapped` <= 1.15. A line gives the same ratio inside rank 0 alone.
Every costed build must give byte-identical parquet files (sha256 compared).

**GPU mode** (`--gpu`). `recipes/coco_grounded.yaml` with its perturbation switched to `sd_inpaint`:
Grounding DINO (Swin-T, the config of IDEA-Research/grounding-dino-tiny), SAM ViT-B (facebook/sam-vit-base)
and the Stable Diffusion 1.5 inpainting pipeline (9-channel UNet) with random weights, built from
configs written out here and saved to folders that the recipe's `model_id`s point at, as users point
at local models; `device: auto`, `dtype: auto`, the recipe's batch sizes and SD's 30 steps at 512 px.
Random detectors score every box alike, so the thresholds are lowered and `max_boxes_per_phrase` is 3:
boxes, masks and inpainted regions then reach the later stages as with real weights. A warm-up build
on `--gpu-warmup` images loads the models (once per process); the timed build of `--gpu-images` images
reports images/s per GPU, GPU utilisation and memory (nvidia-smi every second, in the background),
torch's peak allocated memory, and the hours that 118,000 COCO images would take on 8 GPUs at that rate,
next to the planning target of 2 hours. Images per second count source images (each gives several pairs).
The defaults (64 images, 4 to warm up) are sized to finish in about 7 minutes on an 80 GB card (an estimate from
SD 1.5's step time at batch 8; not yet run): building and saving the models takes about a minute, SD's 30 steps
per pair dominate the rest. `scripts/gpu_checks.sh build` runs it with a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.build_throughput import build, coco_folder
from mfpo_data.backends.coco_gt import CocoGtGrounder, CocoGtSegmenter


os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.15  # overlapped build <= TARGET x max(cpu_only, backend_alone)
COCO_TRAIN_IMAGES, PLANNING_GPUS, PLANNING_HOURS = 118_000, 8, 2.0
MODULE = "benchmarks.build_overlap"  # the registry imports the simulated backends from here (not __main__)

# ---------------------------------------------------------------------------------------------- CPU mode

POLICIES = ("one_stage", "shared", "budget")


class SimulatedDevice:
    """One accelerator, simulated. A call asks for `cost_s` seconds of the whole device and holds `memory` units
    while it runs; the calls running at once share the device (each progresses at min(1, 1 / (k * share)) with k
    of them running: `share` 1 is a call that fills the device, 0.5 one that fills half of it). Sleeping holds no
    GIL, as a GPU call does not. Counts the calls, the time at least one ran (`busy_s`: the model alone) and the
    largest memory held at once."""

    TICK_S = 0.01  # how often a running call sees how many others run beside it

    def __init__(self):
        self.lock = threading.Condition()
        self.reset()

    def reset(self, share: float = 1.0, budget: float | None = None) -> None:
        self.share, self.budget = share, budget
        self.active, self.memory, self.peak_memory, self.calls, self.busy_s, self._since = 0, 0.0, 0.0, 0, 0.0, None
        self.started = 0

    def call(self, cost_s: float, memory: float) -> None:
        with self.lock:
            if self.budget is not None:  # policy "budget": wait until this call's memory fits beside the others'
                self.lock.wait_for(lambda: self.memory == 0 or self.memory + memory <= self.budget)
            self.active += 1
            self.started += 1
            self.memory += memory
            self.peak_memory = max(self.peak_memory, self.memory)
            if self.active == 1:
                self._since = time.perf_counter()
        try:
            left = cost_s
            while left > 0:  # progress is the wall time that passed (a late wake-up, waiting for the GIL, still ran)
                with self.lock:
                    running, started = self.active, self.started
                    rate = min(1.0, 1.0 / (running * self.share))
                start = time.perf_counter()
                time.sleep(min(self.TICK_S, left / rate))
                with self.lock:  # a call that joined during the sleep shared it: count the sleep at the slower rate
                    joined = self.started - started
                    rate = min(rate, 1.0 / (max(running + joined, self.active) * self.share))
                left -= (time.perf_counter() - start) * rate
        finally:
            with self.lock:
                self.active -= 1
                self.memory -= memory
                self.calls += 1
                if self.active == 0:
                    self.busy_s += time.perf_counter() - self._since
                self.lock.notify_all()


DEVICE = SimulatedDevice()


def simulated_call(cost_s: float, memory: float, policy: str) -> None:
    """One batch on the simulated device under a coordination policy: `one_stage` takes the pipeline's own turn
    on the device (`loading.device_turn`, what heavy backends do), `shared` runs at once with the other stage's
    call (no coordination), `budget` waits until its memory fits a per-device budget (`SimulatedDevice.budget`)."""
    from mfpo_data.backends.loading import device_turn

    if policy == "one_stage":
        with device_turn("cuda:simulated"):
            DEVICE.call(cost_s, memory)
    else:
        DEVICE.call(cost_s, memory)


class SimulatedGrounder(CocoGtGrounder):
    """COCO ground-truth boxes after `cost_s` seconds per batch on the simulated device."""

    backend = "simulated"

    def __init__(self, cost_s: float = 0.0, memory: float = 1.0, policy: str = "one_stage"):
        self.cost_s, self.memory, self.policy = cost_s, memory, policy

    def ground(self, samples, phrases):
        simulated_call(self.cost_s, self.memory * len(samples), self.policy)
        return super().ground(samples, phrases)


class SimulatedSegmenter(CocoGtSegmenter):
    """COCO ground-truth masks after `cost_s` seconds per batch on the simulated device."""

    backend = "simulated"

    def __init__(self, cost_s: float = 0.0, memory: float = 1.0, policy: str = "one_stage"):
        self.cost_s, self.memory, self.policy = cost_s, memory, policy

    def segment(self, samples):
        simulated_call(self.cost_s, self.memory * len(samples), self.policy)
        return super().segment(samples)


SIMULATED = {"grounding": "SimulatedGrounder", "segmentation": "SimulatedSegmenter"}


@contextlib.contextmanager
def simulated_backends():
    """`grounding.backend: simulated` and `segmentation.backend: simulated` for the builds of this process
    (one local worker runs its rank in this process, so the counters here see every call)."""
    from mfpo_data.backends import REGISTRY

    for section, cls in SIMULATED.items():
        REGISTRY[section]["simulated"] = f"{MODULE}:{cls}"
    try:
        yield
    finally:
        for section in SIMULATED:
            REGISTRY[section].pop("simulated", None)


def rows_digest(folder: Path) -> tuple[str, int]:
    """sha256 over a build's final parquet files (names and bytes, in name order), and how many there are."""
    from mfpo_data.layout import OutputLayout
    from mfpo_data.layout import sha256_file

    h = hashlib.sha256()
    shards = OutputLayout(Path(folder)).final_shards()
    for shard in shards:
        h.update(f"{shard.name}\0{sha256_file(shard)}\n".encode())
    return h.hexdigest(), len(shards)


@contextlib.contextmanager
def quiet():
    """Keep what a build writes to stderr (datatrove's log of every rank: its stats block); show it if the build fails."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise


def rank_seconds(folder: Path) -> float | None:
    """Wall time of rank 0 alone (the build less indexing, start-up and finalize), from the timestamps of
    datatrove's "Launching pipeline" and "Processing done" lines in its task log; None without them."""
    from datetime import datetime

    from mfpo_data.layout import OutputLayout

    log = OutputLayout(Path(folder)).logging_dir / "logs" / "task_00000.log"
    stamps = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        for key, marker in (("start", "Launching pipeline for rank="), ("end", "Processing done for rank=")):
            if marker in line:
                stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
    return (stamps["end"] - stamps["start"]).total_seconds() if len(stamps) == 2 else None


def timed_build(root: Path, n_images: int, out: Path, extra: list[str], share: float = 1.0,
                budget: float | None = None) -> dict:  # fmt: skip
    """One build of the first `n_images` images: wall time, rows, the simulated device's calls, busy time and peak
    memory, the rows' digest. The output folder is removed afterwards (only its digest is kept)."""
    DEVICE.reset(share, budget)
    with quiet():
        wall, rows = build(root, n_images, out, 1, 1, extra)
    digest, shards = rows_digest(out)
    rank = rank_seconds(out)
    shutil.rmtree(out)
    return {"wall_s": wall, "rank_s": rank, "rows": rows, "calls": DEVICE.calls, "model_s": DEVICE.busy_s,
            "peak_memory": DEVICE.peak_memory, "sha256": digest, "shards": shards}  # fmt: skip


def spread(values: list[float]) -> dict:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs_s": values}


def cpu_mode(args) -> dict:
    """Each repeat: a `cpu_only` build first, whose rank's time / calls is this repeat's model cost per batch (the
    hard case: the model alone takes as long as the CPU work it overlaps with), then the costed builds in an order
    rotated per repeat."""
    policies = args.policies.split(",")
    if unknown := set(policies) - set(POLICIES):
        raise SystemExit(f"unknown policy {sorted(unknown)[0]!r}; choose from {', '.join(POLICIES)}")
    with tempfile.TemporaryDirectory(prefix="mfpo-overlap-") as tmp, simulated_backends():
        tmp = Path(tmp)
        root = coco_folder(tmp / "coco", args.images)
        model = [f"{s}.backend=simulated" for s in SIMULATED] + [f"{s}.batch_size={args.batch_size}" for s in SIMULATED]
        model += [f"segmentation.memory={args.segmentation_memory}"]
        extra = [*model, *args.extra]
        timed_build(root, min(4, args.images), tmp / "warmup", extra)  # imports, page cache
        # the costed kinds: (overrides, device policy); "overlapped" is the default pipeline (one stage at a time)
        kinds = {"sequential": (["executor.overlap=false", "output.encode_threads=0"], "one_stage")}
        kinds.update({("overlapped" if p == "one_stage" else f"overlapped_{p}"): (["executor.overlap=true"], p)
                      for p in policies})  # fmt: skip
        runs: dict[str, list[dict]] = {"cpu_only": [], **{k: [] for k in kinds}}
        repeats = []
        for r in range(args.repeat):
            cpu_only = timed_build(root, args.images, tmp / f"cpu_only-{r}", [*extra, "executor.overlap=true"])
            runs["cpu_only"].append(cpu_only)
            rank_s = cpu_only["rank_s"] if cpu_only["rank_s"] is not None else cpu_only["wall_s"]  # no task log: all of it
            outside_rank = cpu_only["wall_s"] - rank_s  # indexing, start-up, finalize: no model call runs there
            cost = args.cost if args.cost is not None else rank_s / max(cpu_only["calls"], 1)
            print(f"repeat {r + 1}/{args.repeat}: cpu_only {cpu_only['wall_s']:.2f} s (its rank {rank_s:.2f} s), "
                  f"{cpu_only['calls']} calls -> {cost * 1000:.1f} ms per batch", flush=True)  # fmt: skip
            names = list(kinds)
            names = names[r % len(names):] + names[: r % len(names)]
            this = {"cost_per_batch_s": cost, "cpu_only_s": cpu_only["wall_s"], "cpu_only_rank_s": rank_s}
            for name in names:
                overrides, policy = kinds[name]
                costed = [*extra, *[f"{s}.cost_s={cost}" for s in SIMULATED], *[f"{s}.policy={policy}" for s in SIMULATED]]
                budget = args.budget * args.batch_size if policy == "budget" else None
                run = timed_build(root, args.images, tmp / f"{name}-{r}", [*costed, *overrides], args.share, budget)
                runs[name].append(run)
                this[name] = {"wall_s": run["wall_s"], "model_s": run["model_s"], "peak_memory": run["peak_memory"],
                              "balance": run["model_s"] / rank_s,
                              "ratio": run["wall_s"] / max(cpu_only["wall_s"], outside_rank + run["model_s"])}  # fmt: skip
                print(f"  {name}: {run['wall_s']:.2f} s, model {run['model_s']:.2f} s, peak memory "
                      f"{run['peak_memory']:.0f}", flush=True)  # fmt: skip
            repeats.append(this)
    return cpu_report(args, runs, repeats, {k: v[0] for k, v in kinds.items()})


def cpu_report(args, runs: dict[str, list[dict]], repeats: list[dict], modes: dict) -> dict:
    costed = [run for name, rs in runs.items() if name != "cpu_only" for run in rs]
    all_runs = runs["cpu_only"] + costed
    times = {name: spread([run["wall_s"] for run in rs]) for name, rs in runs.items()}
    times["backend_alone"] = spread([run["model_s"] for run in runs["overlapped"]])
    ratio = {name: statistics.median(rep[name]["ratio"] for rep in repeats) for name in runs if name != "cpu_only"}
    balance = [rep["overlapped"]["balance"] for rep in repeats]
    rank = {name: [run["rank_s"] for run in rs] for name, rs in runs.items()}
    rank = {name: spread(v) for name, v in rank.items() if None not in v}
    rank_ratio = None
    if "overlapped" in rank and "cpu_only" in rank:  # inside rank 0 alone: what the overlap can change
        rank_ratio = statistics.median(run["rank_s"] / max(c["rank_s"], run["model_s"])
                                       for run, c in zip(runs["overlapped"], runs["cpu_only"], strict=True))  # fmt: skip
    digests = {run["sha256"] for run in costed}
    return {
        "mode": "cpu",
        "images": args.images,
        "rows": runs["cpu_only"][0]["rows"],
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "model_stages": list(SIMULATED),
        "batch_size": args.batch_size,
        "device_share": args.share,
        "memory_per_sample": {"grounding": 1.0, "segmentation": args.segmentation_memory},
        "budget": args.budget * args.batch_size,
        "calls": sorted({run["calls"] for run in all_runs}),
        "overrides": modes,
        "repeats": repeats,
        "times": times,
        "balance": spread(balance),
        "peak_memory": {name: max(run["peak_memory"] for run in rs) for name, rs in runs.items() if name != "cpu_only"},
        "ratios": {**ratio, "overlapped_rank": rank_ratio},
        "rank_times": rank,
        "target": TARGET,
        "target_met": ratio["overlapped"] <= TARGET,
        "rows_identical": len(digests) == 1 and len({run["rows"] for run in all_runs}) == 1,
        "rows_identical_cpu_only": {run["sha256"] for run in all_runs} == digests,
        "rows_sha256": sorted(digests),
    }


def print_cpu(report: dict) -> None:
    calls = "/".join(str(c) for c in report["calls"])
    print(f"\nbuild_overlap (CPU, simulated model): {report['images']} images, {report['rows']} pairs (the bundled COCO "
          f"sample repeated); {report['repeat']} repeats, each calibrated on its own cpu_only build; {report['cpus']} "
          f"CPUs, load average {report['load_average']:.1f} at the end")  # fmt: skip
    print(f"simulated model: {' + '.join(report['model_stages'])} on one device (a call fills {report['device_share']:.0%} "
          f"of it), batches of {report['batch_size']}, {calls} calls per build; memory per sample: grounding 1, "
          f"segmentation {report['memory_per_sample']['segmentation']:g} (budget policy: {report['budget']:g})")  # fmt: skip
    names = [n for n in report["repeats"][0] if isinstance(report["repeats"][0][n], dict)]
    print(f"| {'repeat':>6} | {'ms/batch':>8} | {'cpu_only s':>10} | " + " | ".join(f"{n + ' s / ratio':>26}" for n in names)
          + f" | {'model/CPU':>9} |")  # fmt: skip
    for i, rep in enumerate(report["repeats"], 1):
        cells = [f"{rep[n]['wall_s']:>12.2f} / {rep[n]['ratio']:>11.2f}" for n in names]
        print(f"| {i:>6} | {rep['cost_per_batch_s'] * 1000:>8.1f} | {rep['cpu_only_s']:>10.2f} | " + " | ".join(cells)
              + f" | {rep['overlapped']['balance']:>9.2f} |")  # fmt: skip
    r, b = report["ratios"], report["balance"]
    mark = "met" if report["target_met"] else "NOT met"
    print(f"overlapped / max(cpu_only, model alone + the build outside its rank), each repeat against its own cpu_only: "
          f"median {r['overlapped']:.2f}x "
          f"(target <= {report['target']:.2f}x: {mark}); model/CPU balance reached {b['median_s']:.2f} "
          f"[{b['min_s']:.2f}-{b['max_s']:.2f}] (1.00 = the hard case)")  # fmt: skip
    print("medians: " + ", ".join(f"{n} {r[n]:.2f}x" for n in names) + "; peak device memory (units): "
          + ", ".join(f"{n} {m:g}" for n, m in report["peak_memory"].items()))  # fmt: skip
    if r["overlapped_rank"] is not None:
        print(f"rank 0 alone (the build less indexing, start-up, finalize): overlapped / max(cpu_only, model alone) = "
              f"{r['overlapped_rank']:.2f}x")  # fmt: skip
    same = "identical" if report["rows_identical"] else "DIFFERENT"
    print(f"rows of every costed build: {same} (sha256 {', '.join(d[:16] for d in report['rows_sha256'])}); "
          f"cpu_only's rows the same: {'yes' if report['rows_identical_cpu_only'] else 'no'}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- GPU mode


def full_size_sd_inpaint():
    """Stable Diffusion 1.5 inpainting with random weights: the UNet (9 input channels, 859.5M parameters),
    VAE (83.7M) and CLIP ViT-L/14 text encoder (123.1M) of stable-diffusion-v1-5/stable-diffusion-inpainting,
    its PNDM schedule; the offline byte-level CLIP tokenizer (`backends.tiny`)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mfpo_data.backends.tiny import make_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)  # fmt: skip
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, sample_size=512)  # fmt: skip
    tokenizer = make_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                                hidden_act="quick_gelu", projection_dim=768,
                                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                                pad_token_id=tokenizer.pad_token_id))  # fmt: skip
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)  # fmt: skip
    return StableDiffusionInpaintPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          image_encoder=None, requires_safety_checker=False)  # fmt: skip


def save_models(root: Path, tiny: bool) -> dict[str, Path]:
    """Random-weight Grounding DINO, SAM and SD inpainting saved to folders: full size, or the tests' tiny ones."""
    if tiny:
        from mfpo_data.backends.tiny import make_tiny_grounding_dino, make_tiny_sam, make_tiny_sd_inpaint

        return {"grounding": make_tiny_grounding_dino(root / "gd"), "segmentation": make_tiny_sam(root / "sam"),
                "perturbation": make_tiny_sd_inpaint(root / "sd")}  # fmt: skip
    from benchmarks.grounding_batch import save_full_size

    gd, sam = save_full_size(root)
    full_size_sd_inpaint().save_pretrained(root / "sd")
    return {"grounding": gd, "segmentation": sam, "perturbation": root / "sd"}


def gpu_overrides(models: dict[str, Path], tiny: bool, progress: bool) -> list[str]:
    sd = f"backend: sd_inpaint, model_id: '{models['perturbation']}', revision: null, device: auto, dtype: auto"
    if tiny:  # the tests' settings for the tiny pipeline (2-block VAE)
        sd += ", resolution: 32, num_inference_steps: 2, guidance_scale: 1.0"
    return [
        f"grounding.model_id={models['grounding']}", "grounding.revision=null", "grounding.device=auto", "grounding.dtype=auto",
        "grounding.box_threshold=0.05", "grounding.text_threshold=0.05", "grounding.max_boxes_per_phrase=3",
        f"segmentation.model_id={models['segmentation']}", "segmentation.revision=null", "segmentation.device=auto",
        "segmentation.dtype=auto", "filters.max_mask_area_ratio=1.0", f"perturbation={{{sd}}}",
        f"output.progress={'true' if progress else 'false'}",
    ]  # fmt: skip


class GpuSampler:
    """`nvidia-smi`'s utilization.gpu and memory.used of one GPU every second, in a background process,
    while the `with` block runs. Without nvidia-smi (a CPU run) it samples nothing."""

    def __init__(self, gpu: str, out: Path):
        self.gpu, self.out, self.proc = gpu, out, None

    def __enter__(self):
        exe = shutil.which("nvidia-smi")
        if exe is not None:
            cmd = [
                exe,
                "-i",
                self.gpu,
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                "-l",
                "1",
            ]
            self.file = open(self.out, "w")
            self.proc = subprocess.Popen(cmd, stdout=self.file, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.file.close()

    def summary(self) -> dict:
        return parse_smi(self.out.read_text() if self.proc is not None else "")


def parse_smi(text: str) -> dict:
    """Mean and max utilisation (%) and max memory used (MiB) of nvidia-smi's `util, mem` lines; None without any."""
    samples = []
    for line in text.splitlines():
        try:
            util, mem = (float(v) for v in line.split(","))
        except ValueError:
            continue
        samples.append((util, mem))
    if not samples:
        return {"samples": 0, "util_mean_pct": None, "util_max_pct": None, "memory_max_mib": None}
    return {"samples": len(samples), "util_mean_pct": statistics.fmean(u for u, _ in samples),
            "util_max_pct": max(u for u, _ in samples), "memory_max_mib": max(m for _, m in samples)}  # fmt: skip


def gpu_mode(args) -> dict:
    import torch

    from mfpo_data.backends.loading import _LOADED
    from mfpo_data.pipeline.build import build_dataset

    cuda = torch.cuda.is_available()
    if not cuda and not args.gpu_allow_cpu:
        raise SystemExit(
            "--gpu: no CUDA GPU is visible (--gpu-allow-cpu runs this mode's code path on the CPU, with --tiny)"
        )
    gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    before = set(_LOADED)  # models this process had loaded already (another run's) are not this run's
    with tempfile.TemporaryDirectory(prefix="mfpo-overlap-gpu-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        print(
            f"building {'tiny' if args.tiny else 'full-size'} random Grounding DINO, SAM and SD inpainting ...",
            flush=True,
        )
        models = save_models(tmp / "models", args.tiny)
        construct_s = time.perf_counter() - start
        print(f"models built and saved in {construct_s:.0f} s", flush=True)
        root = coco_folder(tmp / "coco", max(args.gpu_images, args.gpu_warmup))
        extra = [*gpu_overrides(models, args.tiny, progress=not args.quiet), *args.extra]

        def run(n_images: int, out: Path) -> tuple[float, dict]:
            overrides = [f"source.root={root}", f"source.limit={n_images}", *extra]
            t = time.perf_counter()
            layout = build_dataset("coco_grounded", overrides, out)
            return time.perf_counter() - t, layout.read_stats()

        warmup_s, _ = run(args.gpu_warmup, tmp / "warmup")  # loads the models (once per process) and warms the kernels
        print(f"warm-up build of {args.gpu_warmup} images (model loading included): {warmup_s:.0f} s", flush=True)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with GpuSampler(gpu, tmp / "smi.csv") as sampler:
            wall, stats = run(args.gpu_images, tmp / "timed")
        smi = sampler.summary()
        peak = torch.cuda.max_memory_allocated() if cuda else None
    per_s = args.gpu_images / wall
    hours = COCO_TRAIN_IMAGES / (per_s * PLANNING_GPUS) / 3600
    loaded = {
        f"{k[0]} {Path(str(k[1])).name}": {"device": str(k[-2]), "dtype": str(k[-1])}
        for k in _LOADED
        if k not in before
    }
    return {
        "mode": "gpu",
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)",
        "models": "tiny" if args.tiny else "full-size",
        "loaded": loaded,
        "images": args.gpu_images,
        "rows": stats["rows"],
        "dropped": stats.get("dropped") or {},
        "construct_s": construct_s,
        "warmup_s": warmup_s,
        "wall_s": wall,
        "images_per_s_per_gpu": per_s,
        "pairs_per_s_per_gpu": stats["rows"] / wall,
        "gpu_util": smi,
        "torch_peak_allocated_gib": peak / 2**30 if peak is not None else None,
        "projected_hours": hours,
        "projection": {"images": COCO_TRAIN_IMAGES, "gpus": PLANNING_GPUS, "target_hours": PLANNING_HOURS},
        "target_met": hours <= PLANNING_HOURS,
    }


def print_gpu(report: dict) -> None:
    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    smi, p = report["gpu_util"], report["projection"]
    print(f"\nbuild_overlap (GPU): recipes/coco_grounded.yaml + sd_inpaint, {report['models']} random models, "
          f"{report['device']}")  # fmt: skip
    for name, where in report["loaded"].items():
        print(f"  {name}: {where['device']}, {where['dtype']}")
    print(
        f"models built in {report['construct_s']:.0f} s; warm-up build (loading included) {report['warmup_s']:.0f} s"
    )
    print(f"{'images (source)':34} {report['images']:>10}")
    print(f"{'pairs written':34} {report['rows']:>10}")
    print(f"{'wall s':34} {report['wall_s']:10.1f}")
    print(f"{'images/s per GPU':34} {report['images_per_s_per_gpu']:10.2f}")
    print(f"{'pairs/s per GPU':34} {report['pairs_per_s_per_gpu']:10.2f}")
    print(f"{'GPU utilisation mean / max %':34} {num(smi['util_mean_pct'], '.0f'):>5} / {num(smi['util_max_pct'], '.0f')}"
          f"  ({smi['samples']} samples)")  # fmt: skip
    print(f"{'GPU memory used max (nvidia-smi)':34} {num(smi['memory_max_mib'], '.0f'):>10} MiB")
    print(f"{'torch peak allocated':34} {num(report['torch_peak_allocated_gib'], '.2f'):>10} GiB")
    mark = "met" if report["target_met"] else "NOT met"
    print(f"projected: {p['images']:,} images on {p['gpus']} GPUs = {report['projected_hours']:.2f} h "
          f"(planning target {p['target_hours']:.0f} h: {mark})")  # fmt: skip
    if report["dropped"]:
        print(f"dropped: {report['dropped']}")


# ---------------------------------------------------------------------------------------------- entry point


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200, help="CPU mode: source images per build")
    ap.add_argument("--repeat", type=int, default=3, help="CPU mode: builds of each kind (the median is reported)")
    ap.add_argument(
        "--cost",
        type=float,
        default=None,
        help="CPU mode: seconds per model batch (default: each repeat's cpu_only build / its calls)",
    )
    ap.add_argument("--batch-size", type=int, default=8, help="CPU mode: batch size of the simulated model stages")
    ap.add_argument("--policies", default="one_stage,shared",
                    help=f"CPU mode: how the model stages share the device, from {', '.join(POLICIES)} (one_stage: the "
                         "pipeline's own; each policy is one overlapped build per repeat)")
    ap.add_argument("--share", type=float, default=1.0, help="CPU mode: the part of the device one call fills (0-1]")
    ap.add_argument("--segmentation-memory", type=float, default=2.0,
                    help="CPU mode: device memory per sample of segmentation (grounding's is 1)")
    ap.add_argument("--budget", type=float, default=2.0,
                    help="CPU mode, policy budget: the device's memory in units per sample of a batch")
    ap.add_argument("--gpu", action="store_true", help="full-size random models on a GPU instead")
    ap.add_argument("--gpu-images", type=int, default=64, help="GPU mode: source images of the timed build")
    ap.add_argument("--gpu-warmup", type=int, default=4, help="GPU mode: images of the warm-up build")
    ap.add_argument("--gpu-allow-cpu", action="store_true", help="GPU mode without a GPU (a smoke run, with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="GPU mode: the tests' tiny models instead of full-size ones")
    ap.add_argument("--quiet", action="store_true", help="GPU mode: no progress bar")
    ap.add_argument("--set", dest="extra", action="append", default=[], help="recipe override for every build")
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = gpu_mode(args) if args.gpu else cpu_mode(args)
    (print_gpu if args.gpu else print_cpu)(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    # Run as the importable module, so that the registry's "benchmarks.build_overlap:..." classes and the
    # call counters they update are the ones this run reads (not a second copy of this file).
    from benchmarks.build_overlap import main as _main

    _main(sys.argv[1:])
