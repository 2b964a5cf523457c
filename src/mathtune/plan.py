"""`mathtune plan`: what a run will do and cost, before it runs.

    plan = make_plan(config, device="h100")     # reads the data and the tokenizer, no weights
    print(format_plan(plan))

It tokenizes every training and validation example with the real tokenizer, counts what
data.max_length drops, works out optimizer steps and validation passes as the trainer will,
counts trainable parameters on a weightless (meta-device) copy of the model, and estimates
FLOPs, wall time, cost and peak memory. Times come from measured throughputs kept as data
(throughputs.json, the figures of BENCHMARKS.md), scaled by parameter count; a device with
no measured entry gets its FLOPs at a stated share of the device's peak. `mathtune run`
prints the plan first and writes it to RUN_DIR/plan.json, where the analysis
(analysis.analyze.plan_vs_actual) puts it next to what happened.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import adapter_variant
from mathtune.core.runfiles import write_json_atomic
from mathtune.core.terminal import duration, round_seconds

# Dense bf16 peak (TFLOP/s) of devices a plan can be asked for by name, and the share of it
# assumed where no throughput was measured on that device.
PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "l4": 121.0}
ASSUMED_UTILISATION = 0.30
# Scaling a measured throughput by parameter count holds near the measured size; a model more
# than this many times smaller or larger is an extrapolation, and the plan says so.
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
PARAMS_DEFINITION = "total = the base model's parameters + the LoRA adapter's (the trainable ones)"
FLOPS_FORMULA = ("training, per example of T tokens with C answer tokens: forward 2*N*T + 2*H*C + 2*L*d*T^2, "
                 "backward (activation gradients only: the base is frozen) 2*N*T + 2*H*C + 4*L*d*T^2, with N the "
                 "non-embedding parameters, H the output layer's, L layers of attention width d; validation "
                 "2*(N+H)*T per example per pass; evaluation (assuming every answer runs to "
                 "max_new_tokens) 2*(N+H)*(prompt + max_new_tokens) per problem and model; with train.select_by "
                 "exact_match, validation decoding likewise per accuracy problem and validation pass")


def throughputs() -> list[dict]:
    """The measured throughputs shipped with the package (throughputs.json)."""
    return json.loads((resources.files("mathtune") / "throughputs.json").read_text(encoding="utf-8"))


def _detected_device() -> str:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0).lower()
        return next((key for key in PEAK_TFLOPS if key in name), name)
    return "cpu"


def _model_shape(name_or_path: str, config: Config) -> dict:
    """Parameter counts from the model's config on the meta device: no weights are read.
    total_params counts the base model and the adapter, as train/summary.json does."""
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
    return {"base_params": base, "trainable_params": trainable, "total_params": base + trainable,
            "non_embedding_params": base - embedding * (1 if getattr(text, "tie_word_embeddings", False) else 2),
            "head_params": embedding, "layers": text.num_hidden_layers,
            "attention_width": text.num_attention_heads * head_dim, "hidden": text.hidden_size,
            "vocab": text.vocab_size, "quantizable_params": sum(linear), "largest_linear_params": max(linear)}


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


def training_memory(shape: dict, config: Config, *, quantization: str, dtype_bytes: int, tokens_in_memory: int) -> dict:
    """Peak training memory, in bytes, by part: the base weights; the adapter with its gradient
    and Adam's two moments; per token of a micro-batch, the float32 logits and their gradient and the
    saved activations of every layer (about 34 x hidden values per layer without gradient
    checkpointing), for the tokens of one micro-batch (accumulated micro-batches run one after
    another); and, with a quantized base, one layer's weights dequantized at a time."""
    hidden, layers = shape["hidden"], shape["layers"]
    per_token = 8 * shape["vocab"] + (2 if config.train.gradient_checkpointing else 34) * hidden * layers * dtype_bytes
    parts = {"weights": weight_bytes(shape, quantization, dtype_bytes),
             "adapter_and_optimizer": 16 * shape["trainable_params"],
             "activations": tokens_in_memory * per_token,
             "dequantized_layer": 0 if quantization == "none" else shape["largest_linear_params"] * dtype_bytes}
    return {**parts, "total": sum(parts.values())}


def _lengths(config: Config, tokenizer, problems) -> tuple[list[int], list[int]]:
    """Each example's tokens and answer tokens, from the very ids training feeds."""
    from mathtune.train.trainer import gold_examples

    examples = gold_examples(config, tokenizer, problems)
    return [len(e) for e in examples], [len(e.answer_ids) for e in examples]


def packed_rows(lengths: list[int], capacity: int) -> int:
    """Rows that best-fit-decreasing packing (TRL's packing_strategy="bfd") makes of examples
    of these lengths: longest first, each into the row with the least room that still fits it."""
    import bisect

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


def make_plan(config: Config, device: str | None = None, world_size: int = 1) -> dict:
    """The plan for this config on `device` (h100, a100, cpu, ...; default: this machine's)."""
    from mathtune.evaluation.request import EvalRequest, load_problems
    from mathtune.models.load import load_tokenizer
    from mathtune.models.selfcheck import planned_paths
    from mathtune.task.data import DataFormat, training_splits
    from mathtune.task.mix import mix_training_problems
    from mathtune.task.sequences import prompt_ids
    from mathtune.train.trainer import refuse_all_too_long

    if config.train.method != "sft":
        raise MathtuneError(f"mathtune plan covers train.method sft; {config.train.method} samples from the model, "
                            "whose lengths cannot be known before it runs")
    device = (device or _detected_device()).lower()
    known = {e["device"] for e in throughputs()} | set(PEAK_TFLOPS)
    if device not in known:  # said before the data and the tokenizer are read
        raise MathtuneError(f"no throughput measured on '{device}' and no peak on record "
                            f"(known: {', '.join(sorted(known))})")
    train, val = training_splits(config.data.source, val_fraction=config.data.val_fraction, seed=config.seed,
                                 train_limit=config.data.train_limit, fmt=DataFormat.of(config.data))
    train = train + mix_training_problems(config)[0]  # data.mix sources train too
    test, builder = load_problems(EvalRequest.from_config(config))
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    shape = _model_shape(config.model.name_or_path, config)

    limit = config.data.max_length
    train_len, train_ans = _lengths(config, tokenizer, train)
    val_len, _ = _lengths(config, tokenizer, val)
    refuse_all_too_long(train_len, limit, "training")  # what training would refuse, in its words
    refuse_all_too_long(val_len, limit, "validation")
    kept = [(t, c) for t, c in zip(train_len, train_ans) if t <= limit]
    kept_val = [t for t in val_len if t <= limit]
    t = config.train
    per_step = t.batch_size * t.gradient_accumulation_steps * world_size
    kept_tokens = sum(x for x, _ in kept)
    rows = packed_rows([x for x, _ in kept], limit) if t.packing else len(kept)
    steps_per_epoch = max(1, math.ceil(rows / per_step))
    steps = math.ceil(steps_per_epoch * t.epochs)
    val_passes = steps // t.eval_every_steps + 1 + (1 if steps % t.eval_every_steps else 0)

    n, head, layers, d = shape["non_embedding_params"], shape["head_params"], shape["layers"], shape["attention_width"]
    train_flops = t.epochs * sum(4 * n * x + 4 * head * c + 6 * layers * d * x * x for x, c in kept)
    val_flops = val_passes * sum(2 * n * x + 2 * head * x for x in kept_val)
    sample = test[:50]  # the prompt length of the evaluation, from the first problems
    mean_prompt = sum(len(prompt_ids(builder.render(p.question, tokenizer), tokenizer, builder.kind))
                      for p in sample) / max(1, len(sample))
    generated = 2 * len(test) * config.eval.samples * config.eval.max_new_tokens  # base and tuned
    eval_flops = 2 * len(test) * config.eval.samples * (2 * (n + head)) * (mean_prompt + config.eval.max_new_tokens)
    # train.select_by exact_match: every validation pass also decodes the accuracy problems (every
    # process decodes all of them, so this part does not shrink with more processes).
    accuracy_n = min(t.accuracy_problems, len(val)) if t.select_by == "exact_match" else 0
    decoded = val_passes * accuracy_n * config.eval.max_new_tokens
    decode_flops = val_passes * accuracy_n * (2 * (n + head)) * (mean_prompt + config.eval.max_new_tokens)

    entry = next((e for e in throughputs() if e["device"] == device), None)
    if entry is not None:
        scale = shape["base_params"] / entry["params"]  # the entry measured a base model's size
        train_s = t.epochs * kept_tokens / entry["train_tokens_per_s"] * scale / world_size
        val_s = val_passes * sum(kept_val) / (3 * entry["train_tokens_per_s"]) * scale / world_size
        eval_s = generated / entry["eval_tokens_per_s"] * scale / world_size
        decode_s = decoded / entry["eval_tokens_per_s"] * scale
        factor = f"x{scale:.2f}" if scale >= 0.01 else f"x{scale:.2g}"
        basis = (f"measured throughput '{entry['id']}' ({entry['source']}): training {entry['train_tokens_per_s']} "
                 f"tokens/s and evaluation {entry['eval_tokens_per_s']} generated tokens/s on a "
                 f"{entry['params'] / 1e9:.2f}B model, scaled by parameter count {factor}; validation at 3x the "
                 "training rate (forward only)")
        if scale < 1 / EXTRAPOLATION_FACTOR:
            basis += (f"; extrapolated: this model ({shape['base_params']:,} parameters) is {1 / scale:,.0f}x smaller "
                      "than the measured one, far outside what was measured, where the fixed costs of every step "
                      "that parameter-count scaling leaves out dominate: the real time is likely longer")
        elif scale > EXTRAPOLATION_FACTOR:
            basis += (f"; extrapolated: this model ({shape['base_params']:,} parameters) is {scale:,.0f}x larger "
                      "than the measured one, far outside what was measured: a rough estimate")
    else:  # a known peak (checked above)
        rate = PEAK_TFLOPS[device] * 1e12 * ASSUMED_UTILISATION * world_size
        train_s, val_s, eval_s = train_flops / rate, val_flops / rate, eval_flops / rate
        decode_s = decode_flops / (rate / world_size)
        basis = (f"no throughput measured on {device}: FLOPs at {round(ASSUMED_UTILISATION * 100)}% of its "
                 f"{PEAK_TFLOPS[device]} TFLOP/s bf16 peak")
    on_gpu = device != "cpu"
    variant_costs = []
    if config.lora.use_dora:
        train_s, val_s, decode_s = (x * DORA_TIME_RATIO for x in (train_s, val_s, decode_s))
        variant_costs.append(f"DoRA x{DORA_TIME_RATIO} training and validation time, x{DORA_MEMORY_RATIO} memory")
    if t.gradient_checkpointing:
        train_s *= CHECKPOINTING_TIME_RATIO
        variant_costs.append(f"gradient checkpointing x{CHECKPOINTING_TIME_RATIO} training time")
    if config.model.quantization != "none" and not on_gpu:
        eval_s, decode_s = eval_s * CPU_QUANTIZED_DECODE_RATIO, decode_s * CPU_QUANTIZED_DECODE_RATIO
        variant_costs.append(f"a quantized base on a CPU x{CPU_QUANTIZED_DECODE_RATIO} decoding time")
    if variant_costs:
        basis += "; measured ratios to plain LoRA (bench/adapter_costs.py, BENCHMARKS.md): " + ", ".join(variant_costs)
    val_s += decode_s  # validation time includes its decoding
    hours = (train_s + val_s + eval_s) / 3600
    dtype_bytes = 2 if on_gpu else 4
    # One micro-batch of one process is in memory at a time: batch_size packed rows of max_length,
    # or batch_size examples padded to the longest.
    tokens_in_memory = t.batch_size * (limit if t.packing else max(x for x, _ in kept))
    quantization = config.model.quantization
    memory = training_memory(shape, config, quantization=quantization, dtype_bytes=dtype_bytes,
                             tokens_in_memory=tokens_in_memory)
    unquantized = training_memory(shape, config, quantization="none", dtype_bytes=dtype_bytes,
                                  tokens_in_memory=tokens_in_memory)
    if quantization != "none" and on_gpu:
        basis += ("; measured without quantization: a quantized base also dequantizes every layer in each pass, "
                  "which this time does not count on a GPU (not measured there)")
    if config.lora.use_dora:  # DoRA's extra pass keeps more for the backward: its measured ratio, as a part
        memory["dora_extra"] = (DORA_MEMORY_RATIO - 1) * memory["total"]
        memory["total"] += memory["dora_extra"]
    return {
        "name": config.name,  # the report's title and the run folder's default name
        "device": device,
        "world_size": world_size,
        "data": {"train": {**_stats(train_len), "dropped_over_max_length": len(train_len) - len(kept)},
                 "validation": {**_stats(val_len), "dropped_over_max_length": len(val_len) - len(kept_val)},
                 "test_problems": len(test), "max_length": limit},
        "train_tokens_per_epoch": kept_tokens,
        "optimizer_steps": steps,
        "steps_per_epoch": steps_per_epoch,
        "validation_passes": val_passes,
        "trainable_params": shape["trainable_params"],
        "base_params": shape["base_params"],
        "total_params": shape["total_params"],
        "params_definition": PARAMS_DEFINITION,
        "flops": {"train": train_flops, "validation": val_flops, "evaluation": eval_flops, "formula": FLOPS_FORMULA,
                  **({"validation_decoding": decode_flops} if accuracy_n else {})},
        "time_s": {"train": round_seconds(train_s), "validation": round_seconds(val_s),
                   "evaluation": round_seconds(eval_s), "total": round_seconds(train_s + val_s + eval_s),
                   **({"validation_decoding": round_seconds(decode_s)} if accuracy_n else {})},
        "accuracy_problems": accuracy_n or None,
        "time_extrapolated": entry is not None and not 1 / EXTRAPOLATION_FACTOR <= scale <= EXTRAPOLATION_FACTOR,
        "time_basis": basis,
        "cost_usd": round(hours * t.gpu_hourly_usd * world_size, 2) if on_gpu else None,
        "cost_basis": f"{world_size} GPU(s) x ${t.gpu_hourly_usd}/h" if on_gpu else "not applicable on a CPU",
        "peak_memory_gib": round(memory["total"] / 2**30, 1),
        "peak_memory_parts_bytes": {k: round(v) for k, v in memory.items() if k != "total"},
        "peak_memory_basis": ("weights + 16 bytes per trainable parameter (weights, gradient, two Adam moments) + "
                              "per token of a micro-batch: float32 logits and their gradient, and the saved "
                              "activations of every layer" + ("; a quantized base: its linear layers at "
                                                  f"{QUANTIZED_BYTES[quantization]:.3f} bytes per weight, the rest "
                                                  "in fp32 (PEFT's k-bit preparation), one layer dequantized at a "
                                                  "time" if quantization != "none" else "")
                              + "; an estimate, not a measurement"),
        "quantization": quantization,
        "paths": planned_paths(config.model.attn_implementation, t.packing, on_gpu),
        "adapter": _adapter_variant(config),
        "full_precision": None if quantization == "none" else {
            "dtype": "bfloat16" if on_gpu else "float32",
            "peak_memory_gib": round(unquantized["total"] / 2**30, 1),
            "weights_gib": round(unquantized["weights"] / 2**30, 2)},
    }


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _adapter_variant(config: Config) -> str:
    lora = config.lora
    return f"{adapter_variant(lora.use_dora, lora.use_rslora)} r {lora.r}, alpha {lora.alpha}"


def format_plan(plan: dict) -> str:
    d, tr, va = plan["data"], plan["data"]["train"], plan["data"]["validation"]
    f, ts = plan["flops"], plan["time_s"]
    lines = [
        f"plan of {plan['name']} on {plan['device']}" + (f" x{plan['world_size']}" if plan["world_size"] > 1 else ""),
        f"  data       train {tr['examples']} examples ({tr['dropped_over_max_length']} over max_length {d['max_length']}, "
        f"dropped), validation {va['examples']} ({va['dropped_over_max_length']} dropped), test {d['test_problems']} problems",
        f"  tokens     {plan['train_tokens_per_epoch']:,} per epoch; example length mean {tr['mean']}, p99 {tr['p99']}, "
        f"max {tr['max']}",
        f"  steps      {plan['optimizer_steps']} optimizer step{_s(plan['optimizer_steps'])} "
        f"({plan['steps_per_epoch']} per epoch), {plan['validation_passes']} validation pass"
        f"{'' if plan['validation_passes'] == 1 else 'es'}"
        + (f", each decoding {plan['accuracy_problems']} problems for exact match" if plan.get("accuracy_problems")
           else ""),
        f"  params     {plan['trainable_params']:,} trainable of {plan['total_params']:,} (the base model's "
        f"{plan['base_params']:,} + the adapter's {plan['trainable_params']:,}); adapter {plan.get('adapter', 'LoRA')}",
        f"  FLOPs      train {f['train']:.2e}, validation {f['validation']:.2e}, evaluation {f['evaluation']:.2e}",
        f"  time       {duration(ts['total'])} (train {duration(ts['train'])}, validation {duration(ts['validation'])}"
        + (f" of which decoding {duration(ts['validation_decoding'])}" if "validation_decoding" in ts else "")
        + f", evaluation {duration(ts['evaluation'])} if every answer runs to max_new_tokens)",
        "  cost       " + (f"${plan['cost_usd']} ({plan['cost_basis']})" if plan["cost_usd"] is not None
                            else plan["cost_basis"]),
        f"  memory     about {plan['peak_memory_gib']} GiB at the peak of training (estimate): " + _memory_parts(plan),
        f"  basis      {plan['time_basis']}",
        *([f"  paths      {_paths(plan['paths'])}"] if plan.get("paths") else []),
        f"  FLOPs are  {f['formula']}",
    ]
    return "\n".join(lines)


def _paths(paths: dict) -> str:
    return (", ".join(f"{kind} {path}" for kind, path in paths.items())
            + " (each fast one checked on the device before its first use)")


def _memory_parts(plan: dict) -> str:
    parts = {k: f"{v / 2**30:.2f}" for k, v in (plan.get("peak_memory_parts_bytes") or {}).items()}
    text = (f"base weights {parts.get('weights')} GiB, adapter and optimizer {parts.get('adapter_and_optimizer')} GiB, "
            f"activations and logits {parts.get('activations')} GiB"
            + (f", DoRA's extra pass {parts['dora_extra']} GiB" if "dora_extra" in parts else ""))
    full = plan.get("full_precision")
    if full:
        text += (f"; the base in {plan['quantization']} (a {full['dtype']} base: {full['weights_gib']} GiB of weights, "
                 f"about {full['peak_memory_gib']} GiB at the peak)")
    return text


def write_plan(plan: dict, run_dir: Path) -> None:
    write_json_atomic(Path(run_dir) / "plan.json", plan)
