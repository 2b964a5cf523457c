"""The rates this machine actually reached, kept in the user's cache for the plan.

    record_rates(machine, entry)     # after a finished run: {"base_params": ..., "train_flops_per_s": ...}
    rates = measured_rates(machine)  # every entry kept for this machine, newest last

`machine` names the device and the library versions (a new torch or transformers can change
the speed, so a measurement under other versions is not reused). The file is
$MATHTUNE_RATES, or measured_rates.json in the mathtune cache ($MATHTUNE_CACHE, default
~/.cache/mathtune).
"""

from __future__ import annotations

import os
from pathlib import Path

from mathtune.core.cache import cache_root, read_cache_file
from mathtune.core.runfiles import write_json_atomic

# Measurements kept per machine: one per model size is what the plan uses (the newest of the
# nearest size); older ones are only history.
KEPT_PER_MACHINE = 20


def rates_file() -> Path:
    explicit = os.environ.get("MATHTUNE_RATES")
    if explicit:
        return Path(explicit)
    return cache_root() / "measured_rates.json"


def _read_all() -> dict:
    return read_cache_file(rates_file())  # a damaged cache costs a calibration, never a plan


def measured_rates(machine: str) -> list[dict]:
    """The measurements kept for this machine (device and versions), oldest first."""
    entries = _read_all().get(machine)
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def record_rates(machine: str, entry: dict) -> Path:
    """Add one measurement for this machine; returns the file written."""
    data = _read_all()
    # A run recorded again (a rerun that found every stage finished) replaces its own entry.
    others = [e for e in measured_rates(machine) if e.get("run") is None or e.get("run") != entry.get("run")]
    data[machine] = (others + [entry])[-KEPT_PER_MACHINE:]
    path = rates_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return path
