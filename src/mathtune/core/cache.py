"""Where mathtune keeps what it fetched or computed once, for every later command.

    cache_root()                  # $MATHTUNE_CACHE, default ~/.cache/mathtune
    dequantized_folder(gguf)      # the transformers folder a .gguf is dequantized into, once
    read_cache_file(path)         # a cache file's JSON object, {} when absent or damaged
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("MATHTUNE_CACHE", Path.home() / ".cache" / "mathtune"))


def dequantized_folder(gguf: Path) -> Path:
    """The folder for this file: keyed by its resolved path, size and modification time, so a
    replaced file gets a folder of its own."""
    gguf = Path(os.path.expanduser(str(gguf)))
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    return cache_root() / "dequantized" / f"{gguf.stem}-{key}"


def read_cache_file(path: Path) -> dict:
    """A JSON object kept in the cache (measured rates, first-use verdicts): {} when there is
    none yet or it cannot be read; a damaged cache costs what it remembered, never a command."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: malformed JSON or bytes that are not UTF-8
        return {}
    return found if isinstance(found, dict) else {}
