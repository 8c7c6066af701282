"""Build time with the model stages overlapped with the CPU work, against the CPU-only build and the model alone.

    python -m benchmarks.build_overlap                                # CPU, simulated model (~4 min on 2 cores)
    python -m benchmarks.build_overlap --images 400 --repeat 5 --json overlap.json
    python -m benchmarks.build_overlap --gpu --json gpu.json          # full-size random models, one GPU (~5 min)
    python -m benchmarks.build_overlap --gpu --gpu-allow-cpu --tiny   # the GPU mode's code path, tiny models, CPU

**CPU mode** (default). Grounding and segmentation run a simulated model: each batch call takes turns on
one simulated device (a lock, as two stages share one GPU) and sleeps `--cost` seconds there, which
holds no GIL, as a GPU call does not, then returns COCO's ground truth, so the rows are real. The
default recipe (`coco`, CPU perturbation and PNG encoding) on the bundled COCO sample repeated
(`build_throughput.repeated_coco`), one task, one worker. In one run, median of `--repeat`:
- `cpu_only`: the overlapped build with a cost of 0 (the calls are still counted): the CPU work as the
  default settings do it (PNG encoding on `output.encode_threads` threads, stages in their own threads);
- `backend_alone`: the time the simulated model spent in its calls (calls x cost, sleeps as measured);
- `sequential`: the build with the cost, `executor.overlap=false` and `output.encode_threads=0`: one thread
  runs everything, as before the overlap (about the sum);
- `overlapped`: the build with the cost and `executor.overlap=true` (the defaults).
The default cost makes `backend_alone` equal to `cpu_only` (cost = the first cpu_only build / its calls),
the case where the sum is twice the larger of the two. The three kinds of build take turns in each
repeat (in a rotating order), so a change in the machine's load falls on all of them.
Target: overlapped <= 1.15 x max(cpu_only, backend_alone). A column gives rank 0's own time (datatrove's
task log): the build less indexing, start-up and finalize, which the overlap does not touch. The
sequential and overlapped builds must give byte-identical parquet files (their sha256 is compared).

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
The defaults (128 images, 8 to warm up) fit one device call of 8 minutes: building and saving the models
takes under a minute, SD's 30 steps per pair dominate the rest.
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

from benchmarks.build_throughput import PAIRS_PER_IMAGE, build, repeated_coco
from mfpo_data.backends.coco_gt import CocoGtGrounder, CocoGtSegmenter


os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET = 1.15  # overlapped build <= TARGET x max(cpu_only, backend_alone)
COCO_TRAIN_IMAGES, PLANNING_GPUS, PLANNING_HOURS = 118_000, 8, 2.0
MODULE = "benchmarks.build_overlap"  # the registry imports the simulated backends from here (not __main__)

# ---------------------------------------------------------------------------------------------- CPU mode

_DEVICE = threading.Lock()  # the one simulated accelerator: the model stages take turns on it
_CLOCK = {"calls": 0, "busy_s": 0.0}


def simulated_call(cost_s: float) -> None:
    """One batch on the simulated device: wait for it, then `cost_s` of wall time that holds no GIL."""
    with _DEVICE:
        start = time.perf_counter()
        if cost_s > 0:
            time.sleep(cost_s)
        _CLOCK["calls"] += 1
        _CLOCK["busy_s"] += time.perf_counter() - start


class SimulatedGrounder(CocoGtGrounder):
    """COCO ground-truth boxes after `cost_s` seconds per batch on the simulated device."""

    backend = "simulated"

    def __init__(self, cost_s: float = 0.0):
        self.cost_s = cost_s

    def ground(self, samples, phrases):
        simulated_call(self.cost_s)
        return super().ground(samples, phrases)


class SimulatedSegmenter(CocoGtSegmenter):
    """COCO ground-truth masks after `cost_s` seconds per batch on the simulated device."""

    backend = "simulated"

    def __init__(self, cost_s: float = 0.0):
        self.cost_s = cost_s

    def segment(self, samples):
        simulated_call(self.cost_s)
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


def timed_build(root: Path, n_images: int, out: Path, extra: list[str]) -> dict:
    """One build of the first `n_images` images: wall time, rows, the simulated model's calls and busy time,
    the rows' digest. The output folder is removed afterwards (only its digest is kept)."""
    _CLOCK.update(calls=0, busy_s=0.0)
    with quiet():
        wall, rows = build(root, n_images, out, 1, 1, extra)
    digest, shards = rows_digest(out)
    rank = rank_seconds(out)
    shutil.rmtree(out)
    return {"wall_s": wall, "rank_s": rank, "rows": rows, "calls": _CLOCK["calls"], "model_s": _CLOCK["busy_s"],
            "sha256": digest, "shards": shards}  # fmt: skip


def spread(values: list[float]) -> dict:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs_s": values}


def cpu_mode(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="mfpo-overlap-") as tmp, simulated_backends():
        tmp = Path(tmp)
        root, _ = repeated_coco(tmp / "coco", args.images * PAIRS_PER_IMAGE)
        model = [f"{s}.backend=simulated" for s in SIMULATED] + [
            f"{s}.batch_size={args.batch_size}" for s in SIMULATED
        ]
        modes = {
            "sequential": ["executor.overlap=false", "output.encode_threads=0"],
            "overlapped": ["executor.overlap=true"],
        }
        extra = [*model, *args.extra]
        timed_build(root, min(4, args.images), tmp / "warmup", extra)  # imports, page cache
        runs: dict[str, list[dict]] = {"cpu_only": [], "sequential": [], "overlapped": []}
        settings = {"cpu_only": [*extra, *modes["overlapped"]]}

        def once(name: str, r: int) -> None:
            runs[name].append(timed_build(root, args.images, tmp / f"{name}-{r}", settings[name]))
            print(f"{name} {r + 1}/{args.repeat}: {runs[name][-1]['wall_s']:.2f} s", flush=True)

        once("cpu_only", 0)  # its calls (and time, unless --cost) set the cost
        cost = (
            args.cost
            if args.cost is not None
            else runs["cpu_only"][0]["wall_s"] / max(runs["cpu_only"][0]["calls"], 1)
        )
        costed = [*extra, *[f"{s}.cost_s={cost}" for s in SIMULATED]]
        settings.update({name: [*costed, *m] for name, m in modes.items()})
        kinds = ["cpu_only", "sequential", "overlapped"]
        for r in range(args.repeat):  # each repeat in another order, so that the machine's load drifts onto all three
            order = kinds[r % 3 :] + kinds[: r % 3]
            for name in order[1:] if r == 0 else order:
                once(name, r)
    return cpu_report(args, runs, cost, modes)


def cpu_report(args, runs: dict[str, list[dict]], cost: float, modes: dict) -> dict:
    costed = runs["sequential"] + runs["overlapped"]
    all_runs = runs["cpu_only"] + costed
    rows = runs["cpu_only"][0]["rows"]
    times = {name: spread([run["wall_s"] for run in rs]) for name, rs in runs.items()}
    times["backend_alone"] = spread([run["model_s"] for run in costed])
    cpu_only, backend = times["cpu_only"]["median_s"], times["backend_alone"]["median_s"]
    larger = max(cpu_only, backend)
    overlapped = times["overlapped"]["median_s"] / larger
    # the same inside rank 0 alone: what the overlap can change (indexing, start-up and finalize are outside it)
    rank = {name: [run["rank_s"] for run in rs] for name, rs in runs.items()}
    rank = {name: spread(v) for name, v in rank.items() if None not in v}
    rank_ratio = (
        rank["overlapped"]["median_s"] / max(rank["cpu_only"]["median_s"], backend) if len(rank) == 3 else None
    )
    digests = {run["sha256"] for run in costed}
    return {
        "mode": "cpu",
        "images": args.images,
        "rows": rows,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "model_stages": list(SIMULATED),
        "batch_size": args.batch_size,
        "cost_per_batch_s": cost,
        "calls": sorted({run["calls"] for run in all_runs}),
        "calls_x_cost_s": runs["overlapped"][0]["calls"] * cost,
        "overrides": modes,
        "times": times,
        "sum_s": cpu_only + backend,
        "max_s": larger,
        "ratios": {
            "overlapped": overlapped,
            "sequential": times["sequential"]["median_s"] / larger,
            "sum": (cpu_only + backend) / larger,
            "overlapped_rank": rank_ratio,
        },
        "rank_times": rank,
        "target": TARGET,
        "target_met": overlapped <= TARGET,
        "rows_identical": len(digests) == 1 and len({run["rows"] for run in all_runs}) == 1,
        "rows_identical_cpu_only": {run["sha256"] for run in all_runs} == digests,
        "rows_sha256": sorted(digests),
    }


def print_cpu(report: dict) -> None:
    t = report["times"]
    calls = "/".join(str(c) for c in report["calls"])
    print(f"\nbuild_overlap (CPU, simulated model): {report['images']} images, {report['rows']} pairs (the bundled COCO "
          f"sample repeated); median of {report['repeat']}; {report['cpus']} CPUs, load average "
          f"{report['load_average']:.1f} at the end")  # fmt: skip
    print(f"simulated model: {' + '.join(report['model_stages'])} on one device, {report['cost_per_batch_s'] * 1000:.1f} ms "
          f"per batch of {report['batch_size']}, {calls} calls per build")  # fmt: skip
    print(f"{'':34} {'median s':>9} {'min s':>8} {'max s':>8} {'rank 0 s':>9}")
    labels = {"cpu_only": "cpu_only (overlap on, cost 0)", "backend_alone": "backend_alone (the model's calls)",
              "sequential": "sequential (overlap off, 1 thread)", "overlapped": "overlapped (overlap on)"}  # fmt: skip
    for name, label in labels.items():
        s, rank = t[name], report["rank_times"].get(name)
        rank = f"{rank['median_s']:9.2f}" if rank else f"{'':9}"
        print(f"{label:34} {s['median_s']:9.2f} {s['min_s']:8.2f} {s['max_s']:8.2f} {rank}")
    print(f"{'sum cpu_only + backend_alone':34} {report['sum_s']:9.2f}")
    r = report["ratios"]
    mark = "met" if report["target_met"] else "NOT met"
    print(
        f"overlapped / max(cpu_only, backend_alone) = {r['overlapped']:.2f}x   (target <= {report['target']:.2f}x: {mark})"
    )
    print(f"sequential / max = {r['sequential']:.2f}x;  sum / max = {r['sum']:.2f}x")
    if r["overlapped_rank"] is not None:
        print(f"rank 0 alone (the build less indexing, start-up, finalize): overlapped / max(cpu_only, backend_alone) = "
              f"{r['overlapped_rank']:.2f}x")  # fmt: skip
    same = "identical" if report["rows_identical"] else "DIFFERENT"
    print(f"rows of every sequential and overlapped build: {same} (sha256 {', '.join(d[:16] for d in report['rows_sha256'])}); "
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
        root, _ = repeated_coco(tmp / "coco", max(args.gpu_images, args.gpu_warmup) * PAIRS_PER_IMAGE)
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
        help="CPU mode: seconds per model batch (default: the first cpu_only build / its calls)",
    )
    ap.add_argument("--batch-size", type=int, default=8, help="CPU mode: batch size of the simulated model stages")
    ap.add_argument("--gpu", action="store_true", help="full-size random models on a GPU instead")
    ap.add_argument("--gpu-images", type=int, default=128, help="GPU mode: source images of the timed build")
    ap.add_argument("--gpu-warmup", type=int, default=8, help="GPU mode: images of the warm-up build")
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
