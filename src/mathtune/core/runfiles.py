"""Reading and writing the run folder's files.

Every write goes to a temporary file beside the target and is renamed over it, so a crash
never leaves half a file behind and a reader never sees one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mathtune.core.errors import MathtuneError


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
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # a failed write() names no file: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
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


# ---------------------------------------------------------------------------------------
# A full disk


def free_bytes(path: Path) -> int | None:
    """Free space (for this user) on the disk that holds path, or would hold it; None where
    it cannot be asked."""
    existing = Path(os.path.abspath(os.path.expanduser(path)))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        return shutil.disk_usage(existing).free
    except OSError:
        return None


def size_text(n: float | None) -> str:
    """'148 KB', '3.2 MB', '1.5 GB' (powers of 1000, as df -H and file managers show them)."""
    if n is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < 10 * scale else f"{n / scale:,.0f} {unit}"
    return f"{int(n)} bytes"


# A write short of space, in the words of the libraries that write a run's files: Python's
# OSError; safetensors' "I/O error: No space left on device"; torch's zip writer, which loses
# the errno and says only where its position went wrong (then the disk's own free space decides).
_NO_SPACE_WORDS = ("No space left on device", "Disk quota exceeded", "os error 28")
_TORCH_WRITER_WORDS = ("PytorchStreamWriter", "inline_container.cc", "unexpected pos")
NEARLY_FULL = 1 << 20


def is_disk_full(err: BaseException, folder: Path | None = None) -> bool:
    """Whether an exception (or one it was raised from) is a write that ran out of space."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err)
        if any(words in text for words in _NO_SPACE_WORDS):
            return True
        if folder is not None and any(words in text for words in _TORCH_WRITER_WORDS):
            free = free_bytes(folder)
            if free is not None and free < NEARLY_FULL:
                return True
        err = err.__cause__ or err.__context__
    return False


def _file_being_written(err: BaseException, folder: Path | None) -> Path | None:
    """The file a write short of space was writing: the one the error names, else the newest
    file in the output folder (the libraries that lose the name leave their file behind, cut
    short)."""
    while err is not None:
        if isinstance(err, OSError) and err.filename:
            return Path(err.filename)
        err = err.__cause__ or err.__context__
    if folder is None or not Path(folder).is_dir():
        return None
    files = (p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())
    return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)


def disk_full_message(err: BaseException, folder: Path | None = None) -> str:
    """One line: the file being written, the space that was free, and how to go on."""
    written = _file_being_written(err, folder)
    where = f" writing {written}" if written else ""
    free = free_bytes(written or folder or Path.cwd())
    return (f"No space left on device{where} ({size_text(free)} free there); make room, or copy the folder to "
            "a disk with room, and run the same command again (with --out at the copy): it resumes where it "
            "stopped")


@contextlib.contextmanager
def disk_full_is_one_line(folder: Path):
    """A write into folder short of space, whichever library made it, becomes one MathtuneError
    line (disk_full_message) rather than its own traceback."""
    try:
        yield
    except MathtuneError:
        raise
    except Exception as err:
        if not is_disk_full(err, folder):
            raise
        raise MathtuneError(disk_full_message(err, folder)) from None


def check_output_folder(path: Path, option: str = "--out") -> None:
    """A folder mathtune will write into is usable: not a file, not under a file, and writable
    where it exists or where it would be made. Checked before anything is read or printed, so a
    mistyped output folder is one line at once, not after minutes of work."""
    path = Path(os.path.expanduser(path))
    if path.exists() and not path.is_dir():
        raise MathtuneError(f"{option} {path}: is a file, not a folder")
    existing = path
    while not existing.exists():  # the nearest folder that exists: the one that must take the write
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise MathtuneError(f"{option} {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "folder is not writable" if existing == path else f"{existing} is not writable, so it cannot be made"
        raise MathtuneError(f"{option} {path}: {what}")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file mathtune wrote (a summary, a plan, analysis.json); one that cannot be read or
    is not JSON is a one-line error naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise MathtuneError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise MathtuneError(f"{path}: not UTF-8 (byte {err.object[err.start]:#04x} at offset {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MathtuneError(f"{path}: malformed JSON ({err.msg}, line {err.lineno})") from None


def jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    write_atomic(path, jsonl_text(rows))


def iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(\"file:line\", object) for every non-blank line; a malformed line, or one that is not
    UTF-8, is a one-line error naming the file and the line."""
    try:
        fh = path.open("rb")
    except OSError as err:
        raise MathtuneError(f"cannot read {path}: {err.strerror or err}") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise MathtuneError(f"{where}: not UTF-8 (byte {raw[err.start]:#04x} at column {err.start + 1})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                # The decoder's position, as a column of this line ("Invalid control character at" column 20).
                raise MathtuneError(f"{where}: malformed JSON ({err.msg.removesuffix(' at')} at column {err.colno})") from None


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


# What analysis and compare read from each eval record, and the types they rely on. A record
# that breaks these was edited by hand or written by another mathtune version; it is named
# with its file and line rather than met as a KeyError halfway through the analysis.
_RECORD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str,), "a string"),
    "answer": ((str,), "a string"),
    "completion": ((str,), "a string"),
    "pred_strict": ((str, type(None)), "a number string or null"),
    "pred_flexible": ((str, type(None)), "a number string or null"),
    "correct_strict": ((bool,), "true or false"),
    "correct_flexible": ((bool,), "true or false"),
}
_EDITED = "edited by hand, or written by another mathtune version? `mathtune eval --overwrite` remakes it"


def check_unique_id(seen: dict[str, str], key: str, where: str) -> None:
    """Record that id `key` sits at `where` ('file:line'); a second line with it is an error
    naming both lines."""
    if key in seen:
        raise MathtuneError(f"{where}: duplicate id '{key}' (first at line {seen[key]})")
    seen[key] = where.rsplit(":", 1)[1]


def read_eval_records(path: Path) -> list[dict]:
    """The records of eval/NAME.jsonl, each checked for the fields the analysis reads and for
    a unique id; anything else is a one-line error naming the file and the line."""
    rows, seen = [], {}
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise MathtuneError(f"{where}: expected a JSON object ({_EDITED})")
        for key, (types, words) in _RECORD_FIELDS.items():
            if key not in row:
                raise MathtuneError(f"{where}: no '{key}' ({_EDITED})")
            if not isinstance(row[key], types):
                raise MathtuneError(f"{where}: '{key}' must be {words}, got {json.dumps(row[key])[:40]} ({_EDITED})")
        check_unique_id(seen, row["id"], where)
        rows.append(row)
    return rows


def read_metrics(path: Path) -> list[dict]:
    """train/metrics.jsonl, each line checked for a whole-number step."""
    rows = []
    for where, row in iter_jsonl(path):
        step = row.get("step") if isinstance(row, dict) else None
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise MathtuneError(f"{where}: 'step' must be a whole number, got {json.dumps(step)[:40]} "
                                "(edited by hand, or written by another mathtune version?)")
        rows.append(row)
    return rows
