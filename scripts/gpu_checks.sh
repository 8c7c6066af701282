#!/usr/bin/env bash
# The checks that need a GPU, as two prepared runs: the build with full-size random Grounding DINO, SAM and
# SD inpainting (benchmarks/build_overlap.py --gpu) and the training step of a random LLaVA-1.5-7B-shaped
# model in bf16 against TRL (benchmarks/train_step.py --llava-7b). Nothing is downloaded: the models are
# built from configs, and the packages the GPU machine lacks travel as wheels.
#
#   scripts/gpu_checks.sh fetch          # on a machine with PyPI: the wheels into .whl/ (about 38 MB, py3.12)
#   scripts/gpu_checks.sh build [OUTDIR] # on the GPU machine: about 3-6 min
#   scripts/gpu_checks.sh train [OUTDIR] # on the GPU machine: about 5-8 min
#
# `build` and `train` install .whl/*.whl into /tmp/site when .whl/ exists, print the versions they run
# with, and write their tables, JSON and logs into OUTDIR (default: $OUT, else gpu-results/).
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

if [ "$part" = build ]; then
  timeout 500 python3 -m benchmarks.build_overlap --gpu --quiet --json "$out/build_overlap_gpu.json" 2>&1 \
    | tee "$out/build_overlap_gpu.txt"
else
  timeout 540 python3 -m benchmarks.train_step --llava-7b --shapes short,long --rounds 3 --warmup 1 --mem-steps 1 \
    2>&1 | tee "$out/train_step_llava7b.txt"
fi
