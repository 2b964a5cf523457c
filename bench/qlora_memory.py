"""Memory and speed of LoRA on a full-precision base against QLoRA (a 4-bit base), side by side.

    python bench/qlora_memory.py --model ~/.cache/mathtune/dequantized/qwen2.5-coder-0.5b-instruct-* \
        [--data ../shared/gsm8k] [--limit 32] [--batch-size 2] [--max-length 384] [--json OUT.json]

Each path is `mathtune train` (mathtune.train.run.run_train) with the same config but for
model.quantization (none, then 4bit; --paths adds 8bit), each in a fresh process, back to back:
the same examples, seed, LoRA (r 8, alpha 16, every linear layer) and batches. Validation runs
only at step 0 (the untrained model), checkpoints only at the end.

Reported per path:
  weights        the bytes of the model's tensors as they sit in memory once training starts
                 (a 4-bit layer's packed weights and its scales; the embeddings and norms PEFT's
                 k-bit preparation keeps in fp32; the adapter)
  RSS            the process's resident memory: when training starts, its peak during training
                 (sampled every 20 ms from /proc/self/status), and its peak over the whole process
                 (loading included: ru_maxrss)
  tokens/s       real (non-pad) training tokens per second from the second logged step to the
                 last (the first step and step 0's validation excluded), from train/metrics.jsonl
  loss           the training loss of each of the first steps (same seed, same batches)
On a GPU the peaks are torch.cuda.max_memory_allocated instead of RSS.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import DEFAULT_DATA, machine  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tensor_bytes(model) -> int:
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def worker(args) -> dict:
    """One path in this process: train, then measure from the run folder and the samples."""
    import torch
    import transformers

    from mathtune.config import load_config
    from mathtune.core.runfiles import read_json, read_jsonl_until_torn
    from mathtune.train.run import run_train

    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_bytes()))
            time.sleep(0.02)

    marks: dict = {}
    original = transformers.Trainer.train

    def timed_train(self, *a, **k):
        marks["begin"], marks["rss_at_begin"] = time.perf_counter(), rss_bytes()
        marks["weights_bytes"] = tensor_bytes(self.model)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            return original(self, *a, **k)
        finally:
            marks["end"] = time.perf_counter()

    transformers.Trainer.train = timed_train
    threading.Thread(target=sample, daemon=True).start()
    overrides = [f"model.name_or_path={args.model}", f"data.source={args.data}", f"data.train_limit={args.limit}",
                 f"data.max_length={args.max_length}", "train.epochs=1", f"train.batch_size={args.batch_size}",
                 "train.report_to=[]", "train.logging_steps=1", "train.eval_every_steps=1000000",
                 "train.early_stopping_patience=null", "name=bench-qlora", f"model.quantization={args.worker}"]
    out = Path(args.out)
    run_train(load_config(None, overrides), out, overwrite=True)
    done.set()
    summary = read_json(out / "train" / "summary.json")
    steps = [line for line in read_jsonl_until_torn(out / "train" / "metrics.jsonl") if "loss" in line]
    first, last = steps[0], steps[-1]
    rate = ((last["num_input_tokens_seen"] - first["num_input_tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])
            if len(steps) > 1 else None)
    during = [rss for t, rss in samples if marks["begin"] <= t <= marks["end"]]
    result = {
        "quantization": args.worker,
        "quantization_record": summary["quantization_record"],
        "adapter_trained_dtype": summary["adapter_settings"]["trained_dtype"],
        "weights_gib": marks["weights_bytes"] / 2**30,
        "steps": summary["global_step"],
        "tokens": last["num_input_tokens_seen"],
        "tokens_per_s": rate,
        "losses": [round(s["loss"], 4) for s in steps],
        "trainable_params": summary["trainable_params"],
        "wall_time_s": summary["wall_time_s"],
    }
    if torch.cuda.is_available():
        result |= {"peak_gib": torch.cuda.max_memory_allocated() / 2**30, "peak_kind": "cuda_max_allocated"}
    else:
        result |= {"rss_at_train_start_gib": marks["rss_at_begin"] / 2**30,
                   "peak_rss_training_gib": max(during) / 2**30 if during else None,
                   "peak_rss_process_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
                   "peak_kind": "cpu_rss"}
    return result


def table(results: list[dict]) -> str:
    gpu = results[0]["peak_kind"] == "cuda_max_allocated"
    head = ["path", "weights in memory", "peak (GPU, allocated)" if gpu else "RSS at train start / peak in training / "
            "peak of the process", "tokens/s", "trainable", "adapter trained in", "loss, first steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        memory = (f"{r['peak_gib']:.2f} GiB" if gpu else
                  f"{r['rss_at_train_start_gib']:.2f} / {r['peak_rss_training_gib']:.2f} / {r['peak_rss_process_gib']:.2f} GiB")
        rate = f"{r['tokens_per_s']:.1f}" if r["tokens_per_s"] else "n/a"
        name = "LoRA, full-precision base" if r["quantization"] == "none" else f"QLoRA, {r['quantization']} base"
        lines.append(f"| {name} | {r['weights_gib']:.2f} GiB | {memory} | {rate} | {r['trainable_params']:,} | "
                     f"{r['adapter_trained_dtype']} | {', '.join(str(x) for x in r['losses'][:8])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder (e.g. the dequantized offline 0.5B)")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=32, help="training problems")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--paths", nargs="+", default=["none", "4bit"], choices=["none", "4bit", "8bit"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-qlora-") as tmp:
        for path in args.paths:
            cmd = [sys.executable, __file__, "--worker", path, "--out", str(Path(tmp) / path), "--model", args.model,
                   "--data", args.data, "--limit", str(args.limit), "--batch-size", str(args.batch_size),
                   "--max-length", str(args.max_length)]
            print(f"[{path}] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            if proc.returncode != 0:
                sys.exit(f"{path} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[{path}] done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    from importlib import metadata

    info = machine() | {"bitsandbytes": metadata.version("bitsandbytes"),
                        "date": datetime.date.today().isoformat(), "model": args.model, "limit": args.limit,
                        "batch_size": args.batch_size, "max_length": args.max_length}
    print(json.dumps(info))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
