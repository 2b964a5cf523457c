"""Reading and writing the run folder's files.

Every write goes to a temporary file beside the target and is renamed over it, so a crash
never leaves half a file behind and a reader never sees one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mathtune.errors import MathtuneError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; the renamed file gets the mode open() would give it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sweep_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files that a write killed before its rename left in folder (and
    its subfolders eval/, train/, figures/); returns what was removed. Call it where one
    process owns the folder (a run's start, a report's rebuild)."""
    removed = []
    for sub in (folder, folder / "eval", folder / "train", folder / "figures"):
        if sub.is_dir():
            for stale in sub.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_atomic(path, jsonl_text(rows))


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(\"file:line\", object) for every non-blank line; a malformed line is a one-line
    error naming the file and the line."""
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as err:
                    raise MathtuneError(f"{where}: malformed JSON ({err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MathtuneError(f"cannot read {path}: {err}") from None


def read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)]


def read_jsonl_until_torn(path: Path) -> list[dict]:
    """The lines of a file that a killed process was appending to: everything before the
    first line cut off mid-write (which, and whatever follows it, is redone)."""
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def repair_jsonl(path: Path) -> None:
    """Cut a file that a killed process was appending to back to its intact lines, so that
    appending may go on: a torn last line is dropped, never joined to the next record."""
    if not path.is_file():
        return
    intact = jsonl_text(read_jsonl_until_torn(path))
    if intact != path.read_text(encoding="utf-8"):
        write_atomic(path, intact)
