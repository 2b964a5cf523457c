"""A base model's evaluation, kept once under the cache for every run that asks the same one.

    reused = reuse_base_evaluation(request, paths)   # the cached records copied in, or None
    keep_base_evaluation(request, paths)             # after a run's base evaluation finished

Runs of a sweep (or any two runs) that differ only in training settings evaluate the same base
model on the same problems under the same prompt and decoding: the same records, byte for byte.
The key is what decides those records (base_evaluation_key): the model's content (the sha256
of every file of its folder, or of its .gguf), the problems' text and gold answers (after the
limit), the prompt and its settings, the decoding settings, the split and limit, mathtune's
version, and the device and torch and transformers versions that compute the tokens. A reused evaluation's summary says where it came from (`reused_from`), and so does the
report. The evaluations are kept in $MATHTUNE_BASE_EVALS, else base-evaluations/ in the mathtune
cache; MATHTUNE_BASE_EVALS=off neither reuses nor keeps any.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from mathtune import __version__
from mathtune.core.cache import cache_root, read_cache_file
from mathtune.core.provenance import library_version
from mathtune.core.runfiles import write_json_atomic
from mathtune.evaluation.records import EvalPaths
from mathtune.evaluation.resolve import resolve_request
from mathtune.evaluation.request import EvalRequest, load_problems, protocol_text
from mathtune.evaluation.summary import EvalSummary, ReusedFrom, read_eval_summary, write_eval_summary
from mathtune.task.data import file_sha256

FOLDER = "base-evaluations"
HASHES_FILE = "content-hashes.json"
ENV = "MATHTUNE_BASE_EVALS"


def cache_folder() -> Path | None:
    """Where base evaluations are kept; None when MATHTUNE_BASE_EVALS is 'off'."""
    explicit = os.environ.get(ENV)
    if explicit == "off":
        return None
    return Path(explicit) if explicit else cache_root() / FOLDER


def _file_sha256(path: Path, memo: dict) -> str:
    """A file's sha256, remembered by its resolved path, size and modification time (a model's
    weights are hashed once, not at every run)."""
    real = path.resolve()
    stat = real.stat()
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        memo[key] = file_sha256(real)
    return memo[key]


def _local_model_files(name_or_path: str) -> tuple[Path, list[Path]] | None:
    """The files that make a model: a .gguf file; every file of a local folder (weights, config,
    tokenizer and its chat template); a hub id's files in the local hub cache; None when the
    model is not on this machine."""
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(name_or_path, local_files_only=True))
        except Exception:  # not cached here, or not a hub id: no key, the evaluation simply runs
            return None
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                         p.relative_to(path).parts))
    return (path, files) if files else None


def model_content_sha256(name_or_path: str) -> str | None:
    """sha256 over the model's files (relative name and content hash), None when it is not here.
    Each file's hash is remembered in the cache folder (HASHES_FILE) by its path, size and time."""
    found = _local_model_files(name_or_path)
    if found is None:
        return None
    root, files = found
    memo_path = cache_folder() / HASHES_FILE
    memo = read_cache_file(memo_path)
    before = len(memo)
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.relative_to(root)}\x00{_file_sha256(f, memo)}\n".encode())
    if len(memo) != before:
        try:
            write_json_atomic(memo_path, memo)
        except OSError:
            pass  # a cache that cannot be written costs the next run a re-hash, never this one
    return digest.hexdigest()


def _machine() -> dict:
    """What else decides greedy tokens: the device (dtype auto is bf16 on a GPU, fp32 on a CPU)
    and the versions of the libraries that compute them, so a cache shared between machines
    (MATHTUNE_CACHE on a network folder) never hands one machine's records to another."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"device": device, "torch": library_version("torch"), "transformers": library_version("transformers")}


def base_evaluation_key(request: EvalRequest) -> dict | None:
    """What decides a base evaluation's records, with its hash under 'key'; None when the model
    is not on this machine (nothing to hash) or the request has an adapter."""
    if request.adapter is not None or cache_folder() is None:
        return None
    model = model_content_sha256(request.model)
    if model is None:
        return None
    problems, _ = load_problems(request)
    data = hashlib.sha256()
    for p in problems:
        data.update(f"{p.id}\x00{p.question}\x00{p.gold}\n".encode())
    ident = request.identity()
    decided = {k: ident.get(k) for k in ("split", "limit", "prompt", "samples", "temperature", "max_new_tokens",
                                         "dtype", "seed", "val_fraction", "trust_remote_code", "quantization",
                                         "prompt_date", "answer_form")}
    inputs = {"model_sha256": model, "data_sha256": data.hexdigest(), "problems": len(problems), **decided,
              "mathtune": __version__, **_machine()}
    return {**inputs, "key": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]}


def _folder(key: dict) -> Path:
    return cache_folder() / key["key"]


def reuse_base_evaluation(request: EvalRequest, paths: EvalPaths) -> EvalSummary | None:
    """The cached evaluation for this request copied to `paths`, its summary naming this request
    (the model and data as this run names them) and where it came from; None when there is none."""
    request = resolve_request(request, paths)  # as the evaluation it stands in for would be
    key = base_evaluation_key(request)
    if key is None:
        return None
    cached = EvalPaths.in_folder(_folder(key), "base")
    if not (cached.records.is_file() and cached.summary.is_file()):
        return None
    summary = read_eval_summary(cached.summary)
    made_in = summary.made_in
    summary = replace(summary, made_in=None, **request.summary_identity())
    identity = request.data_identity  # the data as this run names it
    summary = replace(summary, data_identity=identity, data_name=identity["name"],
                      protocol=protocol_text(request, summary.n, identity["name"]))
    summary.reused_from = ReusedFrom(cache=str(_folder(key)), key=key["key"], made_in=made_in, made=summary.made,
                                     what_decides_it={k: v for k, v in key.items() if k != "key"})
    paths.records.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached.records, paths.records.with_suffix(".tmp"))
    os.replace(paths.records.with_suffix(".tmp"), paths.records)
    write_eval_summary(paths.summary, summary)
    return summary


def keep_base_evaluation(request: EvalRequest, paths: EvalPaths, run_dir: Path) -> Path | None:
    """A finished base evaluation copied into the cache (once: a key already kept stays as it
    is); returns the cache folder, or None when it was not kept."""
    if not (paths.records.is_file() and paths.summary.is_file()):
        return None
    request = resolve_request(request, paths)
    summary = read_eval_summary(paths.summary)
    if summary.reused_from:
        return None  # it came from the cache
    key = base_evaluation_key(request)
    if key is None:
        return None
    folder = _folder(key)
    if (folder / "base.summary.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key['key']}."))
    try:
        shutil.copyfile(paths.records, staging / "base.jsonl")
        made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        write_eval_summary(staging / "base.summary.json", replace(summary, made_in=str(Path(run_dir).resolve()),
                                                                  made=made))
        write_json_atomic(staging / "key.json", key)
        os.replace(staging, folder)  # whole or not at all; a folder another run kept first stays
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "base.summary.json").is_file():
            raise
    return folder
