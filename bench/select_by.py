"""Which checkpoint should a run keep: the lowest validation loss, or the most validation problems
solved? One real training run answers it on the test slice.

    python bench/select_by.py --model ~/.cache/mathtune/dequantized/qwen2.5-coder-0.5b-instruct-* \
        --data ../shared/gsm8k --out runs/select-by

1. `mathtune train` with train.select_by exact_match (validation exact match at every validation
   point). While it runs, every checkpoint's adapter is copied aside (the Trainer keeps only the
   best and the latest), so both rules' picks stay on disk.
2. The step the validation loss would keep and the step the exact match keeps, from
   train/metrics.jsonl, as the Trainer picks them (analysis.selection.best_step).
3. `mathtune eval` of both adapters on the first --test-limit test problems, and their paired
   difference (bootstrap interval, McNemar), joined on the problem.

The results go to OUT/select_by.json and a line of bench/results_select_by.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_checkpoints(run_dir: Path, kept: Path, stop: threading.Event) -> None:
    """Copy each complete checkpoint's adapter to kept/step-N before rotation removes it."""
    while True:
        for ckpt in sorted((run_dir / "train" / "checkpoints").glob("checkpoint-*")):
            target = kept / f"step-{ckpt.name.split('-')[1]}"
            if (ckpt / "trainer_state.json").is_file() and not target.exists():
                tmp = target.with_name(target.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                for name in ("adapter_config.json", "adapter_model.safetensors"):
                    shutil.copy(ckpt / name, tmp / name)
                tmp.rename(target)
        if stop.is_set():
            return
        time.sleep(2)


def mathtune(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "mathtune", *argv], check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-limit", type=int, default=160)
    p.add_argument("--val-fraction", type=float, default=0.25)
    p.add_argument("--accuracy-problems", type=int, default=48)
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=8)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--test-limit", type=int, default=100)
    args = p.parse_args()

    run_dir, kept = args.out / "run", args.out / "kept"
    sets = [f"model.name_or_path={args.model}", f"data.source={args.data}", f"data.train_limit={args.train_limit}",
            f"data.val_fraction={args.val_fraction}", f"data.max_length={args.max_length}",
            f"train.batch_size={args.batch_size}", f"train.epochs={args.epochs}",
            f"train.eval_every_steps={args.eval_every}", "train.select_by=exact_match",
            f"train.accuracy_problems={args.accuracy_problems}", f"eval.max_new_tokens={args.max_new_tokens}",
            "train.report_to=[]"]
    stop = threading.Event()
    watcher = threading.Thread(target=copy_checkpoints, args=(run_dir, kept, stop), daemon=True)
    watcher.start()
    started = time.perf_counter()
    mathtune("train", str(REPO / "configs" / "qwen2-1.5b-gsm8k-lora.yaml"), *[x for s in sets for x in ("--set", s)],
             "--out", str(run_dir))
    stop.set()
    watcher.join()
    train_s = time.perf_counter() - started
    mathtune("report", str(run_dir))

    from mathtune.analysis.benchmark import paired_comparison
    from mathtune.analysis.selection import best_step, read_points
    from mathtune.core.runfiles import read_eval_records

    points = read_points(run_dir / "train" / "metrics.jsonl")
    picks = {"loss": best_step(points, "eval_loss", higher_is_better=False),
             "exact_match": best_step(points, "correct", higher_is_better=True)}
    records = {}
    for rule, step in picks.items():
        name = f"step-{step}"
        mathtune("eval", "--model", args.model, "--adapter", str(kept / name), "--data", args.data, "--limit",
                 str(args.test_limit), "--max-new-tokens", str(args.max_new_tokens), "--name", name,
                 "--out", str(args.out / "test"), "--quiet")
        records[rule] = read_eval_records(args.out / "test" / "eval" / f"{name}.jsonl")
    paired = paired_comparison(records["loss"], records["exact_match"])
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    result = {
        "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "command": " ".join(sys.argv), "sizes": {"train_examples": summary["train_examples"],
                                                 "val_examples": summary["val_examples"],
                                                 "accuracy_problems": points[-1]["n"], "test_problems": args.test_limit},
        "curve": [{"step": p["step"], "eval_loss": round(p["eval_loss"], 4), "correct": p["correct"], "n": p["n"],
                   "decode_s": p["decode_s"]} for p in points],
        "picks": picks, "kept": summary["best_step"], "train_wall_s": round(train_s, 1),
        "decode_s": round(sum(p["decode_s"] or 0 for p in points), 1), "training_wall_time_s": summary["wall_time_s"],
        "test": {rule: {"correct": sum(r["correct_strict"] for r in recs), "n": len(recs)} for rule, recs in records.items()},
        "paired_exact_match_minus_loss": {k: paired.get("strict", {}).get(k) for k in
                                          ("difference_pp", "ci95_pp", "mcnemar_p", "improved", "regressed")},
    }
    (args.out / "select_by.json").write_text(json.dumps(result, indent=2) + "\n")
    with (REPO / "bench" / "results_select_by.jsonl").open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
