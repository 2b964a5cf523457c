"""Whether a name that is not a local path can come from the Hugging Face hub, asked once and
quickly, so that a mistyped local path or a machine without a network gets one clear line
instead of a minute of the hub client's retries.

    why = hub_unavailable("model", "Qwen/Qwen2-1.5B", cached_file="config.json")
    if why: raise MathtuneError(why)

With HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE) set the hub is never asked:
a name missing from the cache is then reported the same way, as a missing local path.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_unreachable: str | None = None  # why the hub cannot be reached ("" when it can); asked once


def _set(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def unreachable_reason(timeout_s: float = 3.0) -> str | None:
    """None when a TCP connection to the hub's host opens within timeout_s, else why not
    (asked once per process). Behind a proxy the direct connection says nothing, so it counts
    as reachable and the hub client decides."""
    global _unreachable
    if _unreachable is None:
        _unreachable = ""
        if not any(os.environ.get(v) for v in _PROXY_VARIABLES):
            host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
            try:
                socket.create_connection((host, 443), timeout=timeout_s).close()
            except OSError as err:
                _unreachable = f"{host} unreachable: {err}"
    return _unreachable or None


def hub_reachable() -> bool:
    return unreachable_reason() is None


def _in_cache(repo_id: str, filename: str, repo_type: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)
    except Exception:  # not a valid repo id, or no cache: not there
        return False


def offline_variable() -> str | None:
    """The offline switch the user set (HF_HUB_OFFLINE=1, ...), or None."""
    return next((v for v in _OFFLINE_VARIABLES if _set(v)), None)


# How to point mathtune at a local copy instead, said with every "not found" of a hub name.
LOCAL_COPY = {
    "data": "for a local copy, give a folder with train.jsonl and test.jsonl: --set data.source=DIR (eval: "
            "--data DIR), or MATHTUNE_DATA=DIR in place of the default source",
    "model": "for a local copy, give its folder or .gguf file: --set model.name_or_path=PATH (eval: --model PATH)",
}


def not_in_offline_cache(kind: str, name: str) -> str:
    """The error line for a name that is no local path while offline mode keeps the hub out and
    the cache has no copy: most often a mistyped local path, so it reads as one."""
    folder, thing = ("model path", "model") if kind == "model" else ("data folder", "dataset")
    return (f"{folder} not found: {name} (no such local path; {offline_variable() or 'offline mode'} is set, so "
            f"the Hugging Face hub is not asked, and its cache holds no {thing} of this name; {LOCAL_COPY[kind]})")


def hub_unavailable(kind: str, name: str, *, cached_file: str | None = None, repo_type: str = "model") -> str | None:
    """None when `name` may be fetched from the hub (or, in offline mode, may be in the
    library's own cache); else the error line to show. kind: 'model' or 'data'."""
    if cached_file and _in_cache(name, cached_file, repo_type):
        return None
    if offline_variable():  # the hub is not asked; a known cache file that is absent settles it
        return not_in_offline_cache(kind, name) if cached_file else None
    if hub_reachable():
        return None
    folder = "model path" if kind == "model" else "data folder"
    offline = "HF_HUB_OFFLINE=1" if kind == "model" else "HF_DATASETS_OFFLINE=1"
    return (f"{folder} not found: {name} (no such local path, and the Hugging Face hub, where a name like "
            f"this would come from, cannot be reached from this machine; for a copy in the hub cache set {offline}; "
            f"{LOCAL_COPY[kind]})")
