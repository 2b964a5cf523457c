"""What an adapter variant costs a training step, next to plain LoRA, on this machine.

    python bench/adapter_costs.py --model PATH [--shape smollm2-135m] [--batch-size 2] [--tokens 128]
        [--steps 2] [--variants lora,dora,ckpt] [--json OUT.json]

Each variant trains the same LoRA (r 8, alpha 16, dropout 0.1, every linear layer) on the same
random token ids for one warm-up and --steps timed forward+backward+optimizer steps, in its own
process (so that each peak RSS is its own), one after the other:
  lora  plain LoRA;  dora  PEFT's DoRA (use_dora);  ckpt  LoRA with gradient checkpointing.
Printed: seconds per step and peak RSS of each, and each one's ratio to lora. The plan's cost
models for DoRA and checkpointing (mathtune.plan) state the ratios this script measured.
--shape builds a random-weight model of a known shape instead of --model (speed and memory do
not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

# SmolLM2-135M's config.json where it shapes the computation (a deep, narrow Llama).
SHAPES = {"smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                               max_position_embeddings=8192, rms_norm_eps=1e-5)}


def one_variant(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if args.shape:
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[args.shape]))
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.variant == "ckpt":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                             use_dora=args.variant == "dora", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch_size, args.tokens), generator=torch.Generator().manual_seed(1))
    times = []
    for step in range(1 + args.steps):
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step is the warm-up
            times.append(time.perf_counter() - start)
    return {"variant": args.variant, "s_per_step": sum(times) / len(times),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--shape", choices=sorted(SHAPES))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--variants", default="lora,dora,ckpt")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a child process
    parser.add_argument("--json")
    args = parser.parse_args()
    if not (args.model or args.shape):
        parser.error("--model or --shape")
    if args.variant:
        print(json.dumps(one_variant(args)))
        return
    rows = []
    for variant in args.variants.split(","):
        child = [sys.executable, __file__, "--variant", variant, "--batch-size", str(args.batch_size),
                 "--tokens", str(args.tokens), "--steps", str(args.steps)]
        child += ["--shape", args.shape] if args.shape else ["--model", args.model]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{variant:5} {rows[-1]['s_per_step']:.2f} s/step, peak RSS {rows[-1]['peak_rss_gib']:.2f} GiB", flush=True)
    base = next((r for r in rows if r["variant"] == "lora"), None)
    if base:
        for r in rows:
            r["time_ratio"] = r["s_per_step"] / base["s_per_step"]
            r["rss_ratio"] = r["peak_rss_gib"] / base["peak_rss_gib"]
            print(f"{r['variant']:5} x{r['time_ratio']:.2f} time, x{r['rss_ratio']:.2f} peak RSS against lora")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    result = {"model": args.model or args.shape, "batch_size": args.batch_size, "tokens": args.tokens,
              "steps": args.steps, "load_average_1min_at_end": load, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
