"""LoRA training speed: mathtune's training path against TRL's SFTTrainer defaults, same examples.

    python bench/train_speed.py --model PATH [--data ../shared/gsm8k] [--limit 32] [--batch-size 4]
        [--max-length 256] [--epochs 1] [--json OUT.json]
    python bench/train_speed.py --shape qwen2-1.5b --tokenizer ../shared/qwen2.5-tokenizer --limit 6726 \
        --batch-size 16 --max-length 512 --epochs 3

Both paths train the same LoRA (the reference r=8, alpha=16, dropout 0.1, all linear layers,
lr 2e-4) on the same examples (the first --limit problems of the seeded 90% train split in
the chat prompt/completion form, those longer than --max-length dropped for both), each in a
fresh process:
  mathtune  mathtune's training path (mathtune.train.run: its attention choice, packing,
            trainer settings), with validation and checkpoints switched off for the timing
  trl       SFTTrainer with its defaults: no packing, padded batches, gradient checkpointing
            on, batch --batch-size, the same max_length, dtype and LoRA
Reported per path: optimizer steps, real (non-pad) tokens, tokens/s and step time over the
training loop (first step's start to last step's end), peak memory, the mean loss over
the examples while training (token-weighted), the loss of the untrained model over all the
examples through the path's own batches (equal objectives give equal figures), and MFU:

  FLOPs per example of T tokens, C of them with a label (the fused LM head scores only those):
    forward  = 2*N_body*T + 2*N_head*C + 2*L*d_attn*T^2     (causal attention: QK^T and AV, halved)
    backward = 2*N_body*T + 2*N_head*C + 4*L*d_attn*T^2     (activation gradients only: the base
                                                             weights are frozen; LoRA's own terms omitted)
  N_body = linear weights of the decoder layers, N_head = vocab x hidden, L = layers,
  d_attn = heads x head_dim. Recomputation (gradient checkpointing) is not counted: it is
  work, not progress. MFU = FLOPs / time / peak; peak is the GPU's dense bf16/fp32 figure
  from the table below, or on a CPU the rate this script measures for a large fp32 matmul.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Dense peak TFLOP/s (no sparsity) by device name fragment: (bf16, fp32 without TF32).
GPU_PEAK_TFLOPS = {"H100": (989.0, 67.0), "H200": (989.0, 67.0), "A100": (312.0, 19.5)}


def overrides(args) -> list[str]:
    return [f"model.name_or_path={args.model}", f"data.source={args.data}", f"data.train_limit={args.limit}",
            f"data.max_length={args.max_length}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}",
            f"model.dtype={args.dtype}", "train.report_to=[]", "train.logging_steps=1",
            "train.eval_every_steps=1000000", "train.early_stopping_patience=null", "name=bench"]


# ------------------------------------------------------------------------------ workers


class Meter:
    """Wraps a trainer's compute_loss: per training micro-batch, the loss, the label tokens
    and the real tokens; a callback times the loop."""

    def __init__(self, trainer):
        from transformers import TrainerCallback

        self.batches: list[tuple[float, int, int]] = []
        self.first = self.last = None
        self.steps = 0
        inner = trainer.compute_loss
        meter = self

        def compute_loss(model, inputs, *a, **k):
            loss = inner(model, inputs, *a, **k)
            if model.training:
                labels = inputs["labels"]
                n_label = int((labels[:, 1:] != -100).sum())
                if "attention_mask" in inputs:
                    real = int(inputs["attention_mask"].sum())
                else:  # padding-free: one row of examples end to end, no padding
                    real = int(inputs["input_ids"].numel())
                meter.batches.append((float(loss.detach()), n_label, real))
            return loss

        trainer.compute_loss = compute_loss

        class Clock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                meter._sync()
                meter.step_start = time.perf_counter()
                if meter.first is None:
                    meter.first = meter.step_start
                    meter.batches_before_second = None

            def on_step_end(self, args, state, control, **kw):
                meter._sync()
                meter.last = time.perf_counter()
                meter.steps += 1
                if meter.steps == 1:  # the first step pays one-time set-up (kernel selection, allocations)
                    meter.first_step_s = meter.last - meter.step_start
                    meter.batches_before_second = len(meter.batches)

        trainer.add_callback(Clock())

    @staticmethod
    def _sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def result(self) -> dict:
        import torch

        labels = sum(b[1] for b in self.batches)
        seconds = self.last - self.first
        tokens = sum(b[2] for b in self.batches)
        if torch.cuda.is_available():
            peak, kind = torch.cuda.max_memory_allocated(), "cuda_max_allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
        later = {}
        if self.steps > 1:
            later_tokens = sum(b[2] for b in self.batches[self.batches_before_second:])
            later = {"first_step_s": self.first_step_s,
                     "tokens_per_s_after_first_step": later_tokens / (seconds - self.first_step_s)}
        return {**later, "steps": self.steps, "seconds": seconds, "real_tokens": tokens, "label_tokens": labels,
                "tokens_per_s": tokens / seconds, "step_s": seconds / self.steps,
                "mean_loss": sum(b[0] * b[1] for b in self.batches) / labels, "peak_memory_bytes": peak,
                "peak_memory_kind": kind}


def _datasets(args, tokenizer):
    from mathtune.config import load_config
    from mathtune.train.trainer import build_datasets

    config = load_config(None, overrides(args))
    return config, *build_datasets(config, tokenizer)


def worker_mathtune(args, attention=None) -> dict:
    from mathtune.models.attention import training_attention
    from mathtune.models.load import load_model, load_tokenizer
    from mathtune.train.trainer import build_trainer, make_lora_config

    tokenizer = load_tokenizer(args.model)
    config, train_set, val_set, _ = _datasets(args, tokenizer)
    attn = attention or training_attention(config.model.attn_implementation, config.train.packing)
    model, _ = load_model(args.model, dtype=args.dtype, attn_implementation=attn, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").mkdir()
        trainer = build_trainer(config, Path(tmp), model, tokenizer, train_set, val_set,
                                make_lora_config(config, model), eval_on_start=False)
        trainer.args.load_best_model_at_end = False
        start_loss = untrained_loss(trainer)
        meter = Meter(trainer)
        trainer.train()
    return {**meter.result(), "untrained_loss": start_loss, "attention": attn, "packing": config.train.packing,
            "gradient_checkpointing": config.train.gradient_checkpointing}


def worker_trl(args, packing=False, checkpointing=None) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from mathtune.models.load import load_tokenizer, resolve_dtype, resolve_model_path
    from mathtune.train.trainer import make_lora_config

    tokenizer = load_tokenizer(args.model)
    config, train_set, _, _ = _datasets(args, tokenizer)
    dtype = resolve_dtype(args.dtype)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model), dtype=dtype)
    with tempfile.TemporaryDirectory() as tmp:
        sft = SFTConfig(output_dir=tmp, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                        max_length=args.max_length, learning_rate=config.train.learning_rate, seed=config.seed,
                        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, report_to="none",
                        save_strategy="no", logging_steps=1, use_cpu=not torch.cuda.is_available(),
                        packing=packing,
                        **({} if checkpointing is None else {"gradient_checkpointing": checkpointing}))
        trainer = SFTTrainer(model=model, args=sft, train_dataset=train_set, processing_class=tokenizer,
                             peft_config=make_lora_config(config, model))
        start_loss = untrained_loss(trainer)
        meter = Meter(trainer)
        trainer.train()
    return {**meter.result(), "untrained_loss": start_loss, "attention": model.config._attn_implementation,
            "packing": sft.packing,
            "gradient_checkpointing": bool(sft.gradient_checkpointing)}


WORKERS = {"mathtune": worker_mathtune, "trl": worker_trl}


def run_named(name: str, args) -> dict:
    """'mathtune', 'mathtune:sdpa' (dense-mask packing), 'mathtune:cudnn' (cuDNN attention left on
    where the GPU has it, see mathtune.models.load.use_shape_free_attention), 'trl', 'trl:nockpt' (no
    gradient checkpointing), 'trl:packing' (TRL's own padding-free packing)."""
    import os

    base, *opts = name.split(":")
    kwargs = {}
    for opt in opts:
        if base == "mathtune" and opt == "cudnn":
            os.environ["MATHTUNE_CUDNN_SDPA"] = "1"  # this worker process only
        elif base == "mathtune" and opt in ("sdpa", "eager"):
            kwargs["attention"] = opt
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


# ------------------------------------------------------------------------------ FLOPs


def flops(model_path: str, args) -> tuple[float, dict]:
    """Useful training FLOPs of one epoch-set of the examples (formula in the docstring)."""
    from transformers import AutoConfig

    from mathtune.models.load import load_tokenizer, resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model_path)).get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    d_attn = cfg.num_attention_heads * head_dim
    kv = cfg.num_key_value_heads * head_dim
    per_layer = cfg.hidden_size * (d_attn + 2 * kv) + d_attn * cfg.hidden_size + 3 * cfg.hidden_size * cfg.intermediate_size
    n_body = cfg.num_hidden_layers * per_layer
    n_head = cfg.vocab_size * cfg.hidden_size
    tokenizer = load_tokenizer(model_path)
    _, train_set, _, _ = _datasets(args, tokenizer)
    total = 0.0
    for row in train_set:
        t = len(tokenizer(text=row["prompt"] + row["completion"])["input_ids"]) + 1
        c = len(tokenizer(text=row["completion"])["input_ids"]) + 1
        fwd = 2 * n_body * t + 2 * n_head * c + 2 * cfg.num_hidden_layers * d_attn * t * t
        bwd = 2 * n_body * t + 2 * n_head * c + 4 * cfg.num_hidden_layers * d_attn * t * t
        total += fwd + bwd
    return total * args.epochs, {"N_body": n_body, "N_head": n_head, "L": cfg.num_hidden_layers, "d_attn": d_attn}


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
            return {"failed": why}
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
    p.add_argument("--paths", default="mathtune,trl",
                   help="comma-separated; ablations: mathtune:sdpa, mathtune:cudnn, trl:nockpt, trl:packing")
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
                        "--dtype", args.dtype]
    dtype_name = str(dtype).removeprefix("torch.")
    total_flops, terms = flops(args.model, args)
    peak, peak_source = peak_flops(dtype_name)
    results = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": " ".join(sys.argv),
               "model": f"shape {args.shape} (random weights)" if args.shape else args.model, "dtype": dtype_name,
               "limit": args.limit, "batch_size": args.batch_size, "max_length": args.max_length,
               "epochs": args.epochs, "useful_flops": total_flops, "flops_terms": terms, "peak_flops": peak,
               "peak_source": peak_source, "paths": {}}
    for path in args.paths.split(","):
        print(f"{path} ...", flush=True)
        r = run_worker(args, path)
        results["paths"][path] = r
        if "failed" in r:
            continue
        r["achieved_tflops"] = total_flops / r["seconds"] / 1e12
        r["mfu"] = total_flops / r["seconds"] / peak
    if all(p in results["paths"] and "failed" not in results["paths"][p] for p in ("mathtune", "trl")):
        m, t = results["paths"]["mathtune"], results["paths"]["trl"]
        results["speedup_tokens_per_s"] = m["tokens_per_s"] / t["tokens_per_s"]
        results["same_real_tokens"] = m["real_tokens"] == t["real_tokens"]
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    with args.results.open("a") as fh:
        fh.write(json.dumps(results) + "\n")


def print_table(res: dict) -> None:
    print(f"\n{res['machine']['device']}, {res['model']}, {res['dtype']}, {res['limit']} problems, "
          f"batch {res['batch_size']}, max_length {res['max_length']}, {res['epochs']} epoch(s)")
    print("path          | attention         | packing | ckpt  | steps | real tokens | tokens/s | step s | "
          "peak GiB | loss before | mean loss | TFLOP/s | MFU   | x TRL")
    base = res["paths"].get("trl", {}).get("tokens_per_s")  # None when TRL did not run or failed
    for name, r in res["paths"].items():
        if "failed" in r:
            print(f"{name:13s} | failed: {r['failed']}")
            continue
        print(f"{name:13s} | {r['attention']:17s} | {str(r['packing']):7s} | {str(r['gradient_checkpointing']):5s} | "
              f"{r['steps']:5d} | {r['real_tokens']:11d} | {r['tokens_per_s']:8.1f} | {r['step_s']:6.2f} | "
              f"{r['peak_memory_bytes'] / 2**30:8.2f} | {r['untrained_loss']:11.4f} | {r['mean_loss']:9.4f} | "
              f"{r['achieved_tflops']:7.3f} | {r['mfu']:5.1%} | " + (f"{r['tokens_per_s'] / base:.2f}" if base else ""))
    later = {n: r for n, r in res["paths"].items() if "tokens_per_s_after_first_step" in r}
    if later:
        print("after the first step (one-time set-up left out): " + ", ".join(
            f"{n} {r['tokens_per_s_after_first_step']:.1f} tokens/s (first step {r['first_step_s']:.2f} s)"
            for n, r in later.items()))
    if "speedup_tokens_per_s" in res:
        print(f"mathtune / TRL defaults, tokens/s: {res['speedup_tokens_per_s']:.2f}x "
              f"(same real tokens: {res['same_real_tokens']})")
        if all(n in later for n in ("mathtune", "trl")):
            print(f"  after the first step: {later['mathtune']['tokens_per_s_after_first_step'] / later['trl']['tokens_per_s_after_first_step']:.2f}x")
    print(f"peak: {res['peak_flops'] / 1e12:.2f} TFLOP/s ({res['peak_source']})")


if __name__ == "__main__":
    main()
