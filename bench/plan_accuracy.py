"""The plan against what happened: `mathtune run` at small limits on a sequence of models and
adapter variants, each planned first, back to back in one script on this machine.

    python bench/plan_accuracy.py --smollm2 ~/.cache/mathtune/dequantized/smollm2-135m-instruct-... \\
        --qwen ~/.cache/mathtune/dequantized/qwen2.5-coder-0.5b-instruct-... [--data ../shared/gsm8k] \\
        [--before-src /path/to/an/older/checkout/src]

Every case is planned and run by the mathtune of this checkout ("after"), with its measured
rates in a scratch file ($MATHTUNE_RATES under the output folder, never the user's cache), so
the first case plans from the shipped throughputs and each later one from what the runs before
it measured. With --before-src, each case is also planned by an older mathtune (its source
folder on PYTHONPATH), whose plan is set against the same run. Figures are the report's:
training incl. validation (train/summary.json), evaluation = base + tuned decoding, peak
memory = the training process's peak resident memory. One JSON line per case goes to
bench/results_plan_accuracy.jsonl, with the load average at the start of each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMALL = ["data.train_limit=12", "data.max_length=384", "train.batch_size=2", "train.epochs=1",
         "train.eval_every_steps=4", "eval.limit=3", "eval.max_new_tokens=48", "train.report_to=[]"]
FIGURES = {"training": "training time incl. validation (s)", "evaluation": "evaluation time, base and tuned (s)",
           "memory": "peak training memory (GiB)"}


def cases(args) -> list[tuple[str, str, list[str]]]:
    return [("SmolLM2-135M, LoRA, first run", args.smollm2, []),
            ("SmolLM2-135M, LoRA", args.smollm2, []),
            ("SmolLM2-135M, DoRA", args.smollm2, ["lora.use_dora=true"]),
            ("SmolLM2-135M, 4-bit base", args.smollm2, ["model.quantization=4bit"]),
            ("Qwen2.5-Coder-0.5B, LoRA", args.qwen, [])]


def mathtune(argv: list[str], env: dict, src: str | None = None) -> subprocess.CompletedProcess:
    env = dict(env)
    if src:
        env["PYTHONPATH"] = src
    return subprocess.run([sys.executable, "-m", "mathtune", *argv], env=env, capture_output=True, text=True)


def planned_figures(plan: dict) -> dict:
    t = plan["time_s"]
    return {"training": round(t["train"] + t["validation"], 1), "evaluation": t["evaluation"],
            "memory": plan["peak_memory_gib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", required=True)
    parser.add_argument("--qwen", required=True)
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "gsm8k"))
    parser.add_argument("--before-src", default=None)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="plan-accuracy-"))
    env = {**os.environ, "MATHTUNE_RATES": str(out / "measured_rates.json"), "MATHTUNE_NO_PROGRESS": "1"}
    config = out / "small.yaml"
    config.write_text("seed: 3\n")
    import torch
    import transformers
    stamp = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
             "transformers": transformers.__version__, "cores": os.cpu_count()}
    for i, (name, model, extra) in enumerate(cases(args)):
        sets = [a for s in [f"model.name_or_path={model}", f"data.source={args.data}", *SMALL, *extra]
                for a in ("--set", s)]
        row = {**stamp, "case": name}
        for label, src in (("after", None), ("before", args.before_src)):
            if label == "before" and not src:
                continue
            done = mathtune(["plan", str(config), "--device", "cpu", "--json", *sets], env, src)
            if done.returncode:
                raise SystemExit(f"plan ({label}) of {name} failed: {done.stderr.strip().splitlines()[-1:]}")
            plan = json.loads(done.stdout)
            row[f"planned_{label}"] = planned_figures(plan)
            row[f"basis_{label}"] = plan.get("rates", {}).get("source", "scaled by parameters")
        row["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
        start = time.perf_counter()
        done = mathtune(["run", str(config), "--out", str(out / f"run{i}"), *sets], env)
        row["run_wall_s"] = round(time.perf_counter() - start, 1)
        if done.returncode:
            raise SystemExit(f"run of {name} failed: {done.stderr.strip().splitlines()[-1:]}")
        rows = {r["figure"]: r for r in json.loads((out / f"run{i}" / "analysis.json").read_text())["plan"]["rows"]}
        row["planned_in_run"] = {k: rows[f]["planned"] for k, f in FIGURES.items()}
        row["actual"] = {k: rows[f]["actual"] for k, f in FIGURES.items()}
        for label in ("in_run", "before"):
            if f"planned_{label}" in row:
                row[f"missed_by_{label}"] = {k: round(row["actual"][k] / row[f"planned_{label}"][k], 2)
                                             for k in FIGURES if row["actual"][k] and row[f"planned_{label}"][k]}
        print(json.dumps({k: v for k, v in row.items() if k not in stamp}), flush=True)
        with open(HERE / "results_plan_accuracy.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
