"""What the terminal shows while mathtune works, and RUN_DIR/run.log, which keeps everything.

    with run_log(run_dir):            # library logs and warnings go to run.log, not the screen
        say("...")                    # printed unless --quiet, and kept in run.log

QUIET (set by `--quiet` and `--json`) is the one switch: it leaves only errors and what the
command prints at its end. Where stderr is not a terminal
(CI, a pipe), progress displays redraw at most every PLAIN_EVERY_S seconds. The training
display is mathtune.train.progress.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from pathlib import Path

QUIET = False
PLAIN_EVERY_S = 30.0


def say(message: str) -> None:
    """A progress message: printed unless --quiet, and kept in run.log while one is open."""
    logging.getLogger("mathtune").info(message)
    if not QUIET:
        print(message, flush=True)


def duration(seconds: float) -> str:
    """A span of time as people read it: '45 s', '3.2 min', '2.5 h'; a span too short to round
    to a second is 'under 1 s', never '0 s'."""
    if 0 < seconds < 0.5:
        return "under 1 s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def round_seconds(seconds: float) -> float:
    """Seconds kept to 0.1 s, or to two significant digits below that, so a short span that
    is not zero is never stored as 0.0."""
    if seconds == 0 or abs(seconds) >= 0.1:
        return round(seconds, 1)
    return float(f"{seconds:.2g}")


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

    def handleError(self, record: logging.LogRecord) -> None:
        """A line run.log cannot take (a full disk) is lost, without logging's own traceback on
        stderr: the run's next write of its own files meets the same fault and says it in one line."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


# The loggers of the libraries mathtune drives. Each library that sets up its own terminal
# handler on import (transformers, datasets, huggingface_hub) is also told by its environment
# variable, in the CLI, to keep warnings to itself (see cli.main).
LIBRARY_LOGGERS = ("mathtune", "transformers", "trl", "peft", "accelerate", "datasets", "huggingface_hub",
                   "bitsandbytes", "torch", "py.warnings")


_capturing = 0  # _logs_to blocks open: warnings stay captured until the outermost one closes


@contextlib.contextmanager
def _logs_to(handler: logging.Handler, level: int):
    """Every log record of the libraries (and of anything else, through the root logger) and
    every Python warning goes to `handler` alone for the duration of the block."""
    root = logging.getLogger()
    libraries = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in libraries]
    saved_root = root.handlers[:]
    for lg in libraries:
        lg.handlers = [handler]
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > level:
            lg.setLevel(level)
    root.handlers = [handler]  # a library outside the list logs through the root: no stderr fallback
    global _capturing
    logging.captureWarnings(True)
    _capturing += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            yield handler
    finally:
        _capturing -= 1
        if not _capturing:  # an inner block (a run's run.log inside the command's) leaves the outer one's capture on
            logging.captureWarnings(False)
        root.handlers = saved_root
        for lg, handlers, propagate, lvl in saved:
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(lvl)


@contextlib.contextmanager
def quiet_libraries():
    """The libraries' log records and warnings kept off the terminal for the whole command;
    where there is a run folder, run_log() inside this block keeps them in its run.log."""
    with _logs_to(logging.NullHandler(), logging.WARNING):
        yield


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
    try:
        with _logs_to(handler, logging.INFO):
            yield handler
    finally:
        handler.close()


class PlainProgress:
    """Progress where the output is not a terminal (a log file, CI, a pipe): a line when the
    work starts and one every PLAIN_EVERY_S seconds, never a bar redrawn with carriage returns.
    It takes the calls the evaluation makes of a tqdm bar: update, set_postfix_str, close."""

    def __init__(self, label: str, *, total: int, done: int = 0, unit: str = "problem"):
        self.label, self.total, self.n, self.unit = label, total, done, unit
        self.first, self.postfix = done, ""
        self.started = self.last = time.monotonic()
        say(f"{label}: {total} {unit}{'' if total == 1 else 's'}" + (f", {done} already done" if done else ""))

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        self.postfix = text

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last < PLAIN_EVERY_S:
            return
        self.last = now
        rate = (self.n - self.first) / (now - self.started) if now > self.started else 0.0
        left = (self.total - self.n) / rate if rate else 0.0
        say(f"{self.label}: {self.n}/{self.total} {self.unit}s, {rate:.2f} {self.unit}s/s, {duration(left)} left"
            + (f", {self.postfix}" if self.postfix else ""))

    def close(self) -> None:
        pass
