"""What the terminal shows while mathtune works, and RUN_DIR/run.log, which keeps everything.

    with run_log(run_dir):            # library logs and warnings go to run.log, not the screen
        trainer.add_callback(TrainProgress(run_dir / "run.log"))

The trainer's own progress callback prints each step's logs as a raw Python dict between
progress bars; TrainProgress replaces it with one display per stage (steps per second, the
latest loss, the time left), writes every log line to run.log, and ends with a short summary.
Where stderr is not a terminal (CI, a pipe) it prints a plain line every PLAIN_EVERY_S seconds
instead of redrawing a bar. QUIET (set by `--quiet`) leaves only errors and final paths.
Written by hand: transformers offers the dict printer or its tqdm bars, and neither a
non-terminal mode nor a file that holds what the screen leaves out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from transformers import TrainerCallback

QUIET = False
PLAIN_EVERY_S = 30.0


def say(message: str) -> None:
    """A progress message: printed unless --quiet, and kept in run.log while one is open."""
    logging.getLogger("mathtune").info(message)
    if not QUIET:
        print(message, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class _HeldFileHandler(logging.FileHandler):
    """Holds records in memory until `start()` (called once the run folder is known to be
    good), then writes them and every later one to the file. A run that fails its checks
    before that leaves nothing on disk."""

    def __init__(self, path: Path, start: bool):
        super().__init__(path, encoding="utf-8", delay=True)
        self.held: list[logging.LogRecord] | None = None if start else []

    def start(self) -> None:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
        else:
            super().emit(record)


@contextlib.contextmanager
def run_log(run_dir: Path, *, start: bool = True):
    """Send library log records and Python warnings to RUN_DIR/run.log (appended) instead of
    the terminal, for the duration of the block. With start=False the records are held until
    the handler's start() (yielded), and dropped if it is never called."""
    path = Path(run_dir) / "run.log"
    handler = _HeldFileHandler(path, start)
    if start:
        handler.start()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    libraries = [logging.getLogger(name) for name in ("mathtune", "transformers", "trl", "peft", "accelerate",
                                                      "datasets", "torch", "py.warnings")]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in libraries]
    for lg in libraries:
        lg.handlers = [handler]
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > logging.INFO:
            lg.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield handler
    finally:
        logging.captureWarnings(False)
        for lg, handlers, propagate, level in saved:
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
        handler.close()


class TrainProgress(TrainerCallback):
    """One progress display for training, every log line in run.log, a summary at the end."""

    def __init__(self, log_path: Path, label: str = "train"):
        self.log_path = Path(log_path)
        self.label = label
        self.bar = None
        self.loss = self.eval_loss = None
        self.started = self.last_plain = 0.0
        self.first_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last_plain = time.monotonic()
        self.first_step = state.global_step  # a resumed run starts past 0
        if QUIET or not state.is_world_process_zero:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc=self.label,
                            dynamic_ncols=True)
        else:
            say(f"{self.label}: {state.max_steps} steps" + (f", resuming at {state.global_step}" if state.global_step else ""))

    def _postfix(self) -> str:
        parts = []
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.eval_loss is not None:
            parts.append(f"val {self.eval_loss:.4f}")
        return ", ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)
            self.bar.set_postfix_str(self._postfix(), refresh=False)
        elif not QUIET and state.is_world_process_zero and time.monotonic() - self.last_plain >= PLAIN_EVERY_S:
            self.last_plain = time.monotonic()
            done = state.global_step - self.first_step
            rate = done / (self.last_plain - self.started) if done else 0.0
            left = (state.max_steps - state.global_step) / rate if rate else 0.0
            say(f"{self.label}: step {state.global_step}/{state.max_steps}, {rate:.2f} steps/s, "
                f"{_duration(left)} left" + (f", {self._postfix()}" if self._postfix() else ""))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "eval_loss" in logs:
            self.eval_loss = float(logs["eval_loss"])
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
