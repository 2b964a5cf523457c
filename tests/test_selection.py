"""train.select_by exact_match: validation exact match at every validation point picks the kept
adapter and drives early stopping; the analysis says which step each rule keeps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_train_config
from mathtune import cli
from mathtune.analysis.selection import accuracy_trend, analyze_selection, best_step
from mathtune.core.errors import MathtuneError
from mathtune.report.explanations import accuracy_trend_text, disagreement_text
from mathtune.task.data import Problem
from mathtune.task.train_summary import read_train_summary
from mathtune.train import methods as train_mod
from mathtune.train.accuracy import ANSWERS_FILE, accuracy_subset
from mathtune.train.run import run_train


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the selection rules, on constructed points ---------------------------------------------


def test_each_rule_keeps_its_first_best_step_after_step_0():
    points = [{"step": 0, "eval_loss": 1.0, "correct": 9},  # the untrained model: never kept
              {"step": 2, "eval_loss": 2.0, "correct": 3},
              {"step": 4, "eval_loss": 1.8, "correct": 6},
              {"step": 6, "eval_loss": 1.5, "correct": 6},  # a tie on accuracy: the earlier step stays
              {"step": 8, "eval_loss": 1.5, "correct": 5}]  # a tie on loss: likewise
    assert best_step(points, "eval_loss", higher_is_better=False) == 6
    assert best_step(points, "correct", higher_is_better=True) == 4
    assert best_step(points[:1], "correct", higher_is_better=True) is None


def test_the_accuracy_trend_pairs_the_problems():
    points = [{"step": s, "correct": c, "n": 4} for s, c in ((2, 1), (4, 2), (6, 4))]
    answers = {2: {"a": True, "b": False, "c": False, "d": False}, 6: {"a": True, "b": True, "c": True, "d": True}}
    trend = accuracy_trend(points, answers)
    assert trend["from_step"] == 2 and trend["to_step"] == 6
    assert (trend["solved"], trend["lost"]) == (3, 0)
    assert trend["change"]["points"] == 75.0
    assert "paired on the same 4 problems" in accuracy_trend_text(trend)
    unpaired = accuracy_trend(points, {})
    assert unpaired["verdict"] == "not paired" and unpaired["change"] is None


def test_the_subset_is_seeded_and_comes_from_the_problems_given():
    problems = [Problem(id=f"train-{i}", question=f"q{i}", answer="#### 1", gold="1") for i in range(50)]
    a, b = accuracy_subset(problems, 8, seed=1), accuracy_subset(problems, 8, seed=1)
    assert a == b and len(a) == 8 and set(p.id for p in a) <= {p.id for p in problems}
    assert [p.id for p in a] == sorted((p.id for p in a), key=lambda i: int(i.split("-")[1]))  # split order kept
    assert accuracy_subset(problems, 8, seed=2) != a
    assert accuracy_subset(problems[:5], 8, seed=1) == problems[:5]


# --- a real run whose accuracy is scripted: the best step follows it, not the loss ----------


def scripted_scores(correct_per_call: list[int]):
    """A scorer that solves the first k problems at the i-th validation point."""
    calls = iter(correct_per_call)

    def score(model, tokenizer, problems, builder, request):
        k = next(calls)
        return [{"id": p.id, "pred_strict": p.gold if i < k else None, "correct_strict": i < k, "truncated": False}
                for i, p in enumerate(problems)]

    return score


def test_best_step_and_early_stopping_follow_exact_match(tmp_path, tiny_model_dir, small_data_dir, monkeypatch,
                                                          one_thread):
    real = train_mod.exact_match_callback
    # validation points at steps 0, 2, 4, 6, 8: most problems solved at step 4, fewer after it
    monkeypatch.setattr(train_mod, "exact_match_callback",
                        lambda *a, **k: real(*a, **k, score=scripted_scores([0, 1, 3, 2, 1, 0, 0])))
    config = tiny_train_config(tiny_model_dir, small_data_dir, "data.train_limit=40", "train.epochs=2",
                               "train.early_stopping_patience=2", "train.report_to=[]",
                               "train.select_by=exact_match", "train.accuracy_problems=4")
    run_dir = run_train(config, tmp_path / "run")
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["select_by"] == "exact_match"
    assert summary["best_step"] == 4 and summary["best_val_exact_match"] == {"correct": 3, "n": 4}
    assert summary["stopped_early"] is True and summary["global_step"] == 8
    lines = read_jsonl(run_dir / "train" / "metrics.jsonl")
    evals = [line for line in lines if "eval_loss" in line]
    assert [(e["step"], e["val_exact_match_correct"], e["val_exact_match_problems"]) for e in evals] == \
        [(0, 0, 4), (2, 1, 4), (4, 3, 4), (6, 2, 4), (8, 1, 4)]
    assert all(e["val_exact_match"] == e["val_exact_match_correct"] / 4 and e["val_decode_s"] >= 0 for e in evals)
    assert summary["best_eval_loss"] == pytest.approx(evals[2]["eval_loss"])
    by_loss = min(evals[1:], key=lambda e: e["eval_loss"])["step"]
    assert by_loss != 4  # the loss would have kept another step
    best = load_file(str(run_dir / "train" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    answers = read_jsonl(run_dir / "train" / ANSWERS_FILE)
    assert [a["step"] for a in answers] == [0, 2, 4, 6, 8]
    assert [sum(x["correct_strict"] for x in a["answers"]) for a in answers] == [0, 1, 3, 2, 1]

    analysis = analyze_selection(run_dir, read_train_summary(run_dir / "train" / "summary.json"), summary["wall_time_s"])
    assert analysis["best_step_by_exact_match"] == 4 == analysis["kept_step"]
    assert analysis["best_step_by_loss"] == by_loss
    assert disagreement_text(analysis["disagreement"]).startswith("Loss and accuracy disagree on the best step")
    assert analysis["trend"]["from_step"] == 4 and analysis["trend"]["to_step"] == 8
    assert (analysis["trend"]["solved"], analysis["trend"]["lost"]) == (0, 2)

    assert cli.main(["report", str(run_dir)]) == 0
    report = (run_dir / "report.md").read_text()
    assert "Validation exact match during training" in report and "Judged by problems solved" in report
    assert (run_dir / "figures" / "val_exact_match.png").is_file()


# --- the real decoder, on validation problems only --------------------------------------------


def test_real_decoding_on_validation_problems_never_reads_the_test_split(tmp_path, tiny_model_dir, small_data_dir,
                                                                         one_thread):
    data = tmp_path / "train-only"
    data.mkdir()
    shutil.copy(small_data_dir / "train.jsonl", data / "train.jsonl")  # no test.jsonl at all
    config = tiny_train_config(tiny_model_dir, data, "train.report_to=[]", "train.select_by=exact_match",
                               "train.accuracy_problems=3", "eval.max_new_tokens=8")
    run_dir = run_train(config, tmp_path / "run")
    from mathtune.task.data import DataFormat, training_splits

    _, val = training_splits(str(data), val_fraction=0.1, seed=42, train_limit=16, fmt=DataFormat())
    answers = read_jsonl(run_dir / "train" / ANSWERS_FILE)
    assert answers and all({a["id"] for a in line["answers"]} <= {p.id for p in val} for line in answers)
    lines = [line for line in read_jsonl(run_dir / "train" / "metrics.jsonl") if "eval_loss" in line]
    assert [line["step"] for line in lines] == [a["step"] for a in answers]
    assert all(line["val_exact_match_problems"] == len(val) == 2 for line in lines)  # 16 training problems: 2 held out


def test_grpo_has_no_validation_to_select_by(tiny_model_dir, small_data_dir):
    with pytest.raises(MathtuneError, match="select_by exact_match needs validation points"):
        tiny_train_config(tiny_model_dir, small_data_dir, "train.method=grpo", "train.batch_size=4",
                          "train.select_by=exact_match")


def test_plan_counts_the_validation_decoding(tiny_model_dir, small_data_dir):
    from mathtune.plan import format_plan, make_plan

    plain = make_plan(tiny_train_config(tiny_model_dir, small_data_dir), device="cpu")
    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.select_by=exact_match")
    plan = make_plan(config, device="cpu")
    assert plan.accuracy_problems == 2 and plain.time_s.validation_decoding is None
    assert plan.flops.validation_decoding > 0 and plan.time_s.validation_decoding is not None
    assert plan.time_s.validation == pytest.approx(plain.time_s.validation + plan.time_s.validation_decoding, abs=0.11)
    assert "each decoding 2 problems for exact match" in " ".join(format_plan(plan).split())


# --- a kill, and the same command again ------------------------------------------------------

KILLER = """
import os, signal, sys
import trl
from mathtune.cli import main

real_step = trl.SFTTrainer.training_step

def step_then_die(self, *args, **kwargs):
    if self.state.global_step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)

trl.SFTTrainer.training_step = step_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_resumed_run_keeps_the_accuracy_points_once(tmp_path, tiny_model_dir, small_data_dir, one_thread):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    settings = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=24",
                "train.batch_size=1", "train.epochs=1", "train.eval_every_steps=3", "train.report_to=[]",
                "train.select_by=exact_match", "train.accuracy_problems=3", "eval.max_new_tokens=8"]
    argv = ["train", str(config)] + [x for s in settings for x in ("--set", s)]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(script), *argv, "--out", str(killed)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [a["step"] for a in read_jsonl(killed / "train" / ANSWERS_FILE)] == [0, 3]

    assert cli.main(argv + ["--out", str(killed)]) == 0
    assert cli.main(argv + ["--out", str(straight)]) == 0
    resumed, reference = read_jsonl(killed / "train" / ANSWERS_FILE), read_jsonl(straight / "train" / ANSWERS_FILE)
    assert [a["step"] for a in resumed] == [a["step"] for a in reference] == sorted({a["step"] for a in reference})
    assert resumed == reference  # greedy answers of the same weights at the same steps
    fields = ("step", "val_exact_match", "val_exact_match_correct", "val_exact_match_problems")
    mine = [{k: line.get(k) for k in fields} for line in read_jsonl(killed / "train" / "metrics.jsonl")]
    theirs = [{k: line.get(k) for k in fields} for line in read_jsonl(straight / "train" / "metrics.jsonl")]
    assert mine == theirs
    summary = json.loads((killed / "train" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 3
    assert summary["best_step"] == json.loads((straight / "train" / "summary.json").read_text())["best_step"]
