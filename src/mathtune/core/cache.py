"""Where mathtune keeps what it fetched or computed once, for every later command.

    cache_root()                  # $MATHTUNE_CACHE, default ~/.cache/mathtune
    dequantized_folder(gguf)      # the transformers folder a .gguf is dequantized into, once
"""

from __future__ import annotations

import hashlib
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
