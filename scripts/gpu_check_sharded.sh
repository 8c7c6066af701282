#!/usr/bin/env bash
# The GPU check of the shipped FSDP and DeepSpeed configs (recipes/accelerate/): mfpo-train on one GPU in bf16 with
# each config against the same run without one, LoRA and full fine-tuning (reference: model), on a tiny random
# LLaVA and synthetic rows (nothing downloaded). The CPU tests (tests/train/test_sharded.py) show two processes
# train what one trains for FSDP and ZeRO-2 in float32; this runs the CUDA path those tests cannot: accelerate's
# FSDP2 and DeepSpeed engines on CUDA with bf16 autocast, DeepSpeed's JIT-built ops, ZeRO-3's gathered LM head.
#
#   scripts/gpu_checks.sh sharded-fetch         # on a machine with PyPI: deepspeed's sdist + wheels into .whl/ds/
#   scripts/gpu_checks.sh sharded [OUTDIR]      # on the GPU machine: about 4-6 minutes, installs included
#
# Prints (and writes to OUTDIR/sharded.txt) one line per run:
#   fsdp_lora.yaml lora: 6 steps, max |loss - plain| 0.0012, max |final weight - plain| 0.0008: same
# "same" when every step's loss is within 0.02 of the plain run's and every final weight within 0.02 (bf16
# rounding over 6 steps), else "DIFFERS"; a run that fails prints its last error lines. Exit status 1 if any differs.
set -uo pipefail

part=${1:-sharded}
out=${2:-${OUT:-gpu-results}}
DS_WHEELS=(hjson==3.1.0 ninja==1.13.2 py-cpuinfo==9.0.0 msgpack==1.2.4 einops==0.8.2 pydantic==2.14.4
           pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)  # deepspeed's, as pip resolved them here

if [ "$part" = sharded-fetch ]; then
  python3 -m pip download --no-deps --no-binary deepspeed -d .whl/ds deepspeed==0.19.8 || exit 1
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl/ds "${DS_WHEELS[@]}"
  exit $?
fi

mkdir -p "$out"
site=/tmp/site-ds
if compgen -G ".whl/ds/*.whl" >/dev/null; then  # DeepSpeed compiles its ops when first used (ninja, the CUDA toolkit)
  python3 -m pip install -q --no-index --no-deps --target "$site" .whl/ds/*.whl .whl/*.whl 2>&1 | tail -2
  DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" \
    .whl/ds/deepspeed-*.tar.gz 2>&1 | tail -2
  export PYTHONPATH="$site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PATH="$site/bin:$PATH"
python3 -c "import torch, accelerate, deepspeed; print('torch', torch.__version__, '| accelerate', accelerate.__version__,
'| deepspeed', deepspeed.__version__, '|', torch.cuda.get_device_name(0))" 2>&1 | tail -1 | tee "$out/sharded.txt"

work=$(mktemp -d)
python3 -m mfpo_train.cli make-tiny-model "$work/model" >/dev/null || exit 1
python3 -c "from mfpo_train.synthetic import write_build_output; write_build_output('$work/data', n=12)" || exit 1
train() {  # train NAME CONFIG|- SETS...: one mfpo-train run on the GPU, its metrics in $work/NAME
  local name=$1 config=$2
  shift 2
  local launch=(--num_processes 1 --mixed_precision bf16)
  [ "$config" != - ] && launch=(--config_file "recipes/accelerate/$config" "${launch[@]}")
  timeout 150 python3 -m accelerate.commands.launch "${launch[@]}" -m mfpo_train.cli --config debug \
    --set "model.name_or_path=$work/model" --set "data.dataset=$work/data" --set "train.output_dir=$work/$name" \
    --set train.report_to=[] --set train.save_every=3 --set train.batch_size=2 --set train.mixed_precision=bf16 \
    "$@" >"$out/$name.log" 2>&1
}
compare() {  # compare NAME PLAIN LABEL
  python3 - "$work/$1" "$work/$2" "$3" <<'EOF'
import json, sys
from pathlib import Path
from safetensors.torch import load_file
run, plain, label = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
got = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
want = [json.loads(l) for l in (plain / "metrics.jsonl").read_text().splitlines()]
dloss = max(abs(a["loss"] - b["loss"]) for a, b in zip(got, want, strict=True))
name = "adapter_model.safetensors" if (plain / "final" / "adapter_model.safetensors").is_file() else "model.safetensors"
a, b = load_file(str(run / "final" / name)), load_file(str(plain / "final" / name))
dw = max(float((a[k].float() - b[k].float()).abs().max()) for k in b if not k.endswith("k_proj.bias"))
same = len(got) == len(want) and dloss < 0.02 and dw < 0.02
print(f"{label}: {len(got)} steps, max |loss - plain| {dloss:.4f}, max |final weight - plain| {dw:.4f}: "
      f"{'same' if same else 'DIFFERS'}")
sys.exit(0 if same else 1)
EOF
}
status=0
for kind in lora full; do
  sets=()
  [ "$kind" = full ] && sets=(--set lora.enabled=false --set reference=model --set optim.lr=1.0e-4)
  train "plain-$kind" - "${sets[@]}" || { echo "plain $kind: failed" | tee -a "$out/sharded.txt"; tail -3 "$out/plain-$kind.log"; exit 1; }
  configs=(deepspeed_zero2.yaml deepspeed_zero3.yaml)
  [ "$kind" = lora ] && configs=(fsdp_lora.yaml "${configs[@]}") || configs=(fsdp_full.yaml "${configs[@]}")
  for config in "${configs[@]}"; do
    name="${config%.yaml}-$kind"
    if train "$name" "$config" "${sets[@]}"; then
      compare "$name" "plain-$kind" "$config $kind" 2>&1 | tee -a "$out/sharded.txt"
      [ "${PIPESTATUS[0]}" = 0 ] || status=1
    else
      echo "$config $kind: failed ($out/$name.log):" | tee -a "$out/sharded.txt"
      grep -v '^\s*$' "$out/$name.log" | tail -3 | tee -a "$out/sharded.txt"
      status=1
    fi
  done
done
rm -rf "$work"
exit $status
