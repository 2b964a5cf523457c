"""Which of a run's checkpoints can be resumed from.

    newest, torn = complete_checkpoints(run_dir / "train" / "checkpoints")

The Trainer writes a checkpoint's files in place, one after another (adapter, optimizer,
scheduler, RNG state, trainer_state.json last), and its rotation and best-checkpoint
bookkeeping address the final folder names, so the folder cannot be written under a
temporary name and renamed as the adapter is. Instead a checkpoint counts only when every
file in it is whole: a kill, a power cut or a full disk while it was written leaves a file
missing or cut short, and such a checkpoint is passed over (named, with what is wrong) for
the newest complete one before it.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from pathlib import Path

from mathtune.core.runfiles import write_json_atomic

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

# Present in every checkpoint the Trainer writes for a LoRA run (save_only_model is off).
REQUIRED = ("trainer_state.json", "adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt")


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


def _safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensors, whose
    byte ranges the header gives: a file shorter than they say was cut off."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "cut short (no header)"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            return "cut short (within its header)"
        try:
            header = json.loads(fh.read(length))
        except ValueError:
            return "damaged header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return f"cut short ({size:,} of {8 + length + end:,} bytes)" if size < 8 + length + end else None


def file_problem(path: Path) -> str | None:
    """What is wrong with one checkpoint file (None: whole). torch.save writes a zip archive,
    whose directory sits at its end: a file cut short has none."""
    if path.stat().st_size == 0:
        return "empty (0 bytes)"
    if path.suffix == ".json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            return f"cut short or damaged ({type(err).__name__.removesuffix('Error')}: {str(err)[:60]})"
    elif path.suffix == ".safetensors":
        return _safetensors_problem(path)
    elif path.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(path):
        return "cut short or damaged (not a whole torch archive)"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from ('optimizer.pt is empty (0 bytes)'), or None."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    for path in sorted(folder.iterdir()):
        if path.is_file():
            try:
                problem = file_problem(path)
            except OSError as err:
                problem = f"unreadable ({err.strerror or err})"
            if problem:
                return f"{path.name} is {problem}"
    return None


def complete_checkpoints(folder: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete checkpoint in folder (None: there is none), and the newer ones
    passed over, each with what is wrong with it."""
    if not folder.is_dir():
        return None, []
    found = sorted((p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)),
                   key=checkpoint_step, reverse=True)
    passed = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, passed
        passed.append((path, problem))
    return None, passed


def last_complete_checkpoint(folder: Path) -> Path | None:
    return complete_checkpoints(folder)[0]


def repoint_best(checkpoint: Path) -> None:
    """The Trainer records its best checkpoint by absolute path; in a run folder copied or
    moved since, that path is another folder's (or none). Point it at the same step here, so
    the adapter kept at the end is this folder's best."""
    state_path = checkpoint / "trainer_state.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    best_step = state.get("best_global_step")
    if best_step is None:
        return
    here = checkpoint.parent / f"checkpoint-{best_step}"
    if state.get("best_model_checkpoint") != str(here):
        state["best_model_checkpoint"] = str(here) if here.is_dir() else None
        write_json_atomic(state_path, state)
