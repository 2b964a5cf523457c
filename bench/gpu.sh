#!/usr/bin/env bash
# Every GPU measurement in one device call, on the Qwen2-1.5B shape with random weights, the
# real tokenizer and the real GSM8K text. Stages (STAGES, in this order, each under its own
# time limit so that one slow stage still leaves the others' results):
#   doctor    `mathtune doctor` first: every fast path against its reference on this GPU (packed
#             varlen attention, the lean head, the CUDA-graph and dynamic decoders, merged LoRA);
#             a path that fails here is what the later stages' figures must not rest on
#   check     bench/varlen_check.py: packed rows through mathtune_varlen on the real kernel against
#             an unpacked reference (loss, each example's loss, LoRA gradients) within bf16 tolerance
#   train     bench/train_speed.py, TRAIN_PATHS (default mathtune, TRL's defaults, and mathtune's
#             per-example attention briefly): WARMUP + STEPS timed + PROFILE profiled steps per path,
#             each path in its own process, back to back; the profile's top operations, syncs,
#             launches and allocator retries per path
#   switches  the same for SWITCH_PATHS: lora_dropout 0, Liger's RMSNorm/RoPE/SwiGLU, Liger's fused
#             linear cross-entropy head, torch.compile of the decoder layers (its cost in the warm-up)
#   sweep     the same for SWEEP_PATHS: 32 and 64 rows per step (16 is train's mathtune row)
#   startup   bench/startup.py: where `mathtune eval` spends its time before decoding runs, on
#             STARTUP_LIMIT problems, with the GPU's default decoder (fixed slots, a CUDA graph
#             per step) and with the dynamic cache (MATHTUNE_STATIC_CACHE=0); then
#             `mathtune eval --limit 1 --max-new-tokens 8` against a plain transformers script
#   eval      bench/eval_speed.py, once per EVAL_RUNS entry "PROMPT:LIMIT:PATHS" (PATHS as
#             eval_speed's --paths: mathtune:static, mathtune:dynamic, lm-eval:b64, lm-eval, ...);
#             each path in its own process, back to back; wall time with load, decode time,
#             problems/s both ways, and the greedy agreement of every two paths (bf16)
#   merge     a random LoRA adapter of the reference shape (bench/shapes.py), decoded unmerged and
#             merged into the bf16 weights (mathtune:static against mathtune:static:merged) on
#             MERGE_LIMIT problems: the greedy agreement that decides whether merging in bf16 may
#             become the default (mathtune.models.load.MERGE_IN_LOW_PRECISION)
#   run       a reference `mathtune run` of configs/qwen2-1.5b-gsm8k-lora.yaml
#   rft       RFT sampling through `mathtune eval --samples 4`
#   grpo      GRPO steps of configs/qwen2-1.5b-gsm8k-grpo.yaml
# Default STAGES="doctor check train" (the doctor ~1 minute, then training speed, 5-7 minutes); the evaluation's figures in a
# second call, STAGES="startup eval merge" (~11 minutes); then STAGES="switches sweep".
# Everything lands in OUT/results.tgz plus OUT/summary.txt (the device tool brings back at most
# eight files).
#
# Planning figures from one H100 (2026-11-27, before varlen attention and the fixed-slot
# decoder): set-up of the carried wheels 15 s, building the shape 18 s, loading it ~15 s per
# path; 8 training steps of mathtune's per-example attention ~35 s, 16 of TRL ~17 s; a mathtune
# eval of 1,319 chat problems x 256 tokens 40 s, lm-eval's HF backend at batch 64 about 20 s per
# 64 problems, lm-eval with batch_size=auto over 16 problems > 120 s. So `mathtune:segments:s5`
# (5 timed steps) and the other training paths at 30 steps. The evaluation stages: startup ~150 s
# (two breakdowns over 1,319 problems, four short runs); eval ~400 s (1,319 problems on three
# mathtune paths; 256 problems mathtune and lm-eval at batch 64; 32 problems mathtune and lm-eval
# at batch_size=auto, stopped at 100 s); merge ~80 s.
#
# Here, once:   bash ../shared/device/prepare.sh      (liger-kernel is among its wheels)
# On the GPU:   bash .device/setup.sh && PYTHONPATH=/tmp/site:$PWD/src bash bench/gpu.sh "$OUT"
# On a CPU, to try the script itself in a few minutes (the tiny shape: 2 layers, the real vocabulary):
#   SHAPE=tiny TOKENIZER=../shared/qwen2.5-tokenizer DATA=../shared/gsm8k TRAIN_LIMIT=32 CHECK_PROBLEMS=16 \
#     BATCH=4 MAX_LENGTH=256 WARMUP=1 STEPS=3 PROFILE=1 SWITCH_PATHS=mathtune:dropout0,mathtune:trl-head \
#     SWEEP_PATHS=mathtune:b8 STAGES="check train switches sweep" bash bench/gpu.sh /tmp/gpu-try
# the end-to-end stages:
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
stages=" ${STAGES:-doctor check train} "
summary="$out/summary.txt"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$summary"; }
has() { [[ "$stages" == *" $1 "* ]]; }
# A stage's own limit (seconds); a stage that overruns is killed and reported, and the next one runs.
limited() { local t=$1; shift; timeout -k 10 "$t" "$@"; local rc=$?; [ $rc -eq 0 ] || log "exit $rc (124: over its ${t} s limit)" >&2; return 0; }
finish() { tar czf "$out/results.tgz" -C "$out" r 2>/dev/null && rm -rf "$work"; }
trap finish EXIT

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $py - <<'PY'
import importlib, importlib.util
names = ("torch", "transformers", "peft", "trl", "liger_kernel", "triton")
print(" | ".join(f"{n} {getattr(importlib.util.find_spec(n) and importlib.import_module(n), '__version__', 'missing')}"
                 for n in names))
PY
} | tee -a "$summary"

if has doctor; then
  log "mathtune doctor (the Qwen2-1.5B shape, 4 layers, random weights); its verdicts stay in the cache for the run stage"
  limited "${T_DOCTOR:-240}" $py -m mathtune doctor --json > "$work/doctor.json" 2> "$work/doctor.err"
  cat "$work/doctor.err" | grep -v Warning | tail -3 | tee -a "$summary"
  $py -c "import json, sys; from mathtune.train.selfcheck import format_report; print(format_report(json.load(open(sys.argv[1]))))" \
    "$work/doctor.json" 2>/dev/null | tee -a "$summary"
fi

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

if has check; then
  log "packed = unpacked on the kernel ($shape): ${CHECK_PROBLEMS:-40} problems, batch ${BATCH:-16}, rows of ${MAX_LENGTH:-512}"
  limited "${T_CHECK:-150}" $py bench/varlen_check.py --model "$model_dir" --data "$data" \
    --problems "${CHECK_PROBLEMS:-40}" --batch-size "${BATCH:-16}" --max-length "${MAX_LENGTH:-512}" \
    --json "$work/varlen_check.json" 2>&1 | grep -v Warning | tee "$work/varlen_check.log" | tail -6 | tee -a "$summary"
fi

# One train_speed.py call: train_paths NAME PATHS TIME_LIMIT
train_paths() {
  local name=$1 paths=$2 limit=$3
  log "training speed, $name ($shape): $paths; batch ${BATCH:-16}, rows of ${MAX_LENGTH:-512}, ${TRAIN_LIMIT:-256} problems, warm-up ${WARMUP:-3} + ${STEPS:-30} timed + ${PROFILE_N:-0} profiled steps"
  limited "$limit" $py bench/train_speed.py --model "$model_dir" --data "$data" \
    --limit "${TRAIN_LIMIT:-256}" --batch-size "${BATCH:-16}" --max-length "${MAX_LENGTH:-512}" \
    --warmup-steps "${WARMUP:-3}" --steps "${STEPS:-30}" --profile-steps "${PROFILE_N:-0}" --paths "$paths" \
    --json "$work/train_speed_$name.json" --results "$work/results_train_speed.jsonl" 2>&1 \
    | grep -v Warning | tee "$work/train_speed_$name.log" | sed -n '/^steady state/,$p' | tee -a "$summary"
}

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
  PROFILE_N=${PROFILE:-3} train_paths main "${TRAIN_PATHS:-mathtune,trl,mathtune:segments:s5}" "${T_TRAIN:-420}"
fi
if has switches; then
  train_paths switches "${SWITCH_PATHS:-mathtune:dropout0,mathtune:liger,mathtune:liger-head,mathtune:compile}" "${T_SWITCH:-420}"
fi
if has sweep; then
  train_paths sweep "${SWEEP_PATHS:-mathtune:b32,mathtune:b64}" "${T_SWEEP:-300}"
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
