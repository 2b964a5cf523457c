"""Generation throughput of `mathtune eval`, recorded to a results file.

    python bench/bench_eval.py MODEL --data ../shared/gsm8k [--limit 16] [--batch-sizes 1,4,8]
        [--prompt chat] [--max-new-tokens 256] [--results bench/results.jsonl]

For each batch size it evaluates the same problems from scratch and appends one JSON line:
problems/s, generated tokens/s, wall time, accuracy, and the machine and library versions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
from pathlib import Path

import torch
import transformers

from mathtune.core import terminal
from mathtune.evaluation.evaluate import evaluate
from mathtune.evaluation.request import EvalRequest

def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--limit", type=int)
    p.add_argument("--prompt", default="chat")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-sizes", default="1,4,8")
    p.add_argument("--results", type=Path, default=Path("bench/results.jsonl"))
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        for bs in args.batch_sizes.split(","):
            batch_size = bs if bs == "auto" else int(bs)
            req = EvalRequest.with_config_defaults(model=model, data=args.data, limit=args.limit, prompt=args.prompt,
                              max_new_tokens=args.max_new_tokens, batch_size=batch_size)
            out = Path(tmp) / f"bs{bs}"
            terminal.QUIET = True  # as `mathtune eval --quiet`: no progress bar
            summary = evaluate(req, out, name="bench")
            row = {
                "date": datetime.date.today().isoformat(),
                "bench": "eval",
                "model": args.model,
                "prompt": req.prompt,
                "n": summary["n"],
                "batch_size": summary["batch_size"],
                "max_new_tokens": args.max_new_tokens,
                "problems_per_s": round(summary["problems_per_s"], 4),
                "generated_tokens_per_s": round(summary["tokens_per_s"], 2),
                "wall_time_s": summary["wall_time_s"],
                "accuracy_strict": summary["accuracy_strict"],
                "accuracy_flexible": summary["accuracy_flexible"],
                "truncated": summary["truncated"],
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
                "dtype": summary["dtype"],
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
            print(json.dumps(row))
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with args.results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
