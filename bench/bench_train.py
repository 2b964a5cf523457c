"""Training throughput and curve on a small slice, recorded to a results file.

    MATHTUNE_DATA=../shared/gsm8k python bench/bench_train.py MODEL [--out DIR] [--results FILE]
        [--set key=value ...]

Runs `mathtune train` (default: 64 problems, 1 epoch, max_length 256, batch 4, validation
every 4 steps) and appends one JSON line to the results file: the settings, the machine,
summary.json's figures and the loss / token-accuracy curve from metrics.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
from pathlib import Path

from mathtune.config import load_config
from mathtune.train.run import run_train

DEFAULTS = [
    "data.train_limit=64",
    "data.max_length=256",
    "train.epochs=1",
    "train.batch_size=4",
    "train.eval_every_steps=4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="hub id, folder or .gguf file")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-train"))
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("results_train.jsonl"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    overrides = [f"model.name_or_path={args.model}", "name=bench-train"] + DEFAULTS + args.overrides
    config = load_config(None, overrides)
    shutil.rmtree(args.out, ignore_errors=True)
    run_dir = run_train(config, args.out)

    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    record = {
        "date": datetime.date.today().isoformat(),
        "bench": "train",
        "model": args.model,
        "overrides": overrides[1:],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "summary": summary,
        "train_curve": [
            {"step": x["step"], "loss": x["loss"], "mean_token_accuracy": x["mean_token_accuracy"]}
            for x in lines
            if "loss" in x
        ],
        "eval_curve": [
            {"step": x["step"], "eval_loss": x["eval_loss"], "eval_mean_token_accuracy": x["eval_mean_token_accuracy"]}
            for x in lines
            if "eval_loss" in x
        ],
    }
    with args.results.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(json.dumps({k: summary[k] for k in ("wall_time_s", "tokens_per_s", "best_step", "best_eval_loss")}))


if __name__ == "__main__":
    main()
