"""Sharded evaluation: two CPU processes (gloo) launched by torchrun write the same records
and summary figures as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mathtune.evaluation.evaluate import evaluate
from mathtune.evaluation.request import EvalRequest
from mathtune.evaluation.summary import eval_summary_json as as_json
from mathtune.evaluation.resolve import settled


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_write_what_one_writes(tmp_path, tiny_model_dir, small_data_dir, one_thread):
    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=9, max_new_tokens=12, batch_size=2)
    single = as_json(evaluate(settled(req, tmp_path / "one", "m"), tmp_path / "one", name="m"))

    out = tmp_path / "two"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mathtune", "eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "9",
        "--max-new-tokens", "12", "--batch-size", "2", "--out", str(out), "--name", "m",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("records:") == 1  # only the first process reports

    assert _lines(out / "eval" / "m.jsonl") == _lines(tmp_path / "one" / "eval" / "m.jsonl")
    sharded = json.loads((out / "eval" / "m.summary.json").read_text())
    assert sharded["world_size"] == 2 and single["world_size"] == 1
    for key in ("n", "correct_strict", "correct_flexible", "generated_tokens", "truncated", "protocol"):
        assert sharded[key] == single[key]
    assert sorted(p.name for p in (out / "eval").iterdir()) == ["m.jsonl", "m.summary.json"]
