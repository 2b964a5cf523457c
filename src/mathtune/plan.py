"""`mathtune plan`: what a run will do and cost, before it runs.

    plan = make_plan(config, device="h100")     # reads the data and the tokenizer, no weights
    print(format_plan(plan))

It tokenizes every training and validation example with the real tokenizer, counts what
data.max_length drops, works out optimizer steps and validation passes as the trainer will,
reads the model's shapes (layers, width, heads, KV heads, intermediate width, vocabulary, tied
embeddings) from its config on a weightless (meta-device) copy, and estimates FLOPs, wall time,
cost and peak memory from those shapes. Training time is its FLOPs at a rate; evaluation time is
a decoding cost per step: the weights read once a step at a bandwidth, and each row's FLOPs
and cached keys and values. The rates are this machine's, measured by its finished runs and kept
in the user's cache (core.measured_rates), where there are some for a model of about this
size; else the measured entry of throughputs.json for the device (BENCHMARKS.md); else a stated
share of the device's peak. The basis line says which. `mathtune run` prints the plan first,
writes it to RUN_DIR/plan.json, where the analysis (analysis.analyze.plan_vs_actual) puts it
next to what happened, and once the run has finished records the rates it reached
(record_measured_rates).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import platform
import textwrap
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.core.measured_rates import measured_rates, record_rates
from mathtune.core.provenance import adapter_variant, library_version
from mathtune.core.runfiles import read_jsonl, size_text
from mathtune.core.terminal import duration, round_seconds
from mathtune.evaluation.resolve import resolve_request
from mathtune.evaluation.request import EvalRequest, load_problems
from mathtune.evaluation.summary import read_eval_summary
from mathtune.task.training_set import training_set
from mathtune.task.sequences import prompt_ids
from mathtune.task.plan_record import (FullPrecision, Plan, PlanData, PlanEvaluation, PlanFlops, PlanPrompts, PlanRates,
                                      PlanTimes, SplitPlan, read_plan, write_plan_record)
from mathtune.task.train_summary import TrainSummary, read_train_summary

# Dense bf16 peak (TFLOP/s) of devices a plan can be asked for by name, and the share of it
# assumed where no throughput was measured on that device; their specified memory bandwidth
# (TB/s), which bounds a decoding step's weight reads.
PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "l4": 121.0}
BANDWIDTH_TBPS = {"h100": 3.35, "h200": 4.8, "a100": 2.0, "l4": 0.3}
ASSUMED_UTILISATION = 0.30
# A rate measured on one model size carries its fixed per-step costs (kernel launches, Python)
# in its FLOP/s; a model more than this many times smaller or larger than the measured one is an
# extrapolation, and the plan says so. This machine's own measurements are used for models within
# this factor of the measured size.
EXTRAPOLATION_FACTOR = 10
# Adapter variants' cost, each a ratio to plain LoRA measured by bench/adapter_costs.py (BENCHMARKS.md,
# "What an adapter variant costs"): SmolLM2-135M's shape, batch 2 x 256 tokens, fp32, one thread,
# this 2-core CPU, one process per variant. DoRA recomputes each adapted layer's weight norm and
# its base output (PEFT's extra pass); checkpointing recomputes the forward pass in the backward.
DORA_TIME_RATIO = 1.41
DORA_MEMORY_RATIO = 1.26
CHECKPOINTING_TIME_RATIO = 1.23
# A 4-bit or 8-bit base on a CPU dequantizes every layer at every decoding step: about 2.5x the
# fp32 decoding time (BENCHMARKS.md, "QLoRA against LoRA on a CPU"); on a GPU not measured.
CPU_QUANTIZED_DECODE_RATIO = 2.5
# Resident memory of a CPU process once torch, transformers, peft and trl are imported, before a
# model is loaded (measured 0.42 GiB on this 2-core CPU, torch 2.13.0+cpu); on a GPU the peak
# counts the device's allocations alone.
CPU_RUNTIME_BYTES = 0.42 * 2**30
# TRL's chunked LM head (train.lm_head) holds one tile of at most 4,096 tokens x 32,768
# vocabulary entries in fp32 at a time, about three tile-sized buffers with the backward's.
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB, HEAD_TILE_BUFFERS = 4096, 32768, 3
PARAMS_DEFINITION = "total = the base model's parameters + the LoRA adapter's (the trainable ones)"
FLOPS_FORMULA = ("training, per example of T tokens with C answer tokens: forward 2*N*T + 2*H*C + 2*L*d*T^2, "
                 "backward (activation gradients only: the base is frozen) 2*N*T + 2*H*C + 4*L*d*T^2, with N the "
                 "non-embedding parameters, H the output layer's, L layers of attention width d; plus the "
                 "adapter's own 6*A*T for its A trainable parameters (forward 2*A*T, backward 2*A*T for its "
                 "inputs and 2*A*T for its weights); validation 2*(N+A)*T + 2*H*C + 2*L*d*T^2 per example per "
                 "pass; evaluation (assuming every answer runs to max_new_tokens) 2*(N+H) per prompt and "
                 "generated token plus 4*L*d per token of context it attends to, per problem and model; with "
                 "train.select_by exact_match, validation decoding likewise per accuracy problem and pass")
DECODE_FORMULA = ("a decoding step reads the weights once (bytes / bandwidth) and, for each of its rows, does "
                  "2*(N+H) + 4*L*d*context FLOPs and reads the row's cached keys and values (2*L*KV width "
                  "values per token of context); rows = the evaluation batch (or the problems, if fewer); "
                  "prompts are prefilled at the FLOP rate")


def throughputs() -> list[dict]:
    """The measured throughputs shipped with the package (throughputs.json)."""
    return json.loads((resources.files("mathtune") / "throughputs.json").read_text(encoding="utf-8"))


def _detected_device() -> str:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        return next((key for key in PEAK_TFLOPS if key in name), name)
    return "cpu"


def this_machine() -> str:
    """This machine's device and the versions that set its speed: the key of its measured rates."""
    import torch

    if torch.cuda.is_available():
        device = f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        device = f"cpu {model} x{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}"
    versions = ", ".join(f"{name} {library_version(name)}" for name in ("torch", "transformers", "peft", "trl"))
    return f"{device}; {versions}"


def _model_shape(name_or_path: str, config: Config) -> dict:
    """Parameter counts and shapes from the model's config on the meta device: no weights are
    read. total_params counts the base model and the adapter, as train/summary.json does."""
    import torch
    from peft import get_peft_model

    from mathtune.models.load import meta_model
    from mathtune.train.trainer import make_lora_config

    model = meta_model(name_or_path, trust_remote_code=config.model.trust_remote_code)
    text = model.config.get_text_config()
    embedding = text.vocab_size * text.hidden_size
    base = sum(p.numel() for p in model.parameters())
    # What bitsandbytes quantizes: every linear layer's weight but the output layer's.
    output = model.get_output_embeddings()
    linear = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output]
    peft_model = get_peft_model(model, make_lora_config(config, model))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    tied = bool(getattr(text, "tie_word_embeddings", False))
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    return {"base_params": base, "trainable_params": trainable, "total_params": base + trainable,
            "non_embedding_params": base - embedding * (1 if tied else 2),
            "head_params": embedding, "layers": text.num_hidden_layers,
            "attention_width": text.num_attention_heads * head_dim, "hidden": text.hidden_size,
            "heads": text.num_attention_heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "kv_width": kv_heads * head_dim,
            "intermediate": getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
            "vocab": text.vocab_size, "tied": tied,
            "quantizable_params": sum(linear), "largest_linear_params": max(linear)}


# Bytes per quantized weight: 4-bit NF4 holds a weight in half a byte plus its block's scale (one
# per 64 weights; with double quantization an 8-bit scale, and an fp32 scale per 256 of those);
# 8-bit holds a byte plus an fp32 scale per output row (counted as a weight's share below).
QUANTIZED_BYTES = {"4bit": 0.5 + (1 + 4 / 256) / 64, "8bit": 1.0}


def weight_bytes(shape: dict, quantization: str, dtype_bytes: int) -> float:
    """The base weights in memory while training. Quantized, PEFT's k-bit preparation holds
    every weight bitsandbytes leaves alone (embeddings, output layer, norms, biases) in fp32."""
    if quantization == "none":
        return shape["base_params"] * dtype_bytes
    kept = shape["base_params"] - shape["quantizable_params"]
    return shape["quantizable_params"] * QUANTIZED_BYTES[quantization] + kept * 4


def layer_activation_values(shape: dict, checkpointing: bool) -> int:
    """Values one decoder layer keeps per token for the backward, by its shapes. Without
    checkpointing: about ten hidden-wide tensors (the two norms' inputs and outputs, the residual
    sums, the LoRA dropouts' copies of the attention and MLP inputs and the o-projection's),
    the queries, keys and values with the attention output twice, and six intermediate-wide ones
    (gate, up, the activation, their product, and the down projection's input with its dropout
    copy). With checkpointing a layer keeps its input alone."""
    if checkpointing:
        return shape["hidden"]
    return 10 * shape["hidden"] + 2 * (shape["attention_width"] + 2 * shape["kv_width"]) + 6 * shape["intermediate"]


def training_memory(shape: dict, config: Config, *, quantization: str, dtype_bytes: int, tokens_in_memory: int,
                    answer_tokens_in_memory: int, runtime_bytes: float) -> dict:
    """Peak training memory, in bytes, by part: the base weights; the adapter with its gradient
    and Adam's two moments; the saved activations of every layer for the tokens of one
    micro-batch (accumulated micro-batches run one after another), plus, with checkpointing, one
    layer's full set while it is recomputed; the LM head's fp32 logit tiles over the answer
    tokens; with a quantized base, one layer's weights dequantized at a time; on a CPU, the
    process's runtime (runtime_bytes: 0 on a GPU, whose peak counts its own allocations)."""
    checkpointing = config.train.gradient_checkpointing
    per_token = shape["layers"] * layer_activation_values(shape, checkpointing)
    if checkpointing:
        per_token += layer_activation_values(shape, False)
    tile = min(answer_tokens_in_memory, HEAD_TILE_TOKENS) * min(shape["vocab"], HEAD_TILE_VOCAB) * 4
    parts = {"weights": weight_bytes(shape, quantization, dtype_bytes),
             "adapter_and_optimizer": 16 * shape["trainable_params"],
             "activations": tokens_in_memory * per_token * dtype_bytes + HEAD_TILE_BUFFERS * tile,
             "dequantized_layer": 0 if quantization == "none" else shape["largest_linear_params"] * dtype_bytes,
             "runtime": runtime_bytes}
    return {**parts, "total": sum(parts.values())}


def _lengths(config: Config, tokenizer, problems, fewshot) -> tuple[list[int], list[int]]:
    """Each example's tokens and answer tokens, from the very ids training feeds."""
    from mathtune.train.trainer import gold_examples

    examples = gold_examples(config, tokenizer, problems, fewshot)
    return [len(e) for e in examples], [len(e.answer_ids) for e in examples]


def packed_rows(lengths: list[int], capacity: int) -> int:
    """Rows that best-fit-decreasing packing (TRL's packing_strategy="bfd") makes of examples
    of these lengths: longest first, each into the row with the least room that still fits it."""
    rooms: list[int] = []  # the free space of each open row, kept sorted
    for length in sorted(lengths, reverse=True):
        i = bisect.bisect_left(rooms, length)
        if i == len(rooms):
            bisect.insort(rooms, capacity - length)
        else:
            room = rooms.pop(i) - length
            bisect.insort(rooms, room)
    return len(rooms)


def _stats(lengths: list[int]) -> dict:
    if not lengths:
        return {"examples": 0, "tokens": 0, "mean": None, "p99": None, "max": None}
    ordered = sorted(lengths)
    return {"examples": len(lengths), "tokens": sum(lengths), "mean": round(sum(lengths) / len(lengths), 1),
            "p99": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)], "max": ordered[-1]}


def training_example_flops(shape: dict, tokens: int, answer_tokens: int) -> float:
    """One training example's forward and backward FLOPs (FLOPS_FORMULA), the adapter's own included."""
    n, head, layers, d = shape["non_embedding_params"], shape["head_params"], shape["layers"], shape["attention_width"]
    return 4 * n * tokens + 4 * head * answer_tokens + 6 * layers * d * tokens * tokens + adapter_flops(shape, tokens)


def adapter_flops(shape: dict, tokens: int) -> float:
    """The adapter's own training FLOPs for `tokens` tokens: each trainable parameter takes part
    in one multiply-add per token forward, one backward for its input's gradient and one for its
    own gradient (6*A*T; a LoRA pair r x d_in and d_out x r is r*(d_in + d_out) parameters)."""
    return 6 * shape["trainable_params"] * tokens


def validation_example_flops(shape: dict, tokens: int, answer_tokens: int) -> float:
    n, head, layers, d = shape["non_embedding_params"], shape["head_params"], shape["layers"], shape["attention_width"]
    a = shape["trainable_params"]
    return 2 * (n + a) * tokens + 2 * head * answer_tokens + 2 * layers * d * tokens * tokens


def decode_seconds(shape: dict, rates: dict, *, steps: float, rows_per_step: float, context: float,
                   prompt_tokens: float, rows: int, dtype_bytes: int) -> float:
    """Decoding time by DECODE_FORMULA: `steps` steps of `rows_per_step` rows each attending to
    `context` tokens, after prefilling `rows` prompts of `prompt_tokens`. An untied input embedding
    is looked up, not read whole; the output layer is read every step."""
    n, head, layers, d = shape["non_embedding_params"], shape["head_params"], shape["layers"], shape["attention_width"]
    weights = (shape["base_params"] - (0 if shape["tied"] else head)) * dtype_bytes
    cache = rows_per_step * context * 2 * layers * shape["kv_width"] * dtype_bytes
    step = (weights + cache) / rates["weight_bytes_per_s"] + rows_per_step * (
        2 * (n + head) + 4 * layers * d * context) / rates["decode_flops_per_s"]
    prefill = rows * prompt_tokens * (2 * (n + head) + 2 * layers * d * prompt_tokens) / rates["decode_flops_per_s"]
    return steps * step + prefill


def _shipped_train_rate(entry: dict) -> float:
    """The FLOP/s of an entry's measured training: its tokens/s times the FLOPs a token of its
    examples costs on its model's shapes."""
    s, ex = entry["shape"], entry["train_example"]
    head = s["vocab"] * s["hidden"]
    shape = {"non_embedding_params": entry["params"] - head * (1 if s["tied"] else 2), "head_params": head,
             "layers": s["layers"], "attention_width": s["heads"] * s["head_dim"]}
    n, layers, d = shape["non_embedding_params"], shape["layers"], shape["attention_width"]
    per_example = (4 * n * ex["tokens_mean"] + 4 * head * ex["answer_tokens_mean"]
                   + 6 * layers * d * ex["tokens_squared_mean"] + 6 * reference_adapter_params(s) * ex["tokens_mean"])
    return entry["train_tokens_per_s"] * per_example / ex["tokens_mean"]


# The shipped throughputs were measured training the reference adapter: LoRA r 8 on every linear
# layer of each decoder layer (q, k, v, o, gate, up, down).
REFERENCE_RANK = 8


def reference_adapter_params(s: dict) -> int:
    """The reference adapter's parameters on a measured entry's shape: r * (d_in + d_out) per layer."""
    h, attention, kv, inter = s["hidden"], s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"], s["intermediate"]
    per_layer = 2 * (h + attention) + 2 * (h + kv) + 3 * (h + inter)
    return REFERENCE_RANK * per_layer * s["layers"]


def _nearest_measurement(shape: dict, field: str) -> dict | None:
    """This machine's newest measurement of `field` on the model nearest in size, within
    EXTRAPOLATION_FACTOR (a quantized run measures training alone: decoding then comes from
    another run)."""
    best, best_distance = None, math.log(EXTRAPOLATION_FACTOR)
    for entry in measured_rates(this_machine()):
        params = entry.get("base_params")
        if not params or not entry.get(field):
            continue
        distance = abs(math.log(params / shape["base_params"]))
        if distance <= best_distance:  # the newer of two as near
            best, best_distance = entry, distance
    return best


def _rates(device: str, shape: dict) -> dict:
    """The rates the plan divides by, where they come from, and its basis line."""
    entry = next((e for e in throughputs() if e["device"] == device), None)
    if entry is not None:
        rates = {"source": "shipped", "train_flops_per_s": _shipped_train_rate(entry),
                 "decode_flops_per_s": entry["decode"]["flops_per_s"],
                 "weight_bytes_per_s": entry["decode"]["weight_bytes_per_s"], "extrapolated": False}
        scale = shape["base_params"] / entry["params"]
        rates["basis"] = (f"measured throughput '{entry['id']}' ({entry['source']}): training {entry['train_tokens_per_s']} "
                          f"tokens/s on a {entry['params'] / 1e9:.2f}B model, {rates['train_flops_per_s'] / 1e9:,.1f} "
                          f"GFLOP/s by these FLOPs; decoding: weights read at "
                          f"{rates['weight_bytes_per_s'] / 1e9:,.1f} GB/s, {rates['decode_flops_per_s'] / 1e9:,.1f} "
                          f"GFLOP/s ({entry['decode']['source']})")
        rates["short"] = f"the measurement '{entry['id']}' shipped in throughputs.json (BENCHMARKS.md)"
        if not 1 / EXTRAPOLATION_FACTOR <= scale <= EXTRAPOLATION_FACTOR:
            rates["extrapolated"] = True
            size = f"{1 / scale:,.0f}x smaller" if scale < 1 else f"{scale:,.0f}x larger"
            rates["short"] += f"; extrapolated: this model is {size} than the measured one, a rough estimate"
            rates["basis"] += (f"; extrapolated: this model ({shape['base_params']:,} parameters) is {size} than the "
                               "measured one, whose rate carries its own share of the fixed costs of every step "
                               "(kernel launches, Python) that FLOPs leave out: a rough estimate"
                               + (", likely short" if scale < 1 else ""))
    else:  # a known peak (make_plan checked the device)
        rate = PEAK_TFLOPS[device] * 1e12 * ASSUMED_UTILISATION
        rates = {"source": "peak", "train_flops_per_s": rate, "decode_flops_per_s": rate,
                 "weight_bytes_per_s": BANDWIDTH_TBPS[device] * 1e12, "extrapolated": False,
                 "basis": (f"no throughput measured on {device}: FLOPs at {round(ASSUMED_UTILISATION * 100)}% of its "
                           f"{PEAK_TFLOPS[device]} TFLOP/s bf16 peak, weights read at its specified "
                           f"{BANDWIDTH_TBPS[device]} TB/s"),
                 "short": (f"no throughput measured on {device}: {round(ASSUMED_UTILISATION * 100)}% of its "
                           f"{PEAK_TFLOPS[device]} TFLOP/s peak, its {BANDWIDTH_TBPS[device]} TB/s")}
    fields = ("train_flops_per_s", "decode_flops_per_s", "weight_bytes_per_s")
    measured = {k: _nearest_measurement(shape, k) for k in fields} if device == _detected_device() else {}
    measured = {k: m for k, m in measured.items() if m is not None}
    if measured:
        words = {"train_flops_per_s": "training {:,.3g} GFLOP/s", "decode_flops_per_s": "decoding {:,.3g} GFLOP/s",
                 "weight_bytes_per_s": "weights read at {:,.3g} GB/s"}
        rates.update({k: m[k] for k, m in measured.items()}, source="measured", extrapolated=False)
        rates["basis"] = (f"this machine's measured rates ({this_machine()}): "
                          + ", ".join(f"{words[k].format(m[k] / 1e9)} (the run {m['run']}, {m['when']}, a model of "
                                      f"{m['base_params']:,} parameters)" for k, m in measured.items())
                          + ("" if len(measured) == len(fields) else "; the rest from " + rates["basis"]))
        newest = max(measured.values(), key=lambda m: m["when"])
        rates["short"] = (f"this machine's own runs (newest: {newest['when']})"
                          + ("" if len(measured) == len(fields) else "; the rest from " + rates["short"]))
    return rates


def _training_schedule(config: Config, train_len: list[int], train_ans: list[int], val_len: list[int],
                       val_ans: list[int], world_size: int) -> dict:
    """Examples kept under max_length, steps and validation passes, as the trainer makes them."""
    t, limit = config.train, config.data.max_length
    kept = [(x, c) for x, c in zip(train_len, train_ans) if x <= limit]
    kept_val = [(x, c) for x, c in zip(val_len, val_ans) if x <= limit]
    per_step = t.batch_size * t.gradient_accumulation_steps * world_size
    rows = packed_rows([x for x, _ in kept], limit) if t.packing else len(kept)
    steps_per_epoch = max(1, math.ceil(rows / per_step))
    steps = math.ceil(steps_per_epoch * t.epochs)
    val_passes = steps // t.eval_every_steps + 1 + (1 if steps % t.eval_every_steps else 0)
    return {"kept": kept, "kept_val": kept_val, "steps": steps, "steps_per_epoch": steps_per_epoch,
            "val_passes": val_passes, **micro_batch_tokens(config, kept, t.batch_size)}


def micro_batch_tokens(config: Config, kept: list[tuple[int, int]], batch_size: int) -> dict:
    """One micro-batch of one process is in memory at a time: batch_size packed rows of up to
    max_length (never more than the examples hold), or batch_size examples padded to the
    longest; its answer tokens at the mean share."""
    kept_tokens = sum(x for x, _ in kept)
    limit = config.data.max_length
    tokens = min(batch_size * limit, kept_tokens) if config.train.packing else batch_size * max(x for x, _ in kept)
    answer_share = sum(c for _, c in kept) / max(1, kept_tokens)
    return {"tokens_in_memory": tokens, "answer_tokens_in_memory": math.ceil(tokens * answer_share)}


def _decoding(config: Config, shape: dict, rates: dict, *, problems: int, prompt: float, on_gpu: bool,
              dtype_bytes: int, answer_lengths: list[int] | None = None) -> float:
    """One model's evaluation of `problems` problems: answers of `answer_lengths` (the lengths
    expected, each cut at max_new_tokens), or every answer at max_new_tokens (the bound)."""
    from mathtune.models.generate import CPU_BATCH_SIZE, GPU_START_BATCH_SIZE

    rows = problems * config.eval.samples
    if rows == 0:
        return 0.0
    batch = config.eval.batch_size if config.eval.batch_size != "auto" else (
        GPU_START_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE)
    at_once = min(batch, rows)
    new = config.eval.max_new_tokens
    lengths = sorted(min(n, new) for n in answer_lengths or [new])
    mean = sum(lengths) / len(lengths)
    # Finished rows leave the batch and the next problems take their places, so the steps are
    # the tokens over the batch; but a batch runs until its longest answer ends: the expected
    # longest of `at_once` answers is the quantile 1 - 1/(at_once + 1) of the lengths.
    longest = lengths[min(len(lengths) - 1, math.floor(len(lengths) * at_once / (at_once + 1)))]
    steps = max(rows * mean / at_once, longest)
    return decode_seconds(shape, rates, steps=steps, rows_per_step=rows * mean / steps,
                          context=prompt + mean / 2, prompt_tokens=prompt, rows=rows, dtype_bytes=dtype_bytes)


def expected_answer_lengths(config: Config, gold_answer_lengths: list[int]) -> tuple[list[int], str]:
    """The answer lengths the evaluation time expects, and where they come from: the tokens this
    model generated under this prompt in a finished run on this machine (the newest), else the
    data's gold solutions as training tokenizes them."""
    model, prompt = config.model.name_or_path, config.eval.prompt
    for entry in reversed(measured_rates(this_machine())):
        if entry.get("model") == model and entry.get("eval_prompt") == prompt and entry.get("answer_lengths"):
            lengths = entry["answer_lengths"]
            return lengths, (f"this model's answers in {entry['run']} ({entry['when']}): mean "
                             f"{sum(lengths) / len(lengths):.0f} tokens")
    lengths = gold_answer_lengths or [config.eval.max_new_tokens]
    return lengths, f"the data's gold solutions: mean {sum(lengths) / len(lengths):.0f} tokens"


def _answer_flops(config: Config, shape: dict, prompt: float) -> float:
    """One evaluation answer's FLOPs, run to max_new_tokens (FLOPS_FORMULA)."""
    n, head, layers, d = shape["non_embedding_params"], shape["head_params"], shape["layers"], shape["attention_width"]
    new = config.eval.max_new_tokens
    return 2 * (n + head) * (prompt + new) + 4 * layers * d * (prompt + new / 2) * new


def _times(config: Config, shape: dict, rates: dict, *, train_flops: float, val_flops: float, test_problems: int,
           accuracy_n: int, val_passes: int, prompt: float, on_gpu: bool, world_size: int,
           answer_lengths: list[int]) -> tuple:
    """Seconds of training, validation (its decoding included), evaluation (base and tuned),
    validation decoding, and the evaluation's bound (every answer at max_new_tokens), each
    variant's measured ratio applied; and the ratios applied, in words."""
    t, dtype_bytes = config.train, 2 if on_gpu else 4
    train_s = train_flops / rates["train_flops_per_s"] / world_size
    val_s = val_flops / rates["train_flops_per_s"] / world_size
    test_share = math.ceil(test_problems / world_size)
    decoding = dict(prompt=prompt, on_gpu=on_gpu, dtype_bytes=dtype_bytes)
    eval_s = 2 * _decoding(config, shape, rates, problems=test_share, answer_lengths=answer_lengths, **decoding)
    bound_s = 2 * _decoding(config, shape, rates, problems=test_share, **decoding)
    decode_s = val_passes * _decoding(config, shape, rates, problems=accuracy_n, answer_lengths=answer_lengths,
                                      **decoding)
    variant_costs = []
    if config.lora.use_dora:
        train_s, val_s, decode_s = (x * DORA_TIME_RATIO for x in (train_s, val_s, decode_s))
        variant_costs.append(f"DoRA x{DORA_TIME_RATIO} training and validation time, x{DORA_MEMORY_RATIO} memory")
    if t.gradient_checkpointing:
        train_s *= CHECKPOINTING_TIME_RATIO
        variant_costs.append(f"gradient checkpointing x{CHECKPOINTING_TIME_RATIO} training time")
    if config.model.quantization != "none" and not on_gpu:
        eval_s, decode_s, bound_s = (x * CPU_QUANTIZED_DECODE_RATIO for x in (eval_s, decode_s, bound_s))
        variant_costs.append(f"a quantized base on a CPU x{CPU_QUANTIZED_DECODE_RATIO} decoding time")
    return train_s, val_s + decode_s, eval_s, decode_s, bound_s, variant_costs


def _refuse_unplannable(config: Config) -> None:
    """A method that trains on the model's own samples has lengths no plan can know before it runs."""
    from mathtune.train.methods import TRAINING_METHOD_TABLE

    if not TRAINING_METHOD_TABLE.get(config.train.method).plannable:
        raise MathtuneError(f"mathtune plan covers train.method sft; {config.train.method} samples from the model, "
                            "whose lengths cannot be known before it runs")


def make_plan(config: Config, device: str | None = None, world_size: int = 1) -> Plan:
    """The plan for this config on `device` (h100, a100, cpu, ...; default: this machine's)."""
    from mathtune.models.load import load_tokenizer
    from mathtune.models.selfcheck import planned_paths
    from mathtune.train.trainer import refuse_all_too_long, training_fewshot

    _refuse_unplannable(config)
    device = (device or _detected_device()).lower()
    known = {e["device"] for e in throughputs()} | set(PEAK_TFLOPS)
    if device not in known:  # said before the data and the tokenizer are read
        raise MathtuneError(f"no throughput measured on '{device}' and no peak on record "
                            f"(known: {', '.join(sorted(known))})")
    problems = training_set(config)  # data.mix sources train too
    train, val = problems.train, problems.val
    test, builder = load_problems(resolve_request(EvalRequest.from_config(config)))
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    shape = _model_shape(config.model.name_or_path, config)

    limit = config.data.max_length
    fewshot = training_fewshot(config)  # plain5's exemplars, drawn once for both splits
    train_len, train_ans = _lengths(config, tokenizer, train, fewshot)
    val_len, val_ans = _lengths(config, tokenizer, val, fewshot)
    refuse_all_too_long(train_len, limit, "training")  # what training would refuse, in its words
    refuse_all_too_long(val_len, limit, "validation")
    t = config.train
    sched = _training_schedule(config, train_len, train_ans, val_len, val_ans, world_size)
    kept, kept_val, steps, val_passes = sched["kept"], sched["kept_val"], sched["steps"], sched["val_passes"]
    on_gpu = device != "cpu"
    rates = _rates(device, shape)
    train_flops = t.epochs * sum(training_example_flops(shape, x, c) for x, c in kept)
    own = t.epochs * sum(adapter_flops(shape, x) for x, _ in kept)  # the adapter's share, for this model and rank
    val_flops = val_passes * sum(validation_example_flops(shape, x, c) for x, c in kept_val)
    sample = test[:50]  # the prompt length of the evaluation, from the first problems
    prompt = sum(len(prompt_ids(builder.render(p.question, tokenizer), tokenizer, builder.kind))
                 for p in sample) / max(1, len(sample))
    # train.select_by exact_match: every validation pass also decodes the accuracy problems (every
    # process decodes all of them, so this part does not shrink with more processes).
    accuracy_n = min(t.accuracy_problems, len(val)) if t.select_by == "exact_match" else 0
    per_answer = _answer_flops(config, shape, prompt)
    eval_flops = 2 * len(test) * config.eval.samples * per_answer  # base and tuned
    decode_flops = val_passes * accuracy_n * per_answer
    answer_lengths, answers_from = expected_answer_lengths(config, [c for _, c in kept])
    train_s, val_s, eval_s, decode_s, bound_s, variant_costs = _times(
        config, shape, rates, train_flops=train_flops, val_flops=val_flops, test_problems=len(test),
        accuracy_n=accuracy_n, val_passes=val_passes, prompt=prompt, on_gpu=on_gpu, world_size=world_size,
        answer_lengths=answer_lengths)
    quantization = config.model.quantization
    basis = rates["basis"]
    if variant_costs:
        basis += "; measured ratios to plain LoRA (bench/adapter_costs.py, BENCHMARKS.md): " + ", ".join(variant_costs)
    if quantization != "none" and on_gpu:
        basis += ("; measured without quantization: a quantized base also dequantizes every layer in each pass, "
                  "which this time does not count on a GPU (not measured there)")
    hours = (train_s + val_s + eval_s) / 3600
    return Plan(
        name=config.name,  # the report's title and the run folder's default name
        device=device,
        world_size=world_size,
        # What the model is asked, as every summary of the run states it (evaluation.request.protocol_text).
        prompts=PlanPrompts(train=config.data.prompt, eval=config.eval.prompt, thinking=config.model.thinking),
        data=PlanData(train=SplitPlan(**_stats(train_len), dropped_over_max_length=len(train_len) - len(kept)),
                      validation=SplitPlan(**_stats(val_len), dropped_over_max_length=len(val_len) - len(kept_val)),
                      test_problems=len(test), max_length=limit),
        train_tokens_per_epoch=sum(x for x, _ in kept),
        optimizer_steps=steps,
        steps_per_epoch=sched["steps_per_epoch"],
        validation_passes=val_passes,
        trainable_params=shape["trainable_params"],
        base_params=shape["base_params"],
        total_params=shape["total_params"],
        params_definition=PARAMS_DEFINITION,
        shape={k: v for k, v in shape.items() if k not in ("trainable_params", "total_params")},
        flops=PlanFlops(train=train_flops, validation=val_flops, evaluation=eval_flops, formula=FLOPS_FORMULA,
                        train_adapter=own, adapter_share_pct=round(100 * own / train_flops, 2) if train_flops else None,
                        validation_decoding=decode_flops if accuracy_n else None),
        time_s=PlanTimes(train=round_seconds(train_s), validation=round_seconds(val_s),
                         evaluation=round_seconds(eval_s), total=round_seconds(train_s + val_s + eval_s),
                         evaluation_bound=round_seconds(bound_s),
                         validation_decoding=round_seconds(decode_s) if accuracy_n else None),
        evaluation=PlanEvaluation(prompt_tokens_mean=round(prompt, 1), samples=config.eval.samples,
                                  dtype_bytes=2 if on_gpu else 4, decode_formula=DECODE_FORMULA,
                                  model=config.model.name_or_path, prompt=config.eval.prompt,
                                  max_new_tokens=config.eval.max_new_tokens,
                                  answer_tokens_mean=round(sum(answer_lengths) / len(answer_lengths), 1),
                                  answer_tokens_from=answers_from),
        rates=PlanRates(**{k: rates[k] for k in ("source", "train_flops_per_s", "decode_flops_per_s", "weight_bytes_per_s")}),
        accuracy_problems=accuracy_n or None,
        time_extrapolated=rates["extrapolated"],
        time_basis=basis,
        rates_from=rates["short"],
        cost_usd=round(hours * t.gpu_hourly_usd * world_size, 2) if on_gpu else None,
        cost_basis=f"{world_size} GPU(s) x ${t.gpu_hourly_usd}/h" if on_gpu else "not applicable on a CPU",
        **_memory_fields(config, shape, sched, on_gpu, device),
        quantization=quantization,
        paths=planned_paths(config.model.attn_implementation, t.packing, on_gpu),
        adapter=_adapter_variant(config),
        disk_bytes=disk_estimate(config, shape, tokenizer, builder, test, steps),
    )


# What a run writes beside its checkpoints and records, measured on the tiny test runs and on
# Qwen2-1.5B runs: the report with its figures (~0.5 MB, the HTML embeds the PNGs), analysis.json,
# run.log, the metrics and summaries.
REPORT_AND_LOGS_BYTES = 600_000
CHECKPOINT_EXTRA_BYTES = 60_000  # RNG state, training arguments, scheduler, model card, the optimizer's own bookkeeping


def disk_estimate(config: Config, shape: dict, tokenizer, builder, test: list, steps: int) -> dict:
    """What the run will write into its folder, in bytes, by part, from the numbers that decide
    it: the adapter (fp32, as PEFT saves it); each checkpoint (the adapter, Adam's two moments,
    the tokenizer the trainer saves beside them), times the checkpoints on disk at once (the
    best and the latest, and a new one while it is written); the records of every evaluation."""
    adapter = shape["trainable_params"] * 4 + 10_000
    tokenizer_file = tokenizer.backend_tokenizer.to_str(pretty=True) if hasattr(tokenizer, "backend_tokenizer") else ""
    checkpoint = shape["trainable_params"] * 4 * 3 + len(tokenizer_file.encode()) + CHECKPOINT_EXTRA_BYTES
    checkpoints = min(3, math.ceil(steps / config.train.eval_every_steps) + 1)
    e = config.eval
    sample = test[:50]
    per_record = (sum(len(p.question.encode()) + len(p.answer.encode()) + len(builder.render(p.question, tokenizer))
                      for p in sample) / max(1, len(sample)) + 4 * e.max_new_tokens * e.samples + 600)
    variants = e.probe.variants * len(e.probe.kinds) if e.probe is not None else 0  # the probe's, per problem
    records = len(test) * 2 * per_record * (1 + variants)  # base and tuned
    parts = {"adapter": adapter, "checkpoints": checkpoint * checkpoints, "records": records,
             "report_and_logs": REPORT_AND_LOGS_BYTES}
    return {**{k: int(v) for k, v in parts.items()}, "total": int(sum(parts.values())),
            "checkpoint": int(checkpoint), "checkpoints_at_once": checkpoints}


def _peak_memory(config: Config, shape: dict, tokens: dict, on_gpu: bool, quantization: str) -> tuple[dict, dict | None]:
    """Peak training memory by part for one micro-batch's tokens (micro_batch_tokens), and this
    machine's measured runtime it used (None: the default)."""
    measured = None if on_gpu else _nearest_measurement(shape, "cpu_runtime_bytes")
    runtime = 0 if on_gpu else measured["cpu_runtime_bytes"] if measured else CPU_RUNTIME_BYTES
    memory = training_memory(shape, config, quantization=quantization, dtype_bytes=2 if on_gpu else 4,
                             tokens_in_memory=tokens["tokens_in_memory"],
                             answer_tokens_in_memory=tokens["answer_tokens_in_memory"], runtime_bytes=runtime)
    if config.lora.use_dora and quantization == config.model.quantization:
        # DoRA's extra pass keeps more for the backward: its measured ratio, as a part
        memory["dora_extra"] = (DORA_MEMORY_RATIO - 1) * memory["total"]
        memory["total"] += memory["dora_extra"]
    return memory, measured


# A plan whose peak is above this share of the memory it would run in is warned about: the rest
# is for what the estimate leaves out (the allocator's fragmentation, other processes).
MEMORY_SHARE = 0.85


def memory_available(device: str, on_gpu: bool) -> tuple[float, str] | None:
    """The bytes a run planned for `device` may use here, in words; None for a GPU plan made on
    a machine without that GPU."""
    if on_gpu:
        import torch

        if not torch.cuda.is_available() or _detected_device() != device:
            return None
        total = torch.cuda.mem_get_info(0)[1]
        return total, f"the GPU's {total / 2**30:.1f} GiB"
    import psutil  # installed with accelerate, which trl requires

    free = psutil.virtual_memory().available
    return free, f"this machine's {free / 2**30:.1f} GiB of free memory"


def memory_fit(config: Config, shape: dict, sched: dict, on_gpu: bool, device: str, peak: float) -> dict | None:
    """When the peak is above MEMORY_SHARE of the memory here: that memory, and the largest
    smaller batch_size (with gradient accumulation making up the same examples per optimizer
    step, so the same steps) whose peak fits; None when the plan fits."""
    available = memory_available(device, on_gpu)
    if available is None or peak <= MEMORY_SHARE * available[0]:
        return None
    t = config.train
    per_step = t.batch_size * t.gradient_accumulation_steps
    fits = None
    for batch in sorted((b for b in range(1, t.batch_size) if per_step % b == 0), reverse=True):
        smaller, _ = _peak_memory(config, shape, micro_batch_tokens(config, sched["kept"], batch), on_gpu,
                                  config.model.quantization)
        if smaller["total"] <= MEMORY_SHARE * available[0]:
            fits = {"batch_size": batch, "gradient_accumulation_steps": per_step // batch,
                    "peak_memory_gib": round(smaller["total"] / 2**30, 1)}
            break
    return {"available_bytes": round(available[0]), "available": available[1], "share": MEMORY_SHARE, "fits": fits}


def _memory_fields(config: Config, shape: dict, sched: dict, on_gpu: bool, device: str) -> dict:
    """The plan's peak training memory, by part, a quantized base's full-precision figure, and a
    warning when it does not fit here."""
    quantization = config.model.quantization
    memory, measured = _peak_memory(config, shape, sched, on_gpu, quantization)
    unquantized, _ = _peak_memory(config, shape, sched, on_gpu, "none")
    return {
        "memory_warning": memory_fit(config, shape, sched, on_gpu, device, memory["total"]),
        "peak_memory_gib": round(memory["total"] / 2**30, 1),
        "peak_memory_parts_bytes": {k: round(v) for k, v in memory.items() if k != "total"},
        "peak_memory_basis": _memory_basis(quantization, on_gpu, measured),
        "full_precision": None if quantization == "none" else FullPrecision(
            dtype="bfloat16" if on_gpu else "float32",
            peak_memory_gib=round(unquantized["total"] / 2**30, 1),
            weights_gib=round(unquantized["weights"] / 2**30, 2)),
    }


def _memory_basis(quantization: str, on_gpu: bool, measured: dict | None) -> str:
    if on_gpu:
        runtime = ""
    elif measured:
        runtime = (f" + the process's resident memory beyond those tensors as this machine measured it "
                   f"({measured['cpu_runtime_bytes'] / 2**30:.2f} GiB: the run {measured['run']}, {measured['when']}, "
                   f"a model of {measured['base_params']:,} parameters)")
    else:
        runtime = f" + the process's runtime ({CPU_RUNTIME_BYTES / 2**30:.2f} GiB on a CPU, before any run measured it here)"
    return ("weights + 16 bytes per trainable parameter (weights, gradient, two Adam moments) + the saved "
            "activations of every layer by its shapes for the tokens of one micro-batch + the LM head's fp32 "
            "tiles over its answer tokens" + runtime
            + ("; a quantized base: its linear layers at "
               f"{QUANTIZED_BYTES[quantization]:.3f} bytes per weight, the rest in fp32 (PEFT's k-bit preparation), "
               "one layer dequantized at a time" if quantization != "none" else "")
            + "; an estimate, not a measurement")


def record_measured_rates(run_dir: Path) -> Path | None:
    """After a finished run on this machine: the rates it reached, from its plan.json (the
    FLOPs and the rates it planned with) and what its summaries recorded, kept in the user's
    cache for the next plan (core.measured_rates). Returns the file written, or None where the
    run has nothing to measure (no plan with shapes, planned for another device, resumed)."""
    run_dir = Path(run_dir)
    path = run_dir / "plan.json"
    if not path.is_file():
        return None
    plan = read_plan(path)
    if plan.device != _detected_device() or plan.world_size != 1:
        return None
    used, time_s = plan.rates, plan.time_s
    entry = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "run": str(run_dir.resolve()),
             "base_params": plan.base_params, "quantization": plan.quantization, "adapter": plan.adapter}
    train = run_dir / "train" / "summary.json"
    summary = read_train_summary(train) if train.is_file() else None
    decoding = time_s.validation_decoding or 0
    planned = time_s.train + time_s.validation - decoding
    actual = ((summary.wall_time_s if summary else None) or 0) - decoding
    if summary and not summary.resumed_from_step and planned > 0 and actual > 0:
        entry["train_flops_per_s"] = used.train_flops_per_s * planned / actual
        entry["training_planned_actual_s"] = [round(planned, 3), round(actual, 3)]
        runtime = _measured_runtime_bytes(plan, summary)
        if runtime is not None:
            entry["cpu_runtime_bytes"] = runtime
    modeled, taken = _evaluations_modeled(run_dir, plan)
    if plan.quantization == "none" and modeled > 0 and taken > 0:  # a quantized base's ratio is its own
        entry["decode_flops_per_s"] = used.decode_flops_per_s * modeled / taken
        entry["weight_bytes_per_s"] = used.weight_bytes_per_s * modeled / taken
        entry["evaluation_modeled_actual_s"] = [round(modeled, 3), round(taken, 3)]
    lengths = _answer_lengths(run_dir)
    if lengths and plan.evaluation.model:  # for the next plan's expected evaluation time
        entry.update(model=plan.evaluation.model, eval_prompt=plan.evaluation.prompt,
                     answer_lengths=lengths)
    if len(entry) == 5:
        return None
    return record_rates(this_machine(), entry)


def _answer_lengths(run_dir: Path, kept: int = 400) -> list[int]:
    """The tokens the base and tuned evaluations generated per answer (at most `kept`, spread
    evenly, sorted): what the next plan of this model expects an answer to cost."""
    lengths = []
    for name in ("base", "tuned"):
        path = run_dir / "eval" / f"{name}.jsonl"
        if path.is_file():
            lengths += [r["num_generated_tokens"] for r in read_jsonl(path) if r.get("num_generated_tokens")]
    lengths.sort()
    step = max(1, math.ceil(len(lengths) / kept))
    return lengths[::step]


def _measured_runtime_bytes(plan: Plan, summary: TrainSummary) -> int | None:
    """On a CPU: the training process's peak resident memory beyond the tensors the plan adds up
    (the libraries, the allocator's free blocks, the tokenizer and data), for the next plan's
    "runtime" part."""
    parts = plan.peak_memory_parts_bytes or {}
    if summary.peak_memory_kind != "cpu_max_rss" or not summary.peak_memory_bytes or not parts:
        return None
    tensors = sum(v for k, v in parts.items() if k != "runtime")
    return max(0, round(summary.peak_memory_bytes - tensors))


def _evaluations_modeled(run_dir: Path, plan: Plan) -> tuple[float, float]:
    """The decoding time the plan's rates give for the work the base and tuned evaluations did
    (their generated tokens, rows at their batch, refilled as rows finish), and the time taken."""
    modeled = taken = 0.0
    ev, rates = plan.evaluation, dataclasses.asdict(plan.rates)
    for name in ("base", "tuned"):
        path = run_dir / "eval" / f"{name}.summary.json"
        s = read_eval_summary(path) if path.is_file() else None
        rows = (s.timed_problems if s else 0) * ev.samples
        if not rows or not s.wall_time_s or s.untimed_problems:
            continue
        at_once = min(s.batch_size or 1, rows)
        per_row = s.generated_tokens / rows
        modeled += decode_seconds(plan.shape, rates, steps=s.generated_tokens / at_once,
                                  rows_per_step=at_once, context=ev.prompt_tokens_mean + per_row / 2,
                                  prompt_tokens=ev.prompt_tokens_mean, rows=rows, dtype_bytes=ev.dtype_bytes)
        taken += s.wall_time_s
    return modeled, taken


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _adapter_variant(config: Config) -> str:
    lora = config.lora
    return f"{adapter_variant(lora.use_dora, lora.use_rslora)} r {lora.r}, alpha {lora.alpha}"


# The plan's text fits a terminal: no line over this many characters; the formulas and the rates'
# full derivation are in --verbose and --json.
LINE_WIDTH = 100


def format_plan(plan: Plan, verbose: bool = False) -> str:
    d, tr, va = plan.data, plan.data.train, plan.data.validation
    f, rates = plan.flops, plan.rates
    fields = [
        ("data", f"train {tr.examples:,} examples ({tr.dropped_over_max_length:,} over max_length "
                 f"{d.max_length}, dropped), validation {va.examples:,} ({va.dropped_over_max_length:,} "
                 f"dropped), test {d.test_problems:,} problems"),
        ("prompts", f"training {plan.prompts.train}, evaluation {plan.prompts.eval}; template thinking "
                    f"{plan.prompts.thinking}"),
        ("tokens", f"{plan.train_tokens_per_epoch:,} per epoch; example length mean {tr.mean}, p99 {tr.p99}, "
                   f"max {tr.max}"),
        ("steps", f"{plan.optimizer_steps} optimizer step{_s(plan.optimizer_steps)} "
                  f"({plan.steps_per_epoch} per epoch), {plan.validation_passes} validation pass"
                  f"{'' if plan.validation_passes == 1 else 'es'}"
                  + (f", each decoding {plan.accuracy_problems} problems for exact match"
                     if plan.accuracy_problems else "")),
        ("params", f"{plan.trainable_params:,} trainable of {plan.total_params:,} (base "
                   f"{plan.base_params:,} + adapter); {plan.adapter}"),
        ("FLOPs", f"train {f.train:.2e}" + (f" (the adapter's own {f.adapter_share_pct}%)"
                                             if f.adapter_share_pct is not None else "")
                  + f", validation {f.validation:.2e}, evaluation {f.evaluation:.2e} (at most)"),
        ("time", _time_text(plan)),
        ("cost", _cost_text(plan)),
        ("memory", f"about {plan.peak_memory_gib} GiB at the peak of training (estimate): " + _memory_parts(plan)),
        *([("disk", disk_parts(plan.disk_bytes))] if plan.disk_bytes else []),
        *([("WARNING", memory_warning_text(plan))] if plan.memory_warning else []),
        ("rates", f"training {rates.train_flops_per_s / 1e9:,.1f} GFLOP/s, decoding "
                  f"{rates.decode_flops_per_s / 1e9:,.1f} GFLOP/s, weights read at "
                  f"{rates.weight_bytes_per_s / 1e9:,.1f} GB/s; from {plan.rates_from}"),
        *([("paths", _paths(plan.paths))] if plan.paths else []),
    ]
    if verbose:
        fields += [("basis", plan.time_basis), ("FLOPs are", f.formula),
                   ("decoding", plan.evaluation.decode_formula),
                   ("memory is", plan.peak_memory_basis)]
    title = f"plan of {plan.name} on {plan.device}" + (f" x{plan.world_size}" if plan.world_size > 1 else "")
    lines = [title]
    for label, text in fields:
        lines += textwrap.wrap(text, LINE_WIDTH, initial_indent=f"  {label:<10} ", subsequent_indent=" " * 13,
                               break_on_hyphens=False)
    return "\n".join(lines)


def memory_warning_text(plan: Plan) -> str:
    """The plan's peak against the memory here, and what fits with the same optimizer steps."""
    w = plan.memory_warning
    text = (f"{plan.peak_memory_gib} GiB is over {round(w['share'] * 100)}% of {w['available']}; ")
    fits = w.get("fits")
    if fits:
        return text + (f"train.batch_size {fits['batch_size']} with train.gradient_accumulation_steps "
                       f"{fits['gradient_accumulation_steps']} (the same optimizer steps) needs about "
                       f"{fits['peak_memory_gib']} GiB")
    return text + ("no smaller batch fits with the same optimizer steps; try train.gradient_checkpointing, "
                   "a smaller data.max_length or model.quantization 4bit")


def _time_text(plan: Plan) -> str:
    ts, ev = plan.time_s, plan.evaluation
    text = (f"about {duration(ts.total)}: train {duration(ts.train)}, validation {duration(ts.validation)}"
            + (f" (decoding {duration(ts.validation_decoding)})" if ts.validation_decoding is not None else "")
            + f", evaluation {duration(ts.evaluation)}")
    return (text + f" for answers as long as {ev.answer_tokens_from}; at most "
            f"{duration(ts.evaluation_bound)} if every answer runs to max_new_tokens {ev.max_new_tokens}")


def _cost_text(plan: Plan) -> str:
    cost = plan.cost_usd
    if cost is None:
        return plan.cost_basis
    return (f"${cost:.2f}" if cost >= 0.01 else "under $0.01") + f" ({plan.cost_basis})"


def _paths(paths: dict) -> str:
    return (", ".join(f"{kind} {path}" for kind, path in paths.items())
            + " (each fast one checked on the device before its first use)")


def disk_parts(disk: dict) -> str:
    """'about 1.4 MB written to the run folder (estimate): adapter 42.8 KB, checkpoints 3 x 208 KB, ...'."""
    return (f"about {size_text(disk['total'])} written to the run folder (estimate): adapter {size_text(disk['adapter'])}, "
            f"checkpoints {disk['checkpoints_at_once']} x {size_text(disk['checkpoint'])}, records "
            f"{size_text(disk['records'])}, report and logs {size_text(disk['report_and_logs'])}")


def _memory_parts(plan: Plan) -> str:
    parts = {k: f"{v / 2**30:.2f}" for k, v in (plan.peak_memory_parts_bytes or {}).items()}
    text = (f"weights {parts.get('weights')}, adapter and optimizer {parts.get('adapter_and_optimizer')}, "
            f"activations and logits {parts.get('activations')}"
            + (f", DoRA's extra pass {parts['dora_extra']}" if "dora_extra" in parts else "")
            + (f", runtime {parts['runtime']}" if float(parts.get("runtime") or 0) else "") + " GiB")
    full = plan.full_precision
    if full:
        text += (f"; the base in {plan.quantization} (a {full.dtype} base: {full.weights_gib} GiB of weights, "
                 f"about {full.peak_memory_gib} GiB at the peak)")
    return text


def write_plan(plan: Plan, run_dir: Path) -> None:
    write_plan_record(Path(run_dir) / "plan.json", plan)
