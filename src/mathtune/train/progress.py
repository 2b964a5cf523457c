"""Training's progress display: it replaces the trainer's own.

    replace_progress(trainer, run_dir / "run.log", "train (sft)")

The trainer's own progress callback prints each step's logs as a raw Python dict between
progress bars; TrainProgress shows one display instead (steps per second, the latest loss,
the time left), writes every log line to run.log, and reports the last losses at the end.
Where stderr is not a terminal (CI, a pipe) it prints a plain line every PLAIN_EVERY_S seconds
instead of redrawing a bar. Written by hand: transformers offers the dict printer or its tqdm
bars, and neither a non-terminal mode nor a file that holds what the screen leaves out.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from mathtune.core import terminal
from mathtune.core.terminal import PLAIN_EVERY_S, duration, say


class TrainProgress(TrainerCallback):
    """One progress display for training, every log line in run.log, a summary at the end."""

    def __init__(self, log_path: Path, label: str = "train"):
        self.log_path = Path(log_path)
        self.label = label
        self.bar = None
        self.loss = self.eval_loss = None
        self.loss_step = self.eval_step = 0  # the steps those were logged at
        self.started = self.last_plain = 0.0
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_plain = time.monotonic()
        self.first_step = state.global_step  # a resumed run starts past 0
        if terminal.QUIET or not state.is_world_process_zero:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc=self.label,
                            dynamic_ncols=True)
        else:
            say(f"{self.label}: {state.max_steps} step{'' if state.max_steps == 1 else 's'}" + (f", resuming at {state.global_step}" if state.global_step else ""))

    def _postfix(self, step: int) -> str:
        """The latest losses, each with its step where that is not `step`: the trainer ends a
        step (and the display moves on) before it logs that step's loss."""
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}" + (f" (step {self.loss_step})" if self.loss_step != step else ""))
        if self.eval_loss is not None:
            parts.append(f"val {self.eval_loss:.4f}" + (f" (step {self.eval_step})" if self.eval_step != step else ""))
        return ", ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            self.bar.set_postfix_str(self._postfix(state.global_step), refresh=False)
        elif not terminal.QUIET and state.is_world_process_zero and time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            done = state.global_step - self.first_step
            rate = done / (self.last_plain - self.started) if done else 0.0
            left = (state.max_steps - state.global_step) / rate if rate else 0.0
            say(f"{self.label}: step {state.global_step}/{state.max_steps}, {rate:.2f} steps/s, "
                f"{duration(left)} left" + (f", {postfix}" if (postfix := self._postfix(state.global_step)) else ""))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss, self.loss_step = float(logs["loss"]), state.global_step
        if "eval_loss" in logs:
            self.eval_loss, self.eval_step = float(logs["eval_loss"]), state.global_step
        if self.bar is not None and ("loss" in logs or "eval_loss" in logs):
            self.bar.set_postfix_str(self._postfix(state.global_step), refresh=False)
        if state.is_world_process_zero:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if state.is_world_process_zero and self.loss is not None:
            say(f"{self.label}: last logged loss {self.loss:.4f}"
                + (f", validation loss {self.eval_loss:.4f}" if self.eval_loss is not None else "")
                + f"; every step's log is in {self.log_path}")


def replace_progress(trainer, log_path: Path, label: str = "train") -> None:
    """Swap the trainer's dict-printing progress for TrainProgress."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(cls)
    trainer.add_callback(TrainProgress(log_path, label))
