#!/usr/bin/env bash
# The checks that need a GPU, as prepared runs of about 8 minutes each on one card, installs included. Nothing is
# downloaded: the models are built from configs with random weights, and the packages a bare GPU machine lacks
# travel as wheels.
#
#   scripts/gpu_checks.sh fetch          # on a machine with PyPI: the wheels into .whl/ (about 38 MB, py3.12)
#   scripts/gpu_checks.sh build [OUTDIR] # on the GPU machine: benchmarks/build_overlap.py --gpu, 64 images
#   scripts/gpu_checks.sh train [OUTDIR] # on the GPU machine: benchmarks/train_step.py --llava-7b, 3 processes
#
# Card: one NVIDIA GPU with 80 GB (A100 80GB, H100 80GB, H200). `build` holds full-size random Grounding DINO
# (Swin-T), SAM ViT-B and Stable Diffusion 1.5 inpainting (under 10 GB with their batches); `train` runs three
# processes, each timing TRL's DPO step against one MFPO variant (short answers: mfpo_online; long answers:
# mfpo_online, then mfpo_precomputed) on a random LLaVA-1.5-7B-shaped model in bf16: two 7B copies (about 28 GB)
# plus one step's activations at a time, measured with torch's allocator in the same process.
# Reads: the repository (tracked files) and .whl/ (git-ignored: the wheels of `fetch`; without it the machine's
# own packages are used). Writes: OUTDIR (default $OUT, else gpu-results/, git-ignored): gpu.txt (card, driver,
# versions), one .txt table per run, .json figures, and timings.txt (seconds per step of this script).
# Each step has a time limit (`timeout`), so a check cannot run past about 8 minutes; what it had printed stays.
set -uo pipefail

WHEELS=(datasets==5.2.0 datatrove==0.10.1 diffusers==0.42.1 trl==1.16.0 pycocotools==2.0.11 loguru==0.7.3
        dill==0.4.1 multiprocess==0.70.19 importlib_metadata==10.2.0 transformers==5.24.0)  # the tested versions
part=${1:-}
out=${2:-${OUT:-gpu-results}}

# -- sharded: FSDP and DeepSpeed ZeRO-2 / ZeRO-3 on one GPU, bf16, against the same run without them -----------
#   scripts/gpu_checks.sh sharded-fetch      # on a machine with PyPI: deepspeed's sdist and wheels into .whl/ds/
#   scripts/gpu_checks.sh sharded [OUTDIR]   # on the GPU machine: about 4-6 min; prints one line per config
if [ "$part" = sharded ] || [ "$part" = sharded-fetch ]; then
  exec bash "$(dirname "$0")/gpu_check_sharded.sh" "$part" "$out"
fi

case "$part" in
  fetch)
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    exit $?
    ;;
  build|train) ;;
  *)
    echo "usage: scripts/gpu_checks.sh fetch | build [OUTDIR] | train [OUTDIR]" >&2
    exit 2
    ;;
esac

mkdir -p "$out"
started=$SECONDS
stamp() { echo "$1: $((SECONDS - started)) s" | tee -a "$out/timings.txt"; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, transformers, datasets, datatrove, diffusers, trl; print('torch', torch.__version__,
'| transformers', transformers.__version__, '| datasets', datasets.__version__, '| datatrove', datatrove.__version__,
'| diffusers', diffusers.__version__, '| trl', trl.__version__)" | tee -a "$out/gpu.txt" || exit 1
stamp "installs and imports"

status=0
if [ "$part" = build ]; then
  timeout 420 python3 -m benchmarks.build_overlap --gpu --gpu-images 64 --gpu-warmup 4 --quiet \
    --json "$out/build_overlap_gpu.json" 2>&1 | tee "$out/build_overlap_gpu.txt" || status=1
  stamp "build_overlap --gpu"
else
  # TRL and one MFPO variant per process: two 7B copies, nothing deep-copied (benchmarks/train_step.py).
  for run in "short mfpo_online" "long mfpo_online" "long mfpo_precomputed"; do
    set -- $run
    timeout 140 python3 -m benchmarks.train_step --llava-7b --shapes "$1" --variants "$2" --rounds 3 --warmup 1 \
      --mem-steps 1 --json "$out/train_step_llava7b_$1_$2.json" 2>&1 | tee "$out/train_step_llava7b_$1_$2.txt" || status=1
    stamp "train_step --llava-7b $1 $2"
  done
fi
exit $status
