"""A training run that diverges is stopped at that step and said: exit 1 with one line, no
non-finite adapter written, the last finite checkpoint kept and resumed from, a report that says
so, and an evaluation that refuses a non-finite adapter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mathtune.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def argv(command: str, config: Path, model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"model.name_or_path={model}", f"data.source={data}", "data.train_limit=16", "train.epochs=2",
            "train.batch_size=4", "train.report_to=[]", "train.warmup_ratio=0.0", "eval.limit=2",
            "eval.max_new_tokens=4", *extra]
    return [command, str(config), "--out", str(out)] + [a for s in sets for a in ("--set", s)]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]


def adapter_finite(folder: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(folder / "adapter_model.safetensors").values())


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text("name: diverging\n")
    return path


def test_a_learning_rate_too_high_stops_the_run_and_the_report_says_so(config, tiny_model_dir, small_data_dir,
                                                                         tmp_path, capsys):
    """A real divergence: at learning rate 1e6 the weights overflow within a few steps."""
    out = tmp_path / "run"
    code = main(argv("run", config, tiny_model_dir, small_data_dir, out, "train.learning_rate=1e6",
                     "train.eval_every_steps=50"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    rows = metrics(out)
    bad = next(r for r in rows if any(isinstance(r.get(k), float) and not math.isfinite(r[k])
                                      for k in ("loss", "grad_norm", "eval_loss")))
    assert rows[-1]["step"] == bad["step"], "training stopped at the first non-finite step"
    assert f"training diverged at step {bad['step']}" in err[0] and "learning_rate" in err[0], err[0]
    assert not (out / "adapter").exists() and not (out / "train" / "summary.json").exists()
    assert not (out / "eval" / "tuned.jsonl").exists()
    assert not any((out / "train" / "checkpoints").glob("checkpoint-*"))  # none before it, none of it

    assert main(["report", str(out)]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["training"]["diverged"]["step"] == bad["step"] and not analysis["training"]["available"]
    report = (out / "report.md").read_text()
    assert f"Training diverged at step {bad['step']}" in report and f"training diverged at step {bad['step']}" in report
    assert "decrease" not in report.split("## Training", 1)[1].split("\n## ", 1)[0]  # no table of a finished run
    recommended = report.split("## Recommendations", 1)[1].split("\n## ", 1)[0]
    assert "lower train.learning_rate (it was 1e+06; try 250000)" in recommended, recommended


def test_a_forced_nan_keeps_the_last_finite_checkpoint_and_running_again_resumes_from_it(
        config, tiny_model_dir, small_data_dir, tmp_path, capsys, monkeypatch):
    import trl

    real_loss = trl.SFTTrainer.compute_loss

    def nan_at_step_three(self, model, inputs, *args, **kwargs):
        loss = real_loss(self, model, inputs, *args, **kwargs)
        if model.training and self.state.global_step == 2:  # the third step's loss, its gradients and so its update: NaN
            loss = loss * float("nan")
        return loss

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", nan_at_step_three)
    out = tmp_path / "run"
    args = argv("train", config, tiny_model_dir, small_data_dir, out, "train.eval_every_steps=1")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "training diverged at step 3: loss is nan" in err and "checkpoint-2" in err, err
    kept = sorted(p.name for p in (out / "train" / "checkpoints").glob("checkpoint-*"))
    assert kept and kept[-1] == "checkpoint-2", kept  # no checkpoint of the NaN step
    assert all(adapter_finite(p) for p in (out / "train" / "checkpoints").glob("checkpoint-*"))
    assert not (out / "adapter").exists()
    assert [r["step"] for r in metrics(out)][-1] == 3

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", real_loss)
    assert main(args) == 0
    assert "resuming from" in (out / "run.log").read_text() and "checkpoint-2" in (out / "run.log").read_text()
    rows = metrics(out)
    assert all(math.isfinite(r[k]) for r in rows for k in ("loss", "grad_norm", "eval_loss") if k in r)
    assert adapter_finite(out / "adapter")


def test_a_nan_between_logged_steps_writes_no_checkpoint_of_it(config, tiny_model_dir, small_data_dir, tmp_path,
                                                                capsys, monkeypatch):
    """train.logging_steps 5, a checkpoint at step 3, NaN from the third step's update on: the
    weights are checked before the checkpoint is written."""
    import trl

    real_loss = trl.SFTTrainer.compute_loss

    def nan_at_step_three(self, model, inputs, *args, **kwargs):
        loss = real_loss(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if model.training and self.state.global_step == 2 else loss

    monkeypatch.setattr(trl.SFTTrainer, "compute_loss", nan_at_step_three)
    out = tmp_path / "run"
    assert main(argv("train", config, tiny_model_dir, small_data_dir, out, "train.eval_every_steps=3",
                     "train.logging_steps=5")) == 1
    err = capsys.readouterr().err
    assert "training diverged at step 3: the adapter is non-finite in" in err, err
    assert not list((out / "train" / "checkpoints").glob("checkpoint-*")) and not (out / "adapter").exists()


def test_eval_refuses_an_adapter_with_non_finite_weights(tiny_model_dir, small_data_dir, trained_adapter, tmp_path,
                                                         capsys):
    broken = tmp_path / "adapter"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((trained_adapter / "adapter_config.json").read_text())
    weights = load_file(trained_adapter / "adapter_model.safetensors")
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    save_file(weights, broken / "adapter_model.safetensors")
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", str(broken), "--data", str(small_data_dir),
                 "--limit", "1", "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "non-finite weights" in err[0] and "diverged" in err[0], err
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").rglob("*.jsonl"))


@pytest.fixture
def trained_adapter(config, tiny_model_dir, small_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finite") / "run"
    assert main(argv("train", config, tiny_model_dir, small_data_dir, out, "train.epochs=1",
                     "train.eval_every_steps=50")) == 0
    return out / "adapter"


def test_no_adapter_with_a_non_finite_weight_is_written_whatever_the_logs_said():
    """The last guard before adapter/ is written: a NaN the logs never showed still stops it."""
    from mathtune.train.divergence import Diverged
    from mathtune.train.run import refuse_non_finite_adapter

    model = torch.nn.Linear(4, 2)
    model.weight.requires_grad_(False)  # the frozen base: never counted
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    refuse_non_finite_adapter(model)
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(Diverged, match="1 of the adapter's 2 weights are not finite"):
        refuse_non_finite_adapter(model)
