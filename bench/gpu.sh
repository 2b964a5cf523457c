#!/usr/bin/env bash
# Every GPU measurement in one device call, on the Qwen2-1.5B shape with random weights, the
# real tokenizer and the real GSM8K text. Stages (STAGES, in this order, each under its own
# time limit so that one slow stage still leaves the others' results):
#   startup bench/startup.py: where `mathtune eval` spends its time before decoding runs, on
#           STARTUP_LIMIT problems, with the GPU's default decoder (fixed slots, a CUDA graph
#           per step) and with the dynamic cache (MATHTUNE_STATIC_CACHE=0); then
#           `mathtune eval --limit 1 --max-new-tokens 8` against a plain transformers script
#   eval    bench/eval_speed.py, once per EVAL_RUNS entry "PROMPT:LIMIT:PATHS" (PATHS as
#           eval_speed's --paths: mathtune:static, mathtune:dynamic, lm-eval:b64, lm-eval, ...);
#           each path in its own process, back to back; wall time with load, decode time,
#           problems/s both ways, and the greedy agreement of every two paths (bf16)
#   merge   a random LoRA adapter of the reference shape (bench/shapes.py), decoded unmerged and
#           merged into the bf16 weights (mathtune:static against mathtune:static:merged) on
#           MERGE_LIMIT problems: the greedy agreement that decides whether merging in bf16 may
#           become the default (mathtune.models.load.MERGE_IN_LOW_PRECISION)
#   train   bench/train_speed.py (TRAIN_PATHS on TRAIN_LIMIT examples)
#   run     a reference `mathtune run` of configs/qwen2-1.5b-gsm8k-lora.yaml
#   rft     RFT sampling through `mathtune eval --samples 4`
#   grpo    GRPO steps of configs/qwen2-1.5b-gsm8k-grpo.yaml
# Everything lands in OUT/results.tgz plus OUT/summary.txt (the device tool brings back at most
# eight files).
#
# For the evaluation issue (start-up, decoder, side by side) alone: STAGES="startup eval merge".
# Planned: set-up and shape ~35 s; startup ~150 s (two breakdowns over 1,319 problems, four
# short runs); eval ~400 s (1,319 problems on three mathtune paths; 256 problems mathtune and
# lm-eval at batch 64; 32 problems mathtune and lm-eval at batch_size=auto, stopped at 100 s);
# merge ~80 s. The 15 device minutes hold it once, with T_* limits as set below.
#
# Planning figures from one H100 (2026-11-27): set-up of the carried wheels 15 s, building the
# shape 18 s, a mathtune eval of 1,319 chat problems x 256 tokens 40 s, lm-eval's HF backend at
# batch 64 about 20 s per 64 problems, lm-eval with batch_size=auto over 16 problems > 120 s,
# 8 training steps of mathtune ~35 s and 16 of TRL ~17 s after ~15 s of loading each.
#
# Here, once:   EXTRA_WHEELS="lm-eval==0.4.13" DATASETS_SPEC="datasets==5.2.0" bash ../shared/device/prepare.sh
#               (add transformers, peft and tokenizers wheels of this machine's versions to .device/whl)
# On the GPU:   bash .device/setup.sh && PYTHONPATH=/tmp/site:$PWD/src bash bench/gpu.sh "$OUT"
# On a CPU, to try the script itself in a minute or two:
#   SHAPE=tiny EVAL_RUNS="chat:8:mathtune,lm-eval:b4" NEW_TOKENS=16 TRAIN_LIMIT=32 TRAIN_PATHS=mathtune,trl \
#     RUN_SETS="--set eval.limit=4 --set data.train_limit=32 --set eval.max_new_tokens=16" \
#     TOKENIZER=../shared/qwen2.5-tokenizer DATA=../shared/gsm8k STAGES="eval train run" bash bench/gpu.sh /tmp/gpu-try
# and the evaluation issue's stages (on a CPU `mathtune:static` runs the same step uncaptured):
#   SHAPE=tiny STARTUP_LIMIT=16 STARTUP_REPEAT=1 NEW_TOKENS=16 MERGE_LIMIT=8 \
#     EVAL_RUNS="chat:16:mathtune:static,mathtune:dynamic chat:8:mathtune:static,lm-eval:b4" \
#     TOKENIZER=../shared/qwen2.5-tokenizer DATA=../shared/gsm8k STAGES="startup eval merge" bash bench/gpu.sh /tmp/gpu-try
set -uo pipefail
out=${1:?usage: bench/gpu.sh OUT_DIR}
work="$out/r"
mkdir -p "$work"
shape=${SHAPE:-qwen2-1.5b}
tokenizer=${TOKENIZER:-.device/tokenizer}
data=${DATA:-.device/gsm8k}
py=${PYTHON:-python3}
stages=" ${STAGES:-startup eval merge train run rft grpo} "
summary="$out/summary.txt"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$summary"; }
has() { [[ "$stages" == *" $1 "* ]]; }
# A stage's own limit (seconds); a stage that overruns is killed and reported, and the next one runs.
limited() { local t=$1; shift; timeout -k 10 "$t" "$@"; local rc=$?; [ $rc -eq 0 ] || log "exit $rc (124: over its ${t} s limit)"; return 0; }
finish() { tar czf "$out/results.tgz" -C "$out" r 2>/dev/null && rm -rf "$work"; }
trap finish EXIT

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py -c "import torch, transformers, peft, trl; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__)"
} | tee -a "$summary"

log "building the $shape shape"
model_dir=$($py - "$shape" "$tokenizer" <<'PY'
import sys, tempfile
from pathlib import Path
sys.path.insert(0, "bench")
import torch
from shapes import build_shape
from mathtune.models.load import resolve_dtype
dtype = resolve_dtype("auto")
folder = Path(tempfile.gettempdir()) / f"mathtune-shape-{sys.argv[1]}-auto"
print(build_shape(sys.argv[1], Path(sys.argv[2]), folder, dtype))
PY
)
log "model at $model_dir"

if has startup; then
  for decoder in static dynamic; do
    log "start-up of mathtune eval ($shape, $decoder decoder): ${STARTUP_LIMIT:-1319} problems, ${NEW_TOKENS:-256} new tokens"
    limited "${T_STARTUP:-150}" env MATHTUNE_STATIC_CACHE=$([ $decoder = static ] && echo 1 || echo 0) \
      $py bench/startup.py --model "$model_dir" --data "$data" --only breakdown --repeat 1 \
      --limit "${STARTUP_LIMIT:-1319}" --max-new-tokens "${NEW_TOKENS:-256}" \
      --json "$work/startup_$decoder.json" --results "$work/results_startup.jsonl" 2>&1 \
      | grep -v Warning | tee "$work/startup_$decoder.log" | grep -E "^  |^start-up" | tee -a "$summary"
  done
  log "mathtune eval --limit 1 --max-new-tokens 8 against a plain transformers script ($shape)"
  limited "${T_STARTUP:-150}" $py bench/startup.py --model "$model_dir" --data "$data" --only versus \
    --repeat "${STARTUP_REPEAT:-2}" --json "$work/startup_versus.json" --results "$work/results_startup.jsonl" 2>&1 \
    | grep -v Warning | tee "$work/startup_versus.log" | grep -E "^  |^.mathtune" | tee -a "$summary"
fi

if has eval; then
  i=0
  for spec in ${EVAL_RUNS:-chat:1319:mathtune:static,mathtune:dynamic,mathtune:static:cudnn chat:256:mathtune:static,lm-eval:b64 chat:32:mathtune:static,lm-eval}; do
    IFS=: read -r prompt limit paths <<<"$spec"
    i=$((i + 1))
    log "eval speed $i ($shape): $prompt, $limit problems, $paths, ${NEW_TOKENS:-256} new tokens"
    limited "${T_EVAL:-300}" $py bench/eval_speed.py --model "$model_dir" --data "$data" \
      --limit "$limit" --max-new-tokens "${NEW_TOKENS:-256}" --prompts "$prompt" --paths "$paths" \
      --path-timeout "${EVAL_PATH_TIMEOUT:-100}" \
      --json "$work/eval_speed_$i.json" --results "$work/results_eval_speed.jsonl" 2>&1 \
      | grep -v Warning | tee "$work/eval_speed_$i.log" | grep -E "^\[.*: |^$prompt:|^  " | tee -a "$summary"
  done
fi

if has merge; then
  log "merged against unmerged LoRA in bf16 ($shape, a random adapter): ${MERGE_LIMIT:-256} problems"
  adapter=$($py - "$model_dir" "$work/random-adapter" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from shapes import build_random_adapter
print(build_random_adapter(Path(sys.argv[1]), Path(sys.argv[2])))
PY
)
  limited "${T_MERGE:-150}" $py bench/eval_speed.py --model "$model_dir" --adapter "$adapter" --data "$data" \
    --limit "${MERGE_LIMIT:-256}" --max-new-tokens "${NEW_TOKENS:-256}" --prompts chat \
    --paths mathtune:static,mathtune:static:merged --path-timeout "${EVAL_PATH_TIMEOUT:-100}" \
    --json "$work/merge.json" --results "$work/results_eval_speed.jsonl" 2>&1 \
    | grep -v Warning | tee "$work/merge.log" | grep -E "^\[.*: |^chat:|^  " | tee -a "$summary"
  rm -rf "$work/random-adapter"
fi

if has train; then
  log "training speed ($shape): ${TRAIN_PATHS:-mathtune,mathtune:cudnn,trl} on ${TRAIN_LIMIT:-512} examples"
  limited "${T_TRAIN:-300}" $py bench/train_speed.py --model "$model_dir" --data "$data" \
    --limit "${TRAIN_LIMIT:-512}" --batch-size 16 --max-length 512 --epochs "${TRAIN_EPOCHS:-1}" \
    --paths "${TRAIN_PATHS:-mathtune,mathtune:cudnn,trl}" \
    --json "$work/train_speed.json" --results "$work/results_train_speed.jsonl" 2>&1 \
    | grep -v Warning | tee "$work/train_speed.log" | tail -12 | tee -a "$summary"
fi

if has run; then
  log "reference mathtune run ($shape, random weights) ${RUN_SETS:-}"
  start=$(date +%s)
  limited "${T_RUN:-400}" $py -m mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml --out "$work/run" \
    --set model.name_or_path="$model_dir" --set data.source="$data" --set train.report_to=[] ${RUN_SETS:-} \
    > "$work/run.log" 2>&1
  grep -v Warning "$work/run.log" | tail -25 | tee -a "$summary"
  log "mathtune run wall time: $(( $(date +%s) - start )) s"
  rm -rf "$work/run/train/checkpoints" "$work/run/adapter"  # large, and not needed to read the results
fi

# Recipes (random weights: every completion runs to its token cap, so these are upper bounds).
if has rft; then
  log "RFT sampling ($shape): ${RFT_LIMIT:-256} train problems x 4 samples, ${RFT_NEW_TOKENS:-512} new tokens"
  start=$(date +%s)
  limited "${T_RFT:-240}" $py -m mathtune eval --model "$model_dir" --data "$data" --split train \
    --limit "${RFT_LIMIT:-256}" --samples 4 --temperature 0.7 --max-new-tokens "${RFT_NEW_TOKENS:-512}" \
    --name rft_sampling --out "$work/rft" > "$work/rft.log" 2>&1
  grep -v Warning "$work/rft.log" | tail -3 | tee -a "$summary"
  log "rft sampling wall time: $(( $(date +%s) - start )) s"
fi
if has grpo; then
  log "GRPO steps ($shape): ${GRPO_STEPS:-3} steps of configs/qwen2-1.5b-gsm8k-grpo.yaml ${GRPO_SETS:-}"
  limited "${T_GRPO:-240}" $py -m mathtune train configs/qwen2-1.5b-gsm8k-grpo.yaml --out "$work/grpo" \
    --set model.name_or_path="$model_dir" --set data.source="$data" --set train.report_to=[] \
    --set train.grpo.max_steps="${GRPO_STEPS:-3}" ${GRPO_SETS:-} > "$work/grpo.log" 2>&1
  grep -v Warning "$work/grpo.log" | tail -3 | tee -a "$summary"
  rm -rf "$work/grpo/train/checkpoints" "$work/grpo/adapter"
fi
log done
