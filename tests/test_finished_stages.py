"""One rule for a finished stage (core.finished): on a finished tiny run, changing a stage's
settings is refused in one line naming what changed and --overwrite, and the run's files stay
byte for byte; the same settings reuse every stage. Training, the benchmarks, the probe's
variants and evaluations, and the lm-eval tasks (with MMLU at ../shared/mmlu) each checked on
a copy of one finished run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from mathtune.cli import main
from mathtune.core.errors import MathtuneError
from mathtune.core.finished import finished_stage

MMLU = Path(os.environ.get("MATHTUNE_TEST_MMLU", Path(__file__).resolve().parents[2] / "shared" / "mmlu"))
HAVE_EXTRA = importlib.util.find_spec("lm_eval") is not None and (MMLU / "test" / "anatomy_test.csv").is_file()


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, small_data_dir, tmp_path_factory):
    """A finished tiny run with the probe, and the lm-eval tasks where MMLU and lm-eval are here:
    (run folder, the command that made it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    config = out.parent / "c.yaml"
    config.write_text("name: finished\n")
    sets = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=8",
            "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=1", "train.report_to=[]",
            "eval.limit=2", "eval.max_new_tokens=4", "eval.probe.variants=1"]
    if HAVE_EXTRA:
        sets += ["eval.extra=[mmlu]", f"eval.extra_data={{mmlu: {MMLU}}}", "eval.extra_subjects=[anatomy]",
                 "eval.extra_limit=4"]
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    old = os.environ.get("HF_DATASETS_OFFLINE")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        assert main(argv) == 0
    finally:
        if old is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = old
    return out, argv


@pytest.fixture
def copy(finished_run, tmp_path, monkeypatch):
    """A copy of the finished run, and its command pointed at the copy."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out, argv = finished_run
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return target, [str(target) if a == str(out) else a for a in argv]


def _contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


CHANGES = [
    pytest.param(["lora.r=4"], "holds a run of a different config (differs in lora.r)", id="training"),
    pytest.param(["eval.prompt=cot8"], "holds a finished eval/base.jsonl with other settings (differs in prompt)",
                 id="evaluation"),
    pytest.param(["eval.probe.variants=2"], "holds variants made with other settings (differs in variants_per_problem)",
                 id="probe"),
    pytest.param(["eval.extra_limit=3"], "holds finished extra/base results with other settings (differs in extra_limit)",
                 id="extra", marks=pytest.mark.skipif(not HAVE_EXTRA, reason=f"needs lm-eval and MMLU at {MMLU}")),
]


@pytest.mark.parametrize("change, message", CHANGES)
def test_a_changed_stage_is_refused_and_its_results_kept(copy, capsys, change, message):
    run, argv = copy
    before = _contents(run)
    capsys.readouterr()
    for item in change:
        argv = argv + ["--set", item]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mathtune: error: ")]
    assert len(lines) == 1 and message in lines[0] and "--overwrite" in lines[0], err
    assert _contents(run) == before


def test_the_same_settings_reuse_every_stage(copy, capsys):
    run, argv = copy
    kept = {name: data for name, data in _contents(run).items()
            if name.startswith(("adapter/", "eval/", "probe/", "extra/", "train/")) or name == "config.yaml"}
    assert main(argv) == 0
    assert {name: data for name, data in _contents(run).items() if name in kept} == kept


@pytest.mark.skipif(not HAVE_EXTRA, reason=f"needs lm-eval and MMLU at {MMLU}")
def test_extra_tasks_of_another_spec_are_refused_without_a_model(copy):
    """`mathtune eval --extra` reaches the same rule: refused before lm-eval runs."""
    from mathtune.evaluation.regression import ExtraSpec, run_extra_tasks

    run, _ = copy
    before = _contents(run)
    spec = ExtraSpec(tasks=("mmlu",), data={"mmlu": str(MMLU)}, subjects=("anatomy",), limit=5)
    with pytest.raises(MathtuneError, match=r"differs in extra_limit\); use --overwrite"):
        run_extra_tasks(None, None, "tuned", run, spec)
    assert _contents(run) == before


def test_the_rule_reuses_refuses_or_replaces():
    said = []
    assert finished_stage(None, {"a": 1}, where="W", what="x", overwrite=False) is False
    assert finished_stage({"a": 1}, {"a": 1}, where="W", what="x", overwrite=False) is True
    assert finished_stage({"a": 1}, {"a": 1}, where="W", what="x", overwrite=True) is True
    with pytest.raises(MathtuneError, match=r"^W holds x \(differs in a, s\.b\); use --overwrite"):
        finished_stage({"a": 1, "s": {"b": 1}}, {"a": 2, "s": {"b": 2}}, where="W", what="x", overwrite=False)
    assert finished_stage({"a": 1}, {"a": 2}, where="W", what="x", overwrite=True, replacing=said.append) is False
    assert said == [["a"]]


def test_a_verdict_of_another_environment_is_no_conflict(tmp_path, monkeypatch):
    """First-use verdicts are kept under their whole identity (environment key, check): one of
    another environment is checked on its own, the same one reused, a damaged one made again."""
    from mathtune.models import first_use

    verdicts = tmp_path / "verdicts.json"
    monkeypatch.setenv(first_use.VERDICTS_ENV, str(verdicts))
    name = "decoder dynamic_cache, float32"
    verdicts.write_text(json.dumps({"another GPU; torch 0": {name: {"verdict": "fail"}},
                                    "here": {name: {"verdict": "pass", "max_diff": 0.0}}, "damaged": {name: []}}))
    assert first_use.stored_verdict("here", name) == {"verdict": "pass", "max_diff": 0.0}
    assert first_use.stored_verdict("elsewhere", name) is None
    assert first_use.stored_verdict("damaged", name) is None
