"""A training run that diverges is stopped at that step and said, never passed on as a result.

    callback = DivergenceCallback()                  # in the trainer's callbacks
    trainer.train()
    raise_if_diverged(callback, config, run_dir)      # exit 1, one line

The Trainer logs a NaN loss or gradient norm and steps on: the optimizer writes NaN into every
LoRA weight, validation logs NaN, and the saved adapter is NaN throughout while the run looks
finished. The callback reads each log as the Trainer writes it and, at the first non-finite
loss, gradient norm or validation loss, stops training there, with no evaluation and no
checkpoint after it: the checkpoints on disk are those of finite steps, and a resume starts
from the last of them. The run's adapter is never written from a diverged model
(train.run checks its weights before saving as well).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from mathtune.config import Config
from mathtune.core.divergence import WATCHED, first_non_finite
from mathtune.core.errors import MathtuneError


class Diverged(MathtuneError):
    """Training produced a non-finite loss, gradient norm or validation loss."""


class DivergenceCallback(TrainerCallback):
    """Stops training at the first logged non-finite figure (see the module docstring)."""

    def __init__(self):
        self.watched = WATCHED
        self.logged: dict | None = None  # {"step", "metric", "value"} of the first non-finite logged figure
        self.weights: dict | None = None  # the same, for non-finite weights found before a checkpoint

    @property
    def found(self) -> dict | None:
        """Where training diverged, by the logged figure where one was logged, else by the weights."""
        return self.logged or self.weights

    def on_train_begin(self, args, state, control, **kwargs):
        # Under fp16 mixed precision the gradient scaler meets an overflowing (inf) gradient
        # norm on purpose while it calibrates the loss scale, and skips that step's update:
        # there only the losses say the model diverged.
        self.watched = tuple(k for k in WATCHED if not (args.fp16 and k == "grad_norm"))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        """Before a checkpoint is written (the Trainer logs, validates, then saves after this):
        its weights are checked, since with train.logging_steps > 1 a non-finite step may not
        be logged before the save."""
        if self.found is not None or not control.should_save or model is None:
            return
        bad = sum(int((~torch.isfinite(p)).sum()) for p in model.parameters() if p.requires_grad)
        if bad:
            self.weights = {"step": state.global_step, "metric": "the adapter",
                            "value": f"non-finite in {bad:,} weights"}
            _stop_here(control)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.logged is not None or not logs:
            return
        self.logged = first_non_finite([{**logs, "step": state.global_step}], self.watched)
        if self.logged is not None:
            _stop_here(control)


def _stop_here(control) -> None:
    """No validation of the broken weights, no checkpoint of them, no further step."""
    control.should_training_stop = True
    control.should_evaluate = False
    control.should_save = False


def divergence_message(found: dict, config: Config, checkpoint: Path | None) -> str:
    """One line: where it diverged, what usually causes it, what to try, and what resumes."""
    t, m = config.train, config.model
    tries = [f"a lower train.learning_rate (now {t.learning_rate:g}, e.g. {t.learning_rate / 4:g})"]
    if m.dtype == "float16":
        tries.append("model.dtype bfloat16 or float32 (float16 overflows)")
    tries.append("train.warmup_ratio 0.1 (now " + f"{t.warmup_ratio:g})")
    kept = (f"the last finite checkpoint, {checkpoint.name}, is kept, and running again resumes from it"
            if checkpoint is not None else "no checkpoint was saved before it, so running again starts afresh")
    if found["step"] == 0:  # the validation before any step: the base model itself gives it
        return (f"the model's {found['metric']} is {found['value']} before any training step, so training stopped and "
                "no adapter was written: the base model gives non-finite values on this data; try model.dtype "
                "float32 (float16 overflows), and check the model's weights and the data")
    return (f"training diverged at step {found['step']}: {found['metric']} is {found['value']}; no adapter was "
            f"written. Likely causes: a learning rate too high, float16 overflow, or a bad data line (an empty or "
            f"huge answer). Try {'; '.join(tries)}, with --overwrite or another --out; {kept}")
