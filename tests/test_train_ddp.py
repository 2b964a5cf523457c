"""Data-parallel training: two CPU processes (gloo) launched by torchrun make one run,
with one adapter and one metrics file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors.torch import load_file


def test_two_processes_make_one_run(tmp_path, tiny_model_dir, small_data_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    out = tmp_path / "run"
    settings = [
        f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=16",
        "train.batch_size=2", "train.epochs=1", "train.eval_every_steps=2",
    ]
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mathtune", "train", str(config), "--out", str(out),
    ] + [x for s in settings for x in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("training done") == 1  # only the main process reports
    assert proc.stdout.count("adapter: ") == 1 and proc.stdout.splitlines()[-1] == f"adapter: {out / 'adapter'}"

    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["world_size"] == 2
    lines = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(summary["global_step"] + 1))
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "config.yaml", "run.log", "train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["checkpoints", "metrics.jsonl", "summary.json", "tensorboard"]
    assert len(list((out / "train" / "tensorboard").iterdir())) == 1  # one events file, from the main process
    assert load_file(str(out / "adapter" / "adapter_model.safetensors"))
