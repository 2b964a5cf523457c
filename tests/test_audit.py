"""The audit: a tiny `mathtune run` interrupted once in training and once in evaluation (each by
SIGKILL, as `kill -9` does), then finished by the same command. Every figure of analysis.json
that has a definition is then recomputed here from the run folder's own files, independently
of mathtune's code: accuracies, Wilson intervals, paired counts, rates and loss decreases."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mathtune import cli

# Kill the first attempt at the start of training step 5 (checkpoints every 3 steps), and the
# second attempt as its 4th evaluation record is built (3 records of base are on disk).
KILLER = """
import os, signal, sys
import trl
import mathtune.evaluation.evaluate as ev
from mathtune.cli import main

mode = os.environ["AUDIT_KILL"]
real_step, real_record = trl.SFTTrainer.training_step, ev.build_record
built = []

def step_then_die(self, *args, **kwargs):
    if mode == "train" and self.state.global_step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)

def record_then_die(*args, **kwargs):
    built.append(1)
    if mode == "eval" and len(built) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_record(*args, **kwargs)

trl.SFTTrainer.training_step = step_then_die
ev.build_record = record_then_die
sys.exit(main(sys.argv[1:]))
"""


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@pytest.fixture(scope="module")
def audited_run(tiny_model_dir, small_data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    config = tmp / "tiny.yaml"
    config.write_text("name: audit\n")
    settings = [
        f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=24",
        "train.batch_size=1", "train.epochs=1", "train.eval_every_steps=3", "train.report_to=[]",
        "eval.limit=8", "eval.max_new_tokens=12", "eval.batch_size=2",
    ]
    out = tmp / "run"
    argv = ["run", str(config), "--out", str(out)] + [x for s in settings for x in ("--set", s)]
    script = tmp / "killer.py"
    script.write_text(KILLER)
    for mode in ("train", "eval"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "AUDIT_KILL": mode}
        proc = subprocess.run([sys.executable, str(script), *argv], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "eval" / "base.partial.jsonl").is_file()
    assert cli.main(argv) == 0
    return out


def test_accuracies_and_intervals_recompute(audited_run):
    analysis = json.loads((audited_run / "analysis.json").read_text())
    for name in ("base", "tuned"):
        records = _jsonl(audited_run / "eval" / f"{name}.jsonl")
        model = analysis["benchmark"]["models"][name]
        assert model["n"] == len(records) == 8
        for kind in ("strict", "flexible"):
            k = sum(bool(r[f"correct_{kind}"]) for r in records)
            lo, hi = _wilson(k, len(records))
            assert model[kind]["correct"] == k
            assert model[kind]["accuracy_pct"] == round(100 * k / len(records), 1)
            assert model[kind]["ci95_pct"] == [round(100 * lo, 1), round(100 * hi, 1)]


def test_paired_counts_recompute(audited_run):
    analysis = json.loads((audited_run / "analysis.json").read_text())
    base = {r["id"]: r for r in _jsonl(audited_run / "eval" / "base.jsonl")}
    tuned = {r["id"]: r for r in _jsonl(audited_run / "eval" / "tuned.jsonl")}
    for kind in ("strict", "flexible"):
        pairs = [(bool(base[i][f"correct_{kind}"]), bool(tuned[i][f"correct_{kind}"])) for i in base]
        paired = analysis["benchmark"]["paired"][kind]
        assert paired["improved"] == sum(1 for a, b in pairs if not a and b)
        assert paired["regressed"] == sum(1 for a, b in pairs if a and not b)
        assert paired["both_right"] == sum(1 for a, b in pairs if a and b)
        assert paired["both_wrong"] == sum(1 for a, b in pairs if not a and not b)
        diff = (sum(b for _, b in pairs) - sum(a for a, _ in pairs)) / len(pairs)
        assert paired["difference_pp"] == round(100 * diff, 1)


def test_rates_count_only_timed_work(audited_run):
    """The interrupted base evaluation ran in two sessions: its rate is its problems over the
    two sessions' own times, not all problems over the second session's time."""
    base = json.loads((audited_run / "eval" / "base.summary.json").read_text())
    first, second = base["sessions"]
    assert first["problems"] == 3 and second["problems"] == 5 and base["resumed_from"] == 3
    wall = first["wall_time_s"] + second["wall_time_s"]
    assert base["wall_time_s"] == pytest.approx(wall, abs=1e-3)
    assert base["problems_per_s"] == pytest.approx(8 / wall, rel=1e-3)
    records = _jsonl(audited_run / "eval" / "base.jsonl")
    assert base["tokens_per_s"] == pytest.approx(sum(r["num_generated_tokens"] for r in records) / wall, rel=1e-3)
    analysis = json.loads((audited_run / "analysis.json").read_text())
    assert analysis["benchmark"]["models"]["base"]["problems_per_s"] == round(8 / base["wall_time_s"], 2)
    train = json.loads((audited_run / "train" / "summary.json").read_text())
    assert train["resumed_from_step"] == 3 and "rate_note" in train
    assert train["tokens_per_s"] == pytest.approx(train["tokens_seen"] / train["wall_time_s"])


def test_loss_decreases_recompute(audited_run):
    analysis = json.loads((audited_run / "analysis.json").read_text())
    lines = _jsonl(audited_run / "train" / "metrics.jsonl")
    steps = [line["step"] for line in lines if "loss" in line]
    assert steps == sorted(set(steps)), "a resumed metrics file holds every step once"
    for curve, key in (("train", "loss"), ("validation", "eval_loss")):
        values = [line[key] for line in lines if key in line]
        w = max(1, math.ceil(len(values) * 0.10))
        first, last = sum(values[:w]) / w, sum(values[-w:]) / w
        got = analysis["training"]["loss_decrease"][curve]
        assert got["points"] == len(values) and got["window_points"] == w
        assert got["decrease_pct"] == round((first - last) / first * 100, 1)
    # The trend states the points it used, and says nothing from too few.
    trend = analysis["training"]["trend"]
    val_points = sum(1 for line in lines if "eval_loss" in line)
    assert trend["validation_points_used"] == min(3, val_points)
    if val_points < 3:
        assert trend["verdict"] == "not enough points"
