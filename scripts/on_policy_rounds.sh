#!/usr/bin/env bash
# On-policy rounds: sample the current policy, label its answers by CHAIR, train on them, evaluate, repeat.
#
#   mfpo-train make-tiny-model runs/tiny-llava && scripts/on_policy_rounds.sh      # 2 tiny rounds on a CPU
#
#   ROUNDS=3 BASE=llava-hf/llava-1.5-7b-hf RECIPE=coco_on_policy_7b TRAIN=llava15_7b_lora OUT=runs/llava15-on-policy \
#   BUILD_SET="source.root=/data/coco executor.tasks=8 executor.workers=8" \
#   TRAIN_CMD="accelerate launch --num_processes 1 --mixed_precision bf16 -m mfpo_train.cli" \
#   EVAL_ARGS="--benchmarks objhal,pope,amber --coco-root /data/coco --amber-root AMBER/data" \
#   scripts/on_policy_rounds.sh
#
# Round r writes OUT/round{r}/:
#   pairs/   mfpo-data build --recipe RECIPE: the answers of the current policy (round 1: BASE; round r: the
#            previous round's policy + its adapter, source.model + source.adapter), labelled by CHAIR
#   train/   mfpo-train --config TRAIN on pairs/: LoRA on the current policy, which is also the reference
#   eval/    mfpo-eval run: the round's model (policy + train/final) against BASE, in one run
#   merged/  mfpo-train merge-adapter: policy + train/final as one model folder, the next round's policy
# Rerunning the script resumes: builds and evaluations resume themselves, finished training and merges are kept.
set -euo pipefail

ROUNDS=${ROUNDS:-2}
BASE=${BASE:-runs/tiny-llava}
RECIPE=${RECIPE:-coco_on_policy}
TRAIN=${TRAIN:-debug}
OUT=${OUT:-runs/on-policy}
BUILD_SET=${BUILD_SET:-}
TRAIN_SET=${TRAIN_SET:-}
TRAIN_CMD=${TRAIN_CMD:-mfpo-train}
EVAL_ARGS=${EVAL_ARGS:---benchmarks objhal,pope --max-new-tokens 16}

sets() { for kv in $1; do printf -- '--set %s ' "$kv"; done; }

policy=$BASE        # the model the round samples and trains (a merged folder after round 1)
adapter=""          # the adapter of the previous round, sampled on top of the policy's base
policy_base=$BASE   # what that adapter was trained on
for ((r = 1; r <= ROUNDS; r++)); do
  dir=$OUT/round$r
  echo "== round $r: pairs from ${adapter:+$policy_base + }${adapter:-$policy} -> $dir"
  if [[ -n $adapter ]]; then
    # shellcheck disable=SC2046
    mfpo-data build --recipe "$RECIPE" --output "$dir/pairs" --set "source.model=$policy_base" \
      --set "source.adapter=$adapter" $(sets "$BUILD_SET")
  else
    # shellcheck disable=SC2046
    mfpo-data build --recipe "$RECIPE" --output "$dir/pairs" --set "source.model=$policy" $(sets "$BUILD_SET")
  fi
  if [[ ! -f $dir/train/final/adapter_config.json ]]; then
    # shellcheck disable=SC2046
    $TRAIN_CMD --config "$TRAIN" --set "model.name_or_path=$policy" --set "data.dataset=$dir/pairs" \
      --set "train.output_dir=$dir/train" $(sets "$TRAIN_SET")
  fi
  # shellcheck disable=SC2086
  mfpo-eval run --model "$policy" --adapter "$dir/train/final" --base "$BASE" $EVAL_ARGS --out "$dir/eval"
  if [[ ! -f $dir/merged/config.json ]]; then
    mfpo-train merge-adapter "$dir/train/final" "$dir/merged" --model "$policy"
  fi
  policy_base=$policy
  adapter=$dir/train/final
  policy=$dir/merged
done
echo "== $ROUNDS rounds in $OUT: pairs/, train/, eval/results.md and merged/ per round"
