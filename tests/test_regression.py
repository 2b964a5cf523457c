"""The regression check through lm-evaluation-harness: MMLU from the local CSV folder on the
model in memory, the same number as `lm_eval` run directly, base vs tuned paired, and
one-line errors before any model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from mathtune.cli import main  # noqa: E402
from mathtune.core.errors import MathtuneError  # noqa: E402
from mathtune.analysis.followup_measures import regression_analysis  # noqa: E402
from mathtune.evaluation.regression import ExtraSpec, check_extra, lmeval_tasks, run_extra_tasks  # noqa: E402
from mathtune.report.followup_sections import regression_verdict_texts  # noqa: E402

MMLU = Path(os.environ.get("MATHTUNE_TEST_MMLU", Path(__file__).resolve().parents[2] / "shared" / "mmlu"))
SUBJECTS = ("anatomy", "astronomy")
ENV = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def mmlu() -> Path:
    if not (MMLU / "test" / "anatomy_test.csv").is_file():
        pytest.skip(f"MMLU not found at {MMLU}")
    return MMLU


def test_mmlu_equals_lm_eval_run_directly(mmlu, tiny_model_dir, tmp_path, one_thread, monkeypatch):
    from mathtune.config import ModelConfig
    from mathtune.models.load import load_model

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    spec = ExtraSpec(tasks=("mmlu",), data={"mmlu": str(mmlu)}, subjects=SUBJECTS, limit=12, batch_size=4)
    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), device="cpu")
    ours = run_extra_tasks(model, tokenizer, "base", tmp_path, spec).tasks["mmlu"]
    assert ours.n == 24 and ours.metric == "acc" and len(ours.subtasks) == 2

    # lm_eval's own command line, loading the same model from its folder, on the same task files
    names, task_dir = lmeval_tasks(spec, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                           f"pretrained={tiny_model_dir},dtype=float32", "--tasks", ",".join(names), "--include_path",
                           str(task_dir), "--limit", "12", "--device", "cpu", "--batch_size", "4", "--output_path",
                           str(tmp_path / "direct"), "--log_samples"], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(next((tmp_path / "direct").rglob("results_*.json")).read_text())
    direct = sum(result["results"][n]["acc,none"] * 12 for n in names) / 24
    assert ours.accuracy_pct == round(100 * direct, 1)
    # Document by document too: the same documents right and wrong.
    mine = {(r["subtask"], r["doc_id"]): r["correct"] for r in map(json.loads, (tmp_path / "extra" / "base.jsonl").open())}
    theirs = {}
    for n in names:
        for line in next((tmp_path / "direct").rglob(f"samples_{n}_*.jsonl")).open():
            s = json.loads(line)
            theirs[(n, s["doc_id"])] = bool(s["acc"])
    assert mine == theirs


def test_base_and_tuned_are_paired_on_documents(tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    for name, right in (("base", {0, 1, 2, 3}), ("tuned", {0, 1})):
        rows = [{"task": "mmlu", "subtask": "s", "doc_id": i, "correct": i in right} for i in range(8)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.summary.json").write_text(json.dumps({
            "name": name, "spec": {"tasks": ["mmlu"], "data": {}, "subjects": None, "limit": None},
            "lm_eval_version": "0.4.13", "tasks": {
                "mmlu": {"correct": len(right), "n": 8, "accuracy_pct": 100 * len(right) / 8, "ci95_pct": [0, 100],
                         "metric": "acc", "subtasks": ["s"], "versions": {"s": 1.0}, "n_shot": ["0"],
                         "data": "MMLU"}}}))
    reg = regression_analysis(tmp_path)
    p = reg["paired"]["mmlu"]
    assert (p["n"], p["improved"], p["regressed"]) == (8, 0, 2) and p["difference"]["points"] == -25.0
    assert regression_verdict_texts(reg)[0].startswith("mmlu: ")


@pytest.mark.parametrize("spec, message", [
    (ExtraSpec(tasks=("mmlu",), data={"mmlu": "/nowhere/mmlu"}), "task mmlu: data folder not found: /nowhere/mmlu"),
    (ExtraSpec(tasks=("arc_easy",)), "task arc_easy: its data comes from the hub, which cannot be reached"),
    (ExtraSpec(tasks=("hellaswag",), data={"hellaswag": "/x"}), "local data is read for mmlu only"),
    (ExtraSpec(tasks=("mmlu",), data={"mmlu": "MMLU"}, subjects=("astrology",)), "no subject astrology"),
])
def test_unreachable_tasks_are_one_line_before_any_model(spec, message, mmlu, monkeypatch):
    import mathtune.core.hub

    monkeypatch.setattr(mathtune.core.hub, "hub_reachable", lambda: False)
    if spec.data.get("mmlu") == "MMLU":
        spec = ExtraSpec(tasks=spec.tasks, data={"mmlu": str(mmlu)}, subjects=spec.subjects)
    with pytest.raises(MathtuneError, match=message.replace("(", r"\(")):
        check_extra(spec)


def test_without_lm_eval_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(MathtuneError, match=r"pip install -c constraints.txt -e '\.\[extra\]'"):
        check_extra(ExtraSpec(tasks=("mmlu",)))


def test_run_scores_base_and_tuned_and_reports_the_difference(mmlu, tiny_model_dir, small_data_dir, tmp_path,
                                                              one_thread, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text("name: reg\n")
    sets = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=8",
            "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=1", "eval.limit=2",
            "eval.max_new_tokens=4", "eval.extra=[mmlu]", f"eval.extra_data={{mmlu: {mmlu}}}",
            "eval.extra_subjects=[anatomy]", "eval.extra_limit=10"]
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    reg = analysis["regression"]
    assert set(reg["models"]) == {"base", "tuned"} and reg["paired"]["mmlu"]["n"] == 10
    report = (out / "report.md").read_text()
    assert "## General benchmarks: what the fine-tune cost elsewhere" in report and regression_verdict_texts(reg)[0] in report
