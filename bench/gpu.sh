#!/usr/bin/env bash
# Every GPU measurement in one device call: eval speed, training speed, and a reference
# `mathtune run`, all on the Qwen2-1.5B shape with random weights, the real tokenizer and
# the real GSM8K text. Results land in OUT (the device tool brings $OUT back).
#
# Here, once:   EXTRA_WHEELS="lm-eval==0.4.13 evaluate sacrebleu rouge-score sqlitedict pytablewriter \
#                 word2number more-itertools scikit-learn" bash ../shared/device/prepare.sh
# On the GPU:   bash .device/setup.sh && PYTHONPATH=/tmp/site:$PWD/src bash bench/gpu.sh "$OUT"
# On a CPU, to try the script itself in a minute or two:
#   SHAPE=tiny EVAL_LIMIT=8 NEW_TOKENS=16 TRAIN_LIMIT=32 TRAIN_EPOCHS=1 RUN_SETS="--set eval.limit=4" \
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
log done
