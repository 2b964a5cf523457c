"""Kill `mathtune train` with SIGKILL mid-training, run the same command again: it resumes
from the last checkpoint, continues the same metrics file, and ends where an uninterrupted
run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mathtune import cli

KILL_AT_STEP = 5  # checkpoints every 3 steps: checkpoint-3 exists, steps 4-5 are lost work

# The first attempt runs in its own process, which SIGKILLs itself at the start of a step:
# no handler, no cleanup, exactly what `kill -9` does.
KILLER = """
import os, signal, sys
import trl
from mathtune.cli import main

real_step = trl.SFTTrainer.training_step

def step_then_die(self, *args, **kwargs):
    if self.state.global_step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)

trl.SFTTrainer.training_step = step_then_die
sys.exit(main(sys.argv[1:]))
"""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sigkill_then_same_command_resumes(tmp_path, tiny_model_dir, small_data_dir, capsys, one_thread):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    settings = [
        f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=24",
        "train.batch_size=1", "train.epochs=1", "train.eval_every_steps=3", "train.report_to=[]",
    ]
    argv = ["train", str(config)] + [x for s in settings for x in ("--set", s)]
    killed, straight = tmp_path / "killed", tmp_path / "straight"

    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(step=KILL_AT_STEP))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(script), *argv, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "adapter").exists() and not (killed / "train" / "summary.json").exists()
    before = read_jsonl(killed / "train" / "metrics.jsonl")
    assert before[-1]["step"] == KILL_AT_STEP  # lines past the checkpoint, to be dropped on resume

    assert cli.main(argv + ["--out", str(killed)]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert cli.main(argv + ["--out", str(straight)]) == 0

    resumed, reference = read_jsonl(killed / "train" / "metrics.jsonl"), read_jsonl(straight / "train" / "metrics.jsonl")
    assert [line["step"] for line in resumed] == [line["step"] for line in reference]
    assert [line["step"] for line in resumed] == list(range(len(resumed)))  # no duplicates, no gaps
    assert resumed[:4] == before[:4]  # the lines up to the checkpoint are kept as written
    for got, want in zip(resumed, reference):
        for key in ("loss", "eval_loss", "mean_token_accuracy", "learning_rate"):
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), (got["step"], key)
    summary = json.loads((killed / "train" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 3
    assert summary["global_step"] == json.loads((straight / "train" / "summary.json").read_text())["global_step"]
    assert summary["tokens_seen"] == resumed[-1]["num_input_tokens_seen"]
