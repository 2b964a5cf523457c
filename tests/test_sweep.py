"""`mathtune sweep`: a grid of tiny runs into sibling folders, the base evaluation made once and
reused, resumable, ending with the comparison in Markdown and HTML."""

from __future__ import annotations

import json

import pytest

from mathtune.cli import main
from mathtune.sweep import parse_grid, split_values
from mathtune.core.errors import MathtuneError


def test_grid_values_split_outside_brackets():
    assert split_values("8,32") == ["8", "32"]
    assert split_values("[q_proj,v_proj], all-linear") == ["[q_proj,v_proj]", "all-linear"]
    assert parse_grid(["lora.r=8,32", "train.learning_rate=1e-4"]) == [("lora.r", ["8", "32"]),
                                                                       ("train.learning_rate", ["1e-4"])]
    for bad, words in (("lora.r", "key=value1,value2"), ("lora.r=8,", "an empty value"), ("lora.r=8,8", "twice")):
        with pytest.raises(MathtuneError, match=words):
            parse_grid([bad])


@pytest.mark.slow  # two tiny runs end to end: about 45 s on 2 CPU cores
def test_a_sweep_shares_the_base_evaluation_and_ends_with_the_comparison(tiny_model_dir, small_data_dir, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("MATHTUNE_BASE_EVALS", str(tmp_path / "base-evals"))
    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 3\nname: tiny\n")
    out = tmp_path / "sweep"
    argv = ["sweep", str(config), "--grid", "lora.r=2,4", "--out", str(out)]
    for o in (f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=16",
              "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=2", "train.report_to=[]",
              "eval.limit=6", "eval.max_new_tokens=12", "eval.batch_size=3"):
        argv += ["--set", o]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    first, second = out / "lora.r=2", out / "lora.r=4"
    assert (first / "report.md").is_file() and (second / "report.md").is_file()
    made = json.loads((first / "eval" / "base.summary.json").read_text())
    reused = json.loads((second / "eval" / "base.summary.json").read_text())
    assert "reused_from" not in made and reused["reused_from"]["made_in"] == str(first.resolve())
    assert (first / "eval" / "base.jsonl").read_bytes() == (second / "eval" / "base.jsonl").read_bytes()
    assert "eval/base: reused from the cache" in printed
    assert "The base evaluation was reused, not decoded again" in (second / "report.md").read_text()
    assert "reused" not in (first / "report.md").read_text()
    comparison = (out / "comparison.md").read_text()
    loss_row = next(line for line in comparison.splitlines() if line.startswith("| best validation loss |"))
    losses = [float(x) for x in loss_row.strip("| ").split(" | ")[1:]]
    assert [round(x, 4) for x in losses] == [round(json.loads((d / "train" / "summary.json").read_text())
                                                    ["best_eval_loss"], 4) for d in (first, second)]
    assert "| trainable parameters |" in comparison and "| training tokens/s |" in comparison
    assert "- lora.r=4 against lora.r=2, tuned, strict:" in comparison
    assert "<table>" in (out / "comparison.html").read_text()
    # Started again: every run is finished, nothing trains or decodes again.
    stamp = (second / "train" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (second / "train" / "summary.json").stat().st_mtime_ns == stamp
    # Another grid into the same folder is refused, with nothing written.
    assert main([*argv[:3], "lora.r=8", *argv[4:]]) == 1
    assert "holds a sweep of another grid" in capsys.readouterr().err
