"""Decoding speed of base, base + unmerged LoRA, and base + merged LoRA.

    python bench/bench_adapter_merge.py MODEL ADAPTER_DIR --data ../shared/gsm8k
        [--batch-size 8] [--new-tokens 64] [--results bench/results.jsonl]

Every variant generates exactly --new-tokens tokens (min = max) for the same chat prompts,
so tokens/s compare like for like. Appends one JSON line per variant.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import peft
import torch
import transformers

from mathtune.config import ModelConfig
from mathtune.task.data import load_split
from mathtune.models.load import attach_adapter, load_model
from mathtune.task.prompts import render_chat_prompt


def tokens_per_s(model, tokenizer, prompts: list[str], new_tokens: int) -> float:
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    config = transformers.GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    with torch.no_grad():
        model.generate(**batch, generation_config=transformers.GenerationConfig(
            max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id))  # warm-up
        start = time.perf_counter()
        out = model.generate(**batch, generation_config=config)
        elapsed = time.perf_counter() - start
    generated = (out.shape[1] - batch["input_ids"].shape[1]) * out.shape[0]
    return generated / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("adapter")
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--results", type=Path, default=Path("bench/results.jsonl"))
    args = p.parse_args()

    model, tokenizer = load_model(ModelConfig(name_or_path=args.model))
    problems = load_split(args.data, "test")[: args.batch_size]
    prompts = [render_chat_prompt(pr.question, tokenizer) for pr in problems]
    rows = []
    variants = [("base", None), ("lora-unmerged", False), ("lora-merged", True)]
    for name, merge in variants:
        if merge is not None:
            base = model if name == "lora-unmerged" else model.unload()
            model = attach_adapter(base, args.adapter, merge=merge)
            model.eval()
        rate = tokens_per_s(model, tokenizer, prompts, args.new_tokens)
        rows.append({
            "date": datetime.date.today().isoformat(),
            "bench": "adapter_merge",
            "variant": name,
            "model": args.model,
            "batch_size": args.batch_size,
            "new_tokens": args.new_tokens,
            "generated_tokens_per_s": round(rate, 2),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available()
            else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
            "dtype": str(next(model.parameters()).dtype),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        })
        print(json.dumps(rows[-1]), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
