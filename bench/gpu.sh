#!/usr/bin/env bash
# Every GPU measurement in one device call: eval speed, training speed, a reference
# `mathtune run`, RFT sampling and GRPO steps, all on the Qwen2-1.5B shape with random weights, the real tokenizer and
# the real GSM8K text. Results land in OUT (the device tool brings $OUT back).
#
# Here, once:   EXTRA_WHEELS="lm-eval==0.4.13 evaluate sacrebleu rouge-score sqlitedict pytablewriter \
#                 word2number more-itertools scikit-learn" bash ../shared/device/prepare.sh
# On the GPU:   bash .device/setup.sh && PYTHONPATH=/tmp/site:$PWD/src bash bench/gpu.sh "$OUT"
# On a CPU, to try the script itself in a minute or two:
#   SHAPE=tiny EVAL_LIMIT=8 NEW_TOKENS=16 TRAIN_LIMIT=32 TRAIN_EPOCHS=1 RUN_SETS="--set eval.limit=4" \
#     RFT_LIMIT=4 RFT_NEW_TOKENS=16 GRPO_STEPS=2 GRPO_SETS="--set train.grpo.max_completion_length=16" \
#     TOKENIZER=../shared/qwen2.5-tokenizer DATA=../shared/gsm8k bash bench/gpu.sh /tmp/gpu-try
set -euo pipefail
out=${1:?usage: bench/gpu.sh OUT_DIR}
mkdir -p "$out"
shape=${SHAPE:-qwen2-1.5b}
tokenizer=${TOKENIZER:-.device/tokenizer}
data=${DATA:-.device/gsm8k}
py=${PYTHON:-python3}
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log "eval speed ($shape)"
$py bench/eval_speed.py --shape "$shape" --tokenizer "$tokenizer" --data "$data" \
  --limit "${EVAL_LIMIT:-1319}" --max-new-tokens "${NEW_TOKENS:-256}" --prompts "${EVAL_PROMPTS:-chat,cot8}" \
  --paths "${EVAL_PATHS:-mathtune,lm-eval,batch1}" --batch1-sample "${BATCH1_SAMPLE:-8}" \
  --json "$out/eval_speed.json" --results "$out/results_eval_speed.jsonl" 2>&1 | grep -v Warning | tee "$out/eval_speed.log"

log "training speed ($shape)"
$py bench/train_speed.py --shape "$shape" --tokenizer "$tokenizer" --data "$data" \
  --limit "${TRAIN_LIMIT:-1024}" --batch-size 16 --max-length 512 --epochs "${TRAIN_EPOCHS:-1}" \
  --paths "${TRAIN_PATHS:-mathtune,trl}" \
  --json "$out/train_speed.json" --results "$out/results_train_speed.jsonl" 2>&1 | grep -v Warning | tee "$out/train_speed.log"

log "reference mathtune run ($shape, random weights)"
model_dir=$($py -c "import tempfile; print(tempfile.gettempdir())")/mathtune-shape-$shape-auto
start=$(date +%s)
$py -m mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml --out "$out/run" \
  --set model.name_or_path="$model_dir" --set data.source="$data" --set train.report_to=[] ${RUN_SETS:-} \
  2>&1 | grep -v Warning | tail -40 | tee "$out/run.log"
echo "mathtune run wall time: $(( $(date +%s) - start )) s" | tee -a "$out/run.log"
rm -rf "$out/run/train/checkpoints"  # large, and not needed to read the results

# Recipes (random weights: every completion runs to its token cap, so these are upper bounds).
log "RFT sampling ($shape): ${RFT_LIMIT:-256} train problems x 4 samples, ${RFT_NEW_TOKENS:-512} new tokens"
start=$(date +%s)
$py -m mathtune eval --model "$model_dir" --data "$data" --split train --limit "${RFT_LIMIT:-256}" \
  --samples 4 --temperature 0.7 --max-new-tokens "${RFT_NEW_TOKENS:-512}" --name rft_sampling --out "$out/rft" \
  2>&1 | grep -v Warning | tail -5 | tee "$out/rft.log"
echo "rft sampling wall time: $(( $(date +%s) - start )) s" | tee -a "$out/rft.log"
log "GRPO steps ($shape): ${GRPO_STEPS:-3} steps of configs/qwen2-1.5b-gsm8k-grpo.yaml ${GRPO_SETS:-}"
$py -m mathtune train configs/qwen2-1.5b-gsm8k-grpo.yaml --out "$out/grpo" \
  --set model.name_or_path="$model_dir" --set data.source="$data" --set train.report_to=[] \
  --set train.grpo.max_steps="${GRPO_STEPS:-3}" ${GRPO_SETS:-} 2>&1 | grep -v Warning | tail -3 | tee "$out/grpo.log"
rm -rf "$out/grpo/train/checkpoints" "$out/grpo/adapter"
log done
