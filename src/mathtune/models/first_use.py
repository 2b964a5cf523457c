"""A fast path is checked on this device before its first use, the verdict remembered, and the
library's own path run instead when the check fails.

    record = checked_path("attention", "mathtune_segments", device, dtype, explicit=False)
    record["path"]   # what runs: the path asked for, or its fallback (selfcheck.FALLBACK)

The verdict of each check is kept in verdicts_file() ($MATHTUNE_VERDICTS, else
$MATHTUNE_CACHE/verdicts.json, by default ~/.cache/mathtune/verdicts.json), keyed by the device's name and capability, the versions of
torch, CUDA, transformers, peft, trl, bitsandbytes and mathtune, and the check's model: a new
GPU, driver stack or release is checked again, the same one only once. A check that fails or
crashes sends `auto` to the fallback, with one terminal line naming the path, the check and
the difference found; a path asked for by name is refused instead (MathtuneError), not
replaced. The record says which path ran and why; the run's summaries keep it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from mathtune.core.cache import cache_root, read_cache_file
from mathtune.core.errors import MathtuneError
from mathtune.core.finished import finished_stage
from mathtune.core.runfiles import write_json_atomic
from mathtune.core.terminal import say
from mathtune.models import engine
from mathtune.models.decoders import DECODER_TABLE
from mathtune.models.selfcheck import DECODER_CHECK_DTYPE, FALLBACK, check_model, environment, run_check
from mathtune.models.static_cache import SETTING as STATIC_CACHE_SETTING
from mathtune.models.static_cache import asked_static_cache

VERDICTS_ENV = "MATHTUNE_VERDICTS"
# Verdicts read or made by this process, by (key, check name): the file is read once, and a
# fallback's line is said once per process, not once per evaluation.
_seen: dict[tuple[str, str], dict] = {}
_said: set[str] = set()


def verdicts_file() -> Path:
    return Path(os.environ.get(VERDICTS_ENV) or cache_root() / "verdicts.json")


def verdict_key(device: torch.device) -> str:
    """What decides whether a verdict still holds: device, versions, and the checks' model."""
    env = environment(device)
    d, v = env["device"], env["versions"]
    parts = [f"{d['name']} ({d['type']}{', capability ' + d['capability'] if d['capability'] else ''})"]
    parts += [f"{lib} {v.get(lib)}" for lib in ("mathtune", "torch", "cuda", "transformers", "peft", "trl",
                                                "bitsandbytes")]
    return "; ".join(parts + [f"check model {check_model() or 'reference shape'}"])


def verdict_name(check: str, dtype: torch.dtype) -> str:
    """A verdict's name in the file: the check and the dtype it ran in ("lm_head lean, float32")."""
    return f"{check}, {str(dtype).removeprefix('torch.')}"


def remember(key: str, name: str, found: dict) -> None:
    """Keep one verdict beside the others (the cache cannot be written: it is kept for this process)."""
    _seen[(key, name)] = found
    path = verdicts_file()
    verdicts = read_cache_file(path)
    if not isinstance(verdicts.get(key), dict):  # none yet, or damaged: this key starts again
        verdicts[key] = {}
    verdicts[key][name] = found
    try:
        write_json_atomic(path, verdicts)
    except OSError:
        pass


def _verdict(kind: str, path: str, device: torch.device, dtype: torch.dtype, lean_head_check) -> dict:
    """The remembered verdict of this path's check here, or a fresh one (stored)."""
    key, name = verdict_key(device), verdict_name(f"{kind} {path}", dtype)
    if (key, name) in _seen:
        return _seen[(key, name)] | {"checked": "remembered"}
    stored = stored_verdict(key, name)
    if stored is not None:
        _seen[(key, name)] = stored
        return stored | {"checked": "remembered"}
    say(f"checking {kind} {path} ({str(dtype).removeprefix('torch.')}) against its reference before its first use "
        "on this device (once per device and versions)")
    try:
        check = run_check(kind, path, device, dtype, model_name=check_model(), lean_head_check=lean_head_check)
        found = {"verdict": check.verdict, "max_diff": check.max_diff, "tolerance": check.tolerance,
                 "reference": check.reference, "seconds": check.seconds}
    except Exception as err:  # a crashing path is a failed check, whatever it raised
        found = {"verdict": "fail", "max_diff": None, "tolerance": None, "reference": None,
                 "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
    say(f"check {kind} {path}: {found['verdict']} ({_difference(found)})")
    remember(key, name, found)
    return found | {"checked": "now"}


def stored_verdict(key: str, name: str) -> dict | None:
    """The verdict the cache holds for this check in this environment, when it is finished
    (core.finished): a verdict is kept under its whole identity, the environment's key and the
    check's name, so one found is one made with the same settings and is reused; a verdict of
    another environment is another key, checked on its own, never a conflict. A damaged entry
    is no verdict: the check runs again."""
    identity = {"environment": key, "check": name}
    stored = read_cache_file(verdicts_file()).get(key)
    stored = stored.get(name) if isinstance(stored, dict) else None
    held = identity if isinstance(stored, dict) and "verdict" in stored else None
    return stored if finished_stage(held, identity, where=str(verdicts_file()), what="another verdict",
                                    overwrite=False) else None


def _difference(found: dict) -> str:
    if found.get("error"):
        return f"crashed: {found['error']}"
    if found["max_diff"] is None:
        return "no difference measured"
    return f"max diff {found['max_diff']:.3g}, tolerance {found['tolerance']:.3g}"


def checked_path(kind: str, path: str, device: torch.device, dtype: torch.dtype, *, explicit: bool,
                 setting: str = "", lean_head_check: Callable | None = None) -> dict:
    """Which path runs for `kind` ("attention", "lm_head", "decoder") and why: {kind, path,
    asked, check, verdict, checked, max_diff, tolerance, reason}. A path without a check (the
    library's own) runs as asked. explicit: the user named the path (setting: where), so a
    failed check refuses the run instead of falling back."""
    if path not in FALLBACK:
        return {"kind": kind, "path": path, "asked": path, "check": None, "verdict": "not needed",
                "reason": "the library's own path: the reference the fast paths are checked against"}
    found = _verdict(kind, path, device, dtype, lean_head_check)
    record = {"kind": kind, "path": path, "asked": path, "check": f"{kind} {path}", **found, "reason": None}
    if found["verdict"] == "pass":
        return record
    if explicit:
        raise MathtuneError(f"{setting or kind}: {path} failed its check on this device ({kind} {path}: "
                            f"{_difference(found)}); ask for another, or auto")
    fallback = FALLBACK[path]
    record["reason"] = f"{path} failed its check ({kind} {path}: {_difference(found)}); {fallback} ran instead"
    if record["reason"] not in _said:
        _said.add(record["reason"])
        say(f"{kind}: {record['reason']}")
    if fallback in FALLBACK:  # the fallback is a fast path too: it is checked in turn
        after = checked_path(kind, fallback, device, dtype, explicit=False, lean_head_check=lean_head_check)
        after["reason"] = record["reason"] + (f"; then {after['reason']}" if after["reason"] else "")
        after["asked"] = path
        return after
    return record | {"path": fallback}


# ---------------------------------------------------------------------------------- decoder


def auto_decoder(model) -> str:
    """The decoder `mathtune eval` picks for this model before any check (a models.decoders name)."""
    if not engine.supports(model):
        return "generate"
    if engine.uses_static_cache(model):
        return "fixed_slots_cuda_graph" if next(model.parameters()).device.type == "cuda" else "fixed_slots"
    return "dynamic_cache"


def checked_decoder(model) -> dict:
    """The decoder the evaluation of this model runs, checked before its first use here; kept on
    the model (decoder_of reads it)."""
    path = auto_decoder(model)
    record = checked_path("decoder", path, next(model.parameters()).device, DECODER_CHECK_DTYPE,
                          explicit=DECODER_TABLE.get(path).static_cache and asked_static_cache() is True,
                          setting=f"{STATIC_CACHE_SETTING}=1")
    model.mathtune_decoder = record
    return record


def decoder_of(model) -> str:
    """The decoder to run for this model (a models.decoders name), checked before its first use here:
    every place that decodes (evaluation, validation exact match, RFT's sampling) asks this."""
    record = getattr(model, "mathtune_decoder", None) or checked_decoder(model)
    return record["path"]


def eval_paths(model) -> dict:
    """What an evaluation summary records of its paths: the decoder's record, and the attention
    (decoding runs the model's attention without packed rows: sdpa's own path, unchecked)."""
    attention = getattr(model.config, "_attn_implementation", None)
    return {"attention": {"kind": "attention", "path": attention, "asked": attention, "check": None,
                          "verdict": "not needed",
                          "reason": "decoding has no packed rows: the attention runs as transformers' own"},
            "decoder": getattr(model, "mathtune_decoder", None) or checked_decoder(model)}
