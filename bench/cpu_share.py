"""A CPU that shares well: the same `mathtune eval` alone and beside a competing busy process,
with the runtime's default OpenMP wait ("before": torch loaded before mathtune could choose a
policy, which is what every mathtune before core.cpu_share did) and with mathtune's passive wait
("after": `python -m mathtune`), back to back in one script.

    python bench/cpu_share.py --model ~/.cache/mathtune/dequantized/qwen2.5-coder-0.5b-instruct-... \\
        [--data ../shared/gsm8k] [--limit 4] [--max-new-tokens 256] [--timeout 600]

The competing process is one Python busy loop (`while True: pass`), started before the timed
command and ended after it. Each case prints its wall time, the load average when it started
and whether its records are byte-identical to the first case's; one JSON line per case goes to
bench/results_cpu_share.jsonl. Other jobs on the machine are not stopped: the load average
says how busy it was.
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
BEFORE = ("import sys, torch\nfrom mathtune.cli import main\n"  # torch first: the runtime's default wait
          "raise SystemExit(main(sys.argv[1:]))")


def run_case(name: str, before: bool, busy: bool, args, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    command = ["eval", "--model", args.model, "--data", args.data, "--limit", str(args.limit),
               "--max-new-tokens", str(args.max_new_tokens), "--out", str(out / name), "--quiet"]
    argv = [sys.executable, "-c", BEFORE, *command] if before else [sys.executable, "-m", "mathtune", *command]
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    load = os.getloadavg()
    start = time.perf_counter()
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=args.timeout)
        wall, rc = time.perf_counter() - start, done.returncode
    except subprocess.TimeoutExpired:
        wall, rc = None, "timeout"
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    records = out / name / "eval"
    # The finished records only: a stopped case leaves NAME.partial.jsonl, which is not compared.
    files = sorted(p for p in records.glob("*.jsonl") if not p.name.endswith(".partial.jsonl")) \
        if records.is_dir() and rc == 0 else []
    return {"case": name, "wait": "runtime default" if before else "passive (mathtune)",
            "competing_busy_loop": busy, "wall_s": round(wall, 1) if wall else None, "rc": rc,
            "load_average_at_start": [round(x, 2) for x in load],
            "records": files[0].read_bytes() if files else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=str(HERE.parent.parent / "shared" / "gsm8k"))
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--timeout", type=int, default=600, help="seconds a case may take before it is stopped")
    parser.add_argument("--cases", default="after-alone,after-busy,before-alone,before-busy")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            when, company = name.split("-")
            r = run_case(name, when == "before", company == "busy", args, Path(tmp))
            first = next((x["records"] for x in results if x["records"] is not None), None)
            r["records_identical_to_first"] = None if first is None or r["records"] is None else r["records"] == first
            results.append(r)
            print(f"{name:13} wait {r['wait']:20} busy loop {str(r['competing_busy_loop']):5} "
                  f"wall {r['wall_s']} s  rc {r['rc']}  load at start {r['load_average_at_start']}  "
                  f"records identical to the first: {r['records_identical_to_first']}", flush=True)
    import torch

    stamp = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
             "cores": len(os.sched_getaffinity(0)), "limit": args.limit, "max_new_tokens": args.max_new_tokens,
             "model": args.model}
    with open(HERE / "results_cpu_share.jsonl", "a") as f:
        for r in results:
            f.write(json.dumps({**stamp, **{k: v for k, v in r.items() if k != "records"}}) + "\n")


if __name__ == "__main__":
    main()
