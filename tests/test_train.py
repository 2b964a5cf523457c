"""`mathtune train` on the tiny model: files, metrics, summary, best adapter, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_train_config
from mathtune import cli
from mathtune.config import with_prompt_date
from mathtune.train import methods as methods_mod
from mathtune.train import run as train_mod
from mathtune.core.errors import MathtuneError
from mathtune.train.run import run_train
from mathtune.train.trainer import EVAL_FIELDS, TRAIN_FIELDS

SUMMARY_KEYS = {
    "method", "global_step", "max_steps", "epochs_completed", "best_step", "best_eval_loss", "best_checkpoint",
    "stopped_early", "early_stopping_patience", "train_examples", "val_examples", "dropped_too_long",
    "wall_time_s", "tokens_seen", "tokens_seen_kind", "tokens_per_s", "peak_memory_bytes",
    "peak_memory_kind", "trainable_params", "base_params", "total_params", "device", "world_size", "dtype",
    "gpu_hourly_usd", "cost_usd", "cost_note", "resumed_from_step", "versions",
    "model", "dtype_requested", "attention", "batch_size", "trust_remote_code", "data_identity", "data_sources",
    "answer_forms", "prompt_answer_form",
    "select_by", "best_val_exact_match",
    "quantization_record", "adapter_settings",
    "lm_head", "fast_paths",  # which head ran, and how each fast path was chosen (models.first_use)
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_run_leaves_exactly_the_documented_files(trained_run):
    files = files_under(trained_run)
    fixed = {p for p in files if not p.startswith(("train/checkpoints/", "train/tensorboard/"))}
    assert fixed == {
        "config.yaml",
        "train/metrics.jsonl",
        "train/summary.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/README.md",
        "run.log",  # every trainer log line and library warning the terminal leaves out
    }
    assert any(re.match(r"train/tensorboard/events\.out\.tfevents\.", p) for p in files)
    checkpoints = {p.split("/")[2] for p in files if p.startswith("train/checkpoints/checkpoint-")}
    assert 1 <= len(checkpoints) <= 2  # the best and the latest
    assert not any(p.endswith(".tmp") for p in files)


def test_metrics_one_line_per_logged_step(trained_run):
    lines = read_jsonl(trained_run / "train" / "metrics.jsonl")
    summary = json.loads((trained_run / "train" / "summary.json").read_text())
    steps = [line["step"] for line in lines]
    # step 0 is the untrained model's validation; then every step (logging_steps=1), no gaps
    assert steps == list(range(0, summary["global_step"] + 1))
    assert set(lines[0]) == {"step", "epoch", "num_input_tokens_seen", "elapsed_s", *EVAL_FIELDS}
    for line in lines[1:]:
        assert set(TRAIN_FIELDS) <= set(line), line
        is_eval = line["step"] % 2 == 0 or line["step"] == summary["global_step"]
        assert set(EVAL_FIELDS) <= set(line) if is_eval else not set(EVAL_FIELDS) & set(line)
        assert 0.0 <= line["mean_token_accuracy"] <= 1.0
    assert [line["elapsed_s"] for line in lines] == sorted(line["elapsed_s"] for line in lines)
    assert lines[-1]["epoch"] == pytest.approx(1.0)


def test_summary_schema_and_best_step(trained_run):
    summary = json.loads((trained_run / "train" / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    lines = read_jsonl(trained_run / "train" / "metrics.jsonl")
    evals = [line for line in lines if "eval_loss" in line and line["step"] > 0]
    best = min(evals, key=lambda line: line["eval_loss"])
    assert summary["best_step"] == best["step"]
    assert summary["best_eval_loss"] == pytest.approx(best["eval_loss"])
    assert summary["device"] == "cpu" and summary["cost_usd"] is None
    assert summary["dtype"] == "float32" and summary["attention"] == "mathtune_segments"
    assert summary["data_identity"]["kind"] == "local" and len(summary["data_identity"]["sha256"]) == 64
    assert summary["versions"]["mathtune"] and summary["versions"]["trl"]
    assert summary["cost_note"] == "not applicable on CPU"
    assert summary["peak_memory_kind"] == "cpu_max_rss" and summary["peak_memory_bytes"] > 0
    assert summary["tokens_seen"] == lines[-1]["num_input_tokens_seen"] > 0
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens_seen"] / summary["wall_time_s"])
    assert summary["stopped_early"] is False and summary["global_step"] == summary["max_steps"]
    # LoRA r=8 on every linear layer of 2 blocks of the 32-wide model (q,k,v,o: 32->32/16; mlp 32<->64)
    adapter = load_file(str(trained_run / "adapter" / "adapter_model.safetensors"))
    assert summary["trainable_params"] == sum(t.numel() for t in adapter.values())
    assert summary["train_examples"] == 16 and summary["val_examples"] == 2
    # What ran: full-precision base weights, and a plain LoRA adapter on every linear layer
    assert summary["quantization_record"] is None
    assert summary["adapter_settings"] == {
        "variant": "LoRA", "r": 8, "alpha": 16, "trained_dtype": "float32",
        "target_modules": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]}


def test_adapter_is_the_best_checkpoint(trained_run):
    summary = json.loads((trained_run / "train" / "summary.json").read_text())
    best = load_file(str(trained_run / summary["best_checkpoint"] / "adapter_model.safetensors"))
    saved = load_file(str(trained_run / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == best.keys()
    for key in saved:
        torch.testing.assert_close(saved[key], best[key], rtol=0, atol=0)


def test_second_run_skips(trained_run, capsys):
    config = tiny_train_config(*_model_and_data(trained_run))
    before = (trained_run / "train" / "summary.json").stat().st_mtime_ns
    run_train(config, trained_run)
    assert (trained_run / "train" / "summary.json").stat().st_mtime_ns == before
    assert "skipping" in capsys.readouterr().out


def _model_and_data(run_dir: Path) -> tuple[Path, Path]:
    from mathtune.config import config_from_yaml_text

    config = config_from_yaml_text((run_dir / "config.yaml").read_text(), "config.yaml")
    return Path(config.model.name_or_path), Path(config.data.source)


def test_early_stopping_keeps_the_best_not_the_last(tmp_path, tiny_model_dir, small_data_dir, monkeypatch, one_thread):
    """A scripted validation curve (offsets added to the real eval loss) that is best at
    step 4 and worse afterwards: training stops after `patience` worse evaluations and
    adapter/ holds step 4's weights, not the last ones."""
    offsets = {0: 3.0, 2: 2.0, 4: 0.0, 6: 1.0, 8: 1.5, 10: 2.0, 12: 2.5}
    real_build = methods_mod.build_trainer

    def build_with_script(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        real_loss = trainer.compute_loss

        def scripted_loss(model, inputs, *a, **k):
            loss = real_loss(model, inputs, *a, **k)
            return loss if model.training else loss + offsets[trainer.state.global_step]

        trainer.compute_loss = scripted_loss
        return trainer

    monkeypatch.setattr(methods_mod, "build_trainer", build_with_script)
    config = tiny_train_config(
        tiny_model_dir, small_data_dir, "data.train_limit=40", "train.epochs=2",
        "train.early_stopping_patience=2", "train.report_to=[]",
    )
    run_dir = run_train(config, tmp_path / "run")
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["best_step"] == 4
    assert summary["stopped_early"] is True
    assert summary["global_step"] == 8 < summary["max_steps"]
    best = load_file(str(run_dir / "train" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"))
    last = load_file(str(run_dir / "train" / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors"))
    saved = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(best[k], last[k]) for k in best)
    for key in saved:
        assert torch.equal(saved[key], best[key])
    lines = read_jsonl(run_dir / "train" / "metrics.jsonl")
    assert [line["step"] for line in lines] == list(range(9))


# --- bad input: one line, exit 1, nothing written -----------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def base_argv(config_file, tiny_model_dir, small_data_dir, out) -> list[str]:
    return [
        "train", str(config_file), "--out", str(out),
        "--set", f"model.name_or_path={tiny_model_dir}",
        "--set", f"data.source={small_data_dir}",
        "--set", "data.train_limit=8",
        "--set", "train.batch_size=2",
    ]


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\ntrain: {epochs: 1, eval_every_steps: 2}\n")
    return path


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.max_length=40"], r"data\.max_length 40 cuts the answer of every training example"),
        (["data.val_fraction=0.001"], r"validation split is empty"),
        (["lora.r=0"], r"lora\.r"),
        (["lora.target_modules=[q_proj, nonexistent_proj]"], r"\['nonexistent_proj'\] match no module"),
        (["lora.target_modules=no_such_.*"], r"matches no module"),
        (["train.report_to=[nonsense]"], r"unknown tracker 'nonsense'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    overrides, message, tmp_path, config_file, tiny_model_dir, small_data_dir, capsys
):
    out = tmp_path / "run"
    argv = base_argv(config_file, tiny_model_dir, small_data_dir, out)
    for item in overrides:
        argv += ["--set", item]
    code, err = run_cli(argv, capsys)
    assert code == 1
    # (stderr may also hold the model loader's progress bar; the error is its one last line)
    assert err.endswith("\n") and "Traceback" not in err
    assert err.splitlines()[-1].startswith("mathtune: error: ") and err.count("mathtune: error") == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_folder_of_another_config_is_refused_unless_overwrite(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(trained_run, run_dir)
    model_dir, data_dir = _model_and_data(trained_run)
    other = tiny_train_config(model_dir, data_dir, "lora.r=4")
    before = files_under(run_dir)
    with pytest.raises(MathtuneError, match=r"holds a run of a different config \(differs in lora\.r\)"):
        run_train(other, run_dir)
    assert files_under(run_dir) == before
    assert train_mod.inspect_run_dir(run_dir, other, overwrite=True) == "fresh"
    # eval.* and report.* do not decide what is trained: the finished training is reused
    same_training = with_prompt_date(tiny_train_config(model_dir, data_dir, "eval.limit=3"), run_dir)  # run_train's door
    assert train_mod.inspect_run_dir(run_dir, same_training, overwrite=False) == "done"
    # Many differences: five named, the rest counted.
    many = tiny_train_config(model_dir, data_dir, "lora.r=4", "lora.alpha=8", "lora.dropout=0.2", "train.epochs=2",
                             "train.learning_rate=1e-3", "train.warmup_ratio=0.1", "seed=7")
    with pytest.raises(MathtuneError, match=r"\(differs in [a-z_., ]+ and 2 more\)"):
        train_mod.inspect_run_dir(run_dir, with_prompt_date(many, run_dir), overwrite=False)
