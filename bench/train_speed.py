"""LoRA training speed: mathtune's training path against TRL's SFTTrainer defaults, same examples.

    python bench/train_speed.py --model PATH [--data ../shared/gsm8k] [--limit 32] [--batch-size 4]
        [--max-length 256] [--epochs 1] [--warmup-steps 1] [--steps N] [--profile-steps P]
        [--paths mathtune,trl] [--json OUT.json]
    # on a GPU (bench/gpu.sh): Qwen2-1.5B's shape, 3 warm-up + 30 timed + 3 profiled steps per path
    python bench/train_speed.py --shape qwen2-1.5b --tokenizer .device/tokenizer --data .device/gsm8k \
        --limit 1200 --batch-size 16 --max-length 512 --warmup-steps 3 --steps 30 --profile-steps 3

Every path trains the same LoRA (the reference r=8, alpha=16, dropout 0.1, all linear layers,
lr 2e-4) on the same examples (the first --limit problems of the seeded 90% train split in the
chat prompt/completion form, those longer than --max-length dropped for all), each in a fresh
process, one after the other. A path is NAME[:OPTION...]:
  mathtune  mathtune's training path (mathtune.train.run: its attention choice, packing, LM head,
            trainer settings), with validation and checkpoints switched off for the timing
  trl       SFTTrainer with its defaults: no packing, padded batches, gradient checkpointing on,
            its fused LM head, batch --batch-size, the same max_length, dtype and LoRA
  options of both:  bN        batch N instead of --batch-size (throughput against tokens per step)
                    sN        N timed steps instead of --steps (a slow path measured briefly)
                    dropout0  lora_dropout 0 instead of the reference 0.1
  of mathtune:      segments  one sdpa call per packed example (the CPU's choice) also on a GPU
                    sdpa      packed rows under sdpa's dense block-diagonal mask (eager likewise)
                    cudnn     cuDNN attention left on (mathtune.models.load.use_shape_free_attention)
                    trl-head  TRL's fused LM head as it is (on a CPU it scores every position)
                    liger-head  Liger Kernel's fused linear cross-entropy as the LM head
                    liger     Liger Kernel's RMSNorm, RoPE and SwiGLU for Qwen2
                    compile   torch.compile of every decoder layer (its cost lands in the warm-up)
  of trl:           nockpt    gradient checkpointing off;  packing  TRL's own padding-free packing

Reported per path:
- steady state, over the steps after --warmup-steps and before the profiled ones (at least 30
  on a GPU for the issue's figures; --steps sets how many, default all the data gives): tokens/s,
  s/step, achieved TFLOP/s and MFU;
- the warm-up separately: its steps' time, which holds the one-time costs (kernel selection,
  allocator growth, compilation);
- peak memory; the loss of the untrained model over all the examples through the path's own
  batches (equal objectives give equal figures) and the mean training loss (token-weighted);
- with --profile-steps, torch.profiler's top operations by device time and by CPU time over that
  many steady-state steps (left out of the timing), and on a GPU the host-device synchronisations
  per step, kernel launches per step, device busy share and allocator retries (bench/step_profile.py).

MFU = useful FLOPs of the timed steps' examples / their time / peak. An example of T tokens, C of
them with a label, costs (forward + backward; the base weights are frozen, so the backward
computes activation gradients only; LoRA's own terms omitted; recomputation by gradient
checkpointing is work, not progress, and is not counted):
    forward  = 2*N_body*T + 2*N_head*C + 2*L*d_attn*T^2     (causal attention: QK^T and AV, halved)
    backward = 2*N_body*T + 2*N_head*C + 4*L*d_attn*T^2
    total    = 4*N_body*T + 4*N_head*C + 6*L*d_attn*T^2
  N_body = linear weights of the decoder layers, N_head = vocab x hidden (only labelled positions
  need the head), L = layers, d_attn = heads x head_dim. Peak: the GPU's dense bf16/fp32 datasheet
  figure from the table below, or on a CPU the rate this script measures for a large fp32 matmul.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Dense peak TFLOP/s (no sparsity) by device name fragment: (bf16, fp32 without TF32).
GPU_PEAK_TFLOPS = {"H100": (989.0, 67.0), "H200": (989.0, 67.0), "A100": (312.0, 19.5)}


def overrides(args, batch_size: int | None = None, dropout: float | None = None) -> list[str]:
    return [f"model.name_or_path={args.model}", f"data.source={args.data}", f"data.train_limit={args.limit}",
            f"data.max_length={args.max_length}", f"train.epochs={args.epochs}",
            f"train.batch_size={batch_size or args.batch_size}", f"model.dtype={args.dtype}", "train.report_to=[]",
            "train.logging_steps=1", "train.eval_every_steps=1000000", "train.early_stopping_patience=null",
            "name=bench"] + ([] if dropout is None else [f"lora.dropout={dropout}"])


# ------------------------------------------------------------------------------ timing


def flop_terms(model_path: str) -> dict:
    from transformers import AutoConfig

    from mathtune.models.load import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model_path)).get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    kv = cfg.num_key_value_heads * head_dim
    per_layer = (cfg.hidden_size * (d_attn + 2 * kv) + d_attn * cfg.hidden_size
                 + 3 * cfg.hidden_size * cfg.intermediate_size)
    return {"N_body": cfg.num_hidden_layers * per_layer, "N_head": cfg.vocab_size * cfg.hidden_size,
            "L": cfg.num_hidden_layers, "d_attn": d_attn}


def batch_counts(batch: dict, terms: dict) -> dict:
    """Real tokens, label tokens and useful FLOPs of one collated batch, read on the host
    (before the Trainer moves it to the device, so counting costs no synchronisation)."""
    if "cu_seq_lens_q" in batch:  # padding-free: one row of examples end to end
        lengths = batch["cu_seq_lens_q"].diff().tolist()
    else:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
    labels = int((batch["labels"][:, 1:] != -100).sum())
    flops = (sum(4 * terms["N_body"] * t + 6 * terms["L"] * terms["d_attn"] * t * t for t in lengths)
             + 4 * terms["N_head"] * labels)
    return {"examples": len(lengths), "tokens": sum(lengths), "labels": labels, "flops": flops}


class Meter:
    """Times a trainer's steps (the device synchronised at both ends of each) and counts each
    step's tokens and FLOPs from its batches, read in the collator on the host. The first
    `warmup` steps are the warm-up, the next `timed` the steady state; the `profile` steps after
    them run under torch.profiler."""

    def __init__(self, trainer, terms: dict, warmup: int, timed: int, profile: int):
        import torch
        from transformers import TrainerCallback

        self.steps: list[dict] = []
        self.pending: deque[dict] = deque()  # counted batches not yet trained on (the loader reads ahead)
        self.current = self._empty()
        self.loss_sum = torch.zeros(())  # label-weighted training loss, summed on the device
        self.profile_window = None
        collate, inner, meter = trainer.data_collator, trainer.compute_loss, self

        def counting_collator(examples):
            batch = collate(examples)
            meter.pending.append(batch_counts(batch, terms))
            return batch

        def compute_loss(model, inputs, *a, **k):
            loss = inner(model, inputs, *a, **k)
            if model.training:
                counts = meter.pending.popleft()
                for key, value in counts.items():
                    meter.current[key] += value
                meter.loss_sum = meter.loss_sum.to(loss.device) + loss.detach().float() * counts["labels"]
            return loss

        trainer.data_collator = counting_collator
        trainer.compute_loss = compute_loss

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if len(meter.steps) == warmup + timed and profile:
                    from step_profile import StepProfile

                    meter.profile_window = StepProfile()
                    meter.profile_window.start()
                else:
                    meter._sync()
                meter.current = meter._empty()
                meter.step_start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                profiled = len(meter.steps) >= warmup + timed
                if not profiled:
                    meter._sync()
                meter.steps.append({**meter.current, "s": time.perf_counter() - meter.step_start,
                                    "phase": "warmup" if len(meter.steps) < warmup else
                                    "timed" if not profiled else "profiled"})
                if profiled and len(meter.steps) == warmup + timed + profile:
                    meter.profile = meter.profile_window.stop(profile)

        self.profile = None
        trainer.add_callback(Clock())

    @staticmethod
    def _empty() -> dict:
        return {"examples": 0, "tokens": 0, "labels": 0, "flops": 0}

    @staticmethod
    def _sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def result(self) -> dict:
        import torch

        timed = [s for s in self.steps if s["phase"] == "timed"]
        warm = [s for s in self.steps if s["phase"] == "warmup"]
        if not timed:
            raise SystemExit(f"no step left to time after {len(warm)} warm-up step(s): give more data or --steps")
        seconds = sum(s["s"] for s in timed)
        if torch.cuda.is_available():
            peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
            stats = torch.cuda.memory_stats()
            alloc = {"alloc_retries": stats.get("num_alloc_retries", 0), "cuda_max_reserved": torch.cuda.max_memory_reserved()}
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
            alloc = {}
        labels_all = sum(s["labels"] for s in self.steps)
        return {"steps": len(self.steps), "warmup_steps": len(warm), "timed_steps": len(timed),
                "profiled_steps": len(self.steps) - len(warm) - len(timed),
                "warmup_s": sum(s["s"] for s in warm), "seconds": seconds, "step_s": seconds / len(timed),
                "real_tokens": sum(s["tokens"] for s in timed), "label_tokens": sum(s["labels"] for s in timed),
                "tokens_per_s": sum(s["tokens"] for s in timed) / seconds,
                "examples_per_step": sum(s["examples"] for s in timed) / len(timed),
                "tokens_per_step": sum(s["tokens"] for s in timed) / len(timed),
                "useful_flops": sum(s["flops"] for s in timed),
                "all_real_tokens": sum(s["tokens"] for s in self.steps),
                "mean_loss": float(self.loss_sum) / labels_all, "peak_memory_bytes": peak,
                "peak_memory_kind": kind, **alloc, "profile": self.profile, "per_step": self.steps}


def plan_steps(trainer, args) -> int:
    """Timed steps: --steps (the Trainer then runs exactly warm-up + timed + profiled steps,
    cycling the data as needed), else what the data gives after the warm-up and the profile."""
    import math

    if args.steps:
        trainer.args.max_steps = args.warmup_steps + args.steps + args.profile_steps
        return args.steps
    per_epoch = math.ceil(len(trainer.get_train_dataloader()) / trainer.args.gradient_accumulation_steps)
    return max(0, math.ceil(per_epoch * args.epochs) - args.warmup_steps - args.profile_steps)


def _datasets(args, batch_size=None, dropout=None):
    from mathtune.config import load_config
    from mathtune.models.load import load_tokenizer
    from mathtune.train.trainer import build_datasets

    config = load_config(None, overrides(args, batch_size, dropout))
    tokenizer = load_tokenizer(args.model)
    return config, tokenizer, *build_datasets(config, tokenizer)


def measure(trainer, args, info: dict) -> dict:
    start_loss = untrained_loss(trainer)
    timed = plan_steps(trainer, args)
    meter = Meter(trainer, flop_terms(args.model), args.warmup_steps, timed, args.profile_steps)
    trainer.train()
    return {**meter.result(), "untrained_loss": start_loss, **info}


# ------------------------------------------------------------------------------ workers


def worker_mathtune(args, attention=None, batch=None, dropout=None, head="lean", liger=False,
                    compile_layers=False) -> dict:
    from mathtune.models.attention import training_attention
    from mathtune.models.load import load_model
    from mathtune.train.lm_head import use_lm_head
    from mathtune.train.trainer import build_trainer, make_lora_config

    config, tokenizer, train_set, val_set, _ = _datasets(args, batch, dropout)
    if liger:  # before the model is built: Liger swaps Qwen2's RMSNorm and MLP classes and its RoPE function
        from liger_kernel.transformers import apply_liger_kernel_to_qwen2

        apply_liger_kernel_to_qwen2(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=False)
    attn = training_attention(attention or config.model.attn_implementation, config.train.packing, args.dtype)
    model, _ = load_model(config.model, attn_implementation=attn, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").mkdir()
        trainer = build_trainer(config, Path(tmp), model, tokenizer, train_set, val_set,
                                make_lora_config(config, model), eval_on_start=False)
        trainer.args.load_best_model_at_end = False
        head = use_lm_head(trainer.model, head)
        if compile_layers:
            for layer in trainer.model.get_base_model().model.layers:  # lengths change every step
                layer.compile(dynamic=True)
        return measure(trainer, args, {
            "attention": attn, "packing": config.train.packing, "lm_head": head, "liger_layers": liger,
            "compiled_layers": compile_layers, "gradient_checkpointing": config.train.gradient_checkpointing,
            "batch_size": config.train.batch_size, "lora_dropout": config.lora.dropout})


def worker_trl(args, packing=False, checkpointing=None, batch=None, dropout=None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from mathtune.models.load import resolve_dtype, resolve_model_path
    from mathtune.train.trainer import make_lora_config

    config, tokenizer, train_set, _, _ = _datasets(args, batch, dropout)
    dtype = resolve_dtype(args.dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        sft = SFTConfig(output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=config.train.batch_size,
                        max_length=args.max_length, learning_rate=config.train.learning_rate, seed=config.seed,
                        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, report_to="none",
                        save_strategy="no", logging_steps=1, use_cpu=not torch.cuda.is_available(),
                        packing=packing,
                        **({} if checkpointing is None else {"gradient_checkpointing": checkpointing}))
        trainer = SFTTrainer(model=model, args=sft, train_dataset=train_set, processing_class=tokenizer,
                             peft_config=make_lora_config(config, model))
        return measure(trainer, args, {
            "attention": model.config._attn_implementation, "packing": sft.packing, "lm_head": "trl",
            "liger_layers": False, "compiled_layers": False, "gradient_checkpointing": bool(sft.gradient_checkpointing),
            "batch_size": config.train.batch_size, "lora_dropout": config.lora.dropout})


WORKERS = {"mathtune": worker_mathtune, "trl": worker_trl}


def run_named(name: str, args) -> dict:
    """A path NAME[:OPTION...] (the options are in the module docstring)."""
    import os
    import re

    base, *opts = name.split(":")
    if base not in WORKERS:
        raise SystemExit(f"unknown path {base!r} in {name!r}")
    kwargs = {}
    for opt in opts:
        if re.fullmatch(r"b\d+", opt):
            kwargs["batch"] = int(opt[1:])
        elif re.fullmatch(r"s\d+", opt):
            args.steps = int(opt[1:])
        elif opt == "dropout0":
            kwargs["dropout"] = 0.0
        elif base == "mathtune" and opt == "cudnn":
            os.environ["MATHTUNE_CUDNN_SDPA"] = "1"  # this worker process only
        elif base == "mathtune" and opt in ("sdpa", "eager"):
            kwargs["attention"] = opt
        elif base == "mathtune" and opt == "segments":
            kwargs["attention"] = "mathtune_segments"
        elif base == "mathtune" and opt in ("trl-head", "liger-head"):
            kwargs["head"] = opt.removesuffix("-head")
        elif base == "mathtune" and opt == "liger":
            kwargs["liger"] = True
        elif base == "mathtune" and opt == "compile":
            kwargs["compile_layers"] = True
        elif base == "trl" and opt == "nockpt":
            kwargs["checkpointing"] = False
        elif base == "trl" and opt == "packing":
            kwargs["packing"] = True
        else:
            raise SystemExit(f"unknown path option {opt!r} in {name!r}")
    return WORKERS[base](args, **kwargs)


def untrained_loss(trainer) -> float:
    """Token-weighted loss of the model before any update (LoRA's B is zero) over every
    training example, through the trainer's own batches and loss: equal objectives give
    equal figures, whatever the packing or padding."""
    import torch

    model = trainer.model
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            batch = trainer._prepare_inputs(batch)
            n = float((batch["labels"][:, 1:] != -100).sum())
            total += float(trainer.compute_loss(model, batch)) * n
            count += n
    model.train()
    return total / count


def peak_flops(dtype_name: str) -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        for key, (bf16, fp32) in GPU_PEAK_TFLOPS.items():
            if key in name:
                return (bf16 if dtype_name in ("bfloat16", "float16") else fp32) * 1e12, f"{name} datasheet, dense"
        return float("nan"), f"{name}: no peak on record"
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < 2.0:
        a @ b
        n += 1
    rate = n * 2 * 2048**3 / (time.perf_counter() - start)
    return rate, "measured: fp32 2048x2048 matmul on this CPU"


# ------------------------------------------------------------------------------ main


def run_worker(args, path: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", path, "--result", str(out)] + args.passthrough
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            # Recorded, not fatal: a path that runs out of memory is a result too.
            why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"exit {proc.returncode}"
            print(f"{path} failed: {why}\n{proc.stderr[-2000:]}", file=sys.stderr)
            return {"failed": why, "stderr_tail": proc.stderr[-600:]}
        return json.loads(out.read_text())


def main() -> None:
    from shapes import add_model_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("--limit", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the steady state")
    p.add_argument("--steps", type=int, default=0, help="timed steps (default: what the data gives)")
    p.add_argument("--profile-steps", type=int, default=0, help="steady-state steps run under torch.profiler")
    p.add_argument("--paths", default="mathtune,trl", help="comma-separated NAME[:OPTION...] (see the docstring)")
    p.add_argument("--json", type=Path)
    p.add_argument("--results", type=Path, default=HERE / "results_train_speed.jsonl", help="append a row here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        args.result.write_text(json.dumps(run_named(args.worker, args)))
        return

    from shapes import machine, resolve_model

    from mathtune.models.load import resolve_dtype

    dtype = resolve_dtype(args.dtype)
    args.model = resolve_model(args, dtype)
    args.passthrough = ["--model", args.model, "--data", args.data, "--limit", str(args.limit), "--batch-size",
                        str(args.batch_size), "--max-length", str(args.max_length), "--epochs", str(args.epochs),
                        "--dtype", args.dtype, "--warmup-steps", str(args.warmup_steps), "--steps", str(args.steps),
                        "--profile-steps", str(args.profile_steps)]
    dtype_name = str(dtype).removeprefix("torch.")
    peak, peak_source = peak_flops(dtype_name)
    results = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": " ".join(sys.argv),
               "model": f"shape {args.shape} (random weights)" if args.shape else args.model, "dtype": dtype_name,
               "limit": args.limit, "batch_size": args.batch_size, "max_length": args.max_length,
               "epochs": args.epochs, "warmup_steps": args.warmup_steps, "flops_terms": flop_terms(args.model),
               "peak_flops": peak, "peak_source": peak_source, "paths": {}}
    for path in args.paths.split(","):
        print(f"{path} ...", flush=True)
        r = run_worker(args, path)
        results["paths"][path] = r
        if "failed" in r:
            continue
        r["achieved_tflops"] = r["useful_flops"] / r["seconds"] / 1e12
        r["mfu"] = r["useful_flops"] / r["seconds"] / peak
    ok = {n: r for n, r in results["paths"].items() if "failed" not in r}
    if "mathtune" in ok and "trl" in ok:
        results["speedup_tokens_per_s"] = ok["mathtune"]["tokens_per_s"] / ok["trl"]["tokens_per_s"]
        results["same_untrained_loss"] = abs(ok["mathtune"]["untrained_loss"] - ok["trl"]["untrained_loss"]) < 1e-3
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    with args.results.open("a") as fh:
        fh.write(json.dumps(results) + "\n")


def print_table(res: dict) -> None:
    from step_profile import format_report

    print(f"\n{res['machine']['device']}, {res['model']}, {res['dtype']}, {res['limit']} problems, "
          f"batch {res['batch_size']}, max_length {res['max_length']}, {res['epochs']} epoch(s)")
    print("steady state = the steps after the warm-up and before the profiled ones; MFU = useful FLOPs "
          "(4*N_body*T + 4*N_head*C + 6*L*d_attn*T^2 per example) / time / peak")
    print("path                 | attention         | pack  | ckpt  | head  | batch | examples/step | tokens/step "
          "| warm-up s (steps) | timed steps | tokens/s | step s | peak GiB | loss before | mean loss | TFLOP/s | MFU    "
          "| x TRL")
    base = res["paths"].get("trl", {}).get("tokens_per_s")  # None when TRL did not run or failed
    for name, r in res["paths"].items():
        if "failed" in r:
            last = (r.get("stderr_tail") or "").strip().splitlines()[-1:] or [""]
            print(f"{name:20s} | failed: {r['failed']} {last[0][:120]}")
            continue
        print(f"{name:20s} | {r['attention']:17s} | {str(r['packing']):5s} | {str(r['gradient_checkpointing']):5s} | "
              f"{r['lm_head']:5s} | {r['batch_size']:5d} | {r['examples_per_step']:13.1f} | {r['tokens_per_step']:11.0f} | "
              f"{r['warmup_s']:9.2f} ({r['warmup_steps']:2d})    | "
              f"{r['timed_steps']:11d} | {r['tokens_per_s']:8.1f} | {r['step_s']:6.2f} | "
              f"{r['peak_memory_bytes'] / 2**30:8.2f} | {r['untrained_loss']:11.4f} | {r['mean_loss']:9.4f} | "
              f"{r['achieved_tflops']:7.3f} | {r['mfu']:6.2%} | " + (f"{r['tokens_per_s'] / base:.2f}" if base else ""))
    if "speedup_tokens_per_s" in res:
        print(f"mathtune / TRL defaults, steady-state tokens/s: {res['speedup_tokens_per_s']:.2f}x "
              f"(same loss before training: {res['same_untrained_loss']})")
    print(f"peak: {res['peak_flops'] / 1e12:.2f} TFLOP/s ({res['peak_source']})")
    for name, r in res["paths"].items():
        if r.get("profile"):
            print(f"\n{name}: " + format_report(r["profile"]))


if __name__ == "__main__":
    main()
