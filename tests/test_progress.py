"""The training display: the loss it shows is named with the step it was logged at."""

from transformers import TrainerState, TrainingArguments

from mathtune.core import terminal
from mathtune.train import progress
from mathtune.train.progress import TrainProgress


def test_plain_lines_name_the_step_of_the_loss_they_show(tmp_path, capsys, monkeypatch):
    # The trainer ends step N (the display moves on) before it logs step N's loss, so the line
    # printed at step N shows step N-1's loss; it must say so, not pass it off as step N's.
    monkeypatch.setattr(terminal, "QUIET", False)
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    args, state = TrainingArguments(output_dir=str(tmp_path), report_to=[]), TrainerState(max_steps=3)
    display = TrainProgress(tmp_path / "run.log", "train (sft)")
    display.on_train_begin(args, state, None)
    for step, loss in ((1, 0.9), (2, 0.8)):
        state.global_step = step
        display.on_step_end(args, state, None)
        display.on_log(args, state, None, logs={"loss": loss})
    state.global_step = 3
    display.on_log(args, state, None, logs={"loss": 0.7, "eval_loss": 0.75})
    display.on_step_end(args, state, None)
    lines = [line for line in capsys.readouterr().out.splitlines() if "step " in line]
    assert lines[0].startswith("train (sft): step 1/3") and "loss" not in lines[0]
    assert lines[1].startswith("train (sft): step 2/3") and lines[1].endswith("loss 0.9000 (step 1)")
    assert lines[2].startswith("train (sft): step 3/3") and lines[2].endswith("loss 0.7000, val 0.7500")
    assert len((tmp_path / "run.log").read_text().splitlines()) == 3  # every log line kept


def test_eval_progress_off_a_terminal_is_plain_lines_without_carriage_returns(tiny_model_dir, small_data_dir,
                                                                               tmp_path, capfd, monkeypatch,
                                                                               one_thread):
    """`make demo > log`: `eval base` and `eval tuned` print a line when they start and one
    every PLAIN_EVERY_S seconds, as training does, never tqdm bars joined by carriage returns."""
    from mathtune.cli import main

    monkeypatch.setattr(terminal, "PLAIN_EVERY_S", 0.0)
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "3",
                 "--max-new-tokens", "4", "--batch-size", "1", "--name", "base", "--out", str(tmp_path)]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err
    lines = out.splitlines()
    assert "eval base: 3 problems" in lines
    assert any(line.startswith("eval base: 3/3 problems, ") and "left, strict " in line for line in lines)
