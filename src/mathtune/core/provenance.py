"""What a result was made with: the versions of mathtune and the libraries that shape it."""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import read_json

LIBRARIES = ("mathtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


def library_versions() -> dict[str, str | None]:
    """Installed versions (None for one that is not installed), with Python's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _read(path: Path) -> dict | None:
    """A stage's summary, or None where there is none or it cannot be read: the report's "What
    ran" table is best effort, and the analysis names an unreadable summary itself."""
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except MathtuneError:
        return None


def data_label(identity: dict | None) -> str | None:
    """One line for a data identity: path and sha256 prefix, or hub id and revision."""
    if not identity:
        return None
    if identity.get("kind") == "local":
        return f"{identity['path']} (sha256 {identity['sha256'][:12]})"
    return f"{identity.get('id')} [{identity.get('split')}] revision {identity.get('revision') or 'not recorded'}"


def run_provenance(run_dir: Path) -> dict:
    """What each stage of a run folder ran with, read from the summaries it wrote: model, data,
    device, dtype, attention, batch size and library versions. Works for any run folder, an
    evaluation-only one included."""
    run_dir = Path(run_dir)
    stages = []
    train = _read(run_dir / "train" / "summary.json")
    if train:
        stages.append({"stage": "train", "model": train.get("model"), "adapter": None, "data": data_label(train.get("data_identity")),
                       "device": train.get("device"), "dtype": train.get("dtype"), "attention": train.get("attention"),
                       "batch_size": train.get("batch_size"), "versions": train.get("versions") or {},
                       "trust_remote_code": bool(train.get("trust_remote_code"))})
    for path in sorted((run_dir / "eval").glob("*.summary.json")) if (run_dir / "eval").is_dir() else []:
        s = _read(path)
        if not s:
            continue
        stages.append({"stage": f"eval {path.name.removesuffix('.summary.json')}", "model": s.get("model"),
                       "adapter": s.get("adapter"), "data": data_label(s.get("data_identity")) or s.get("data"),
                       "device": s.get("device"), "dtype": s.get("dtype"), "attention": s.get("attention"),
                       "batch_size": s.get("batch_size"), "versions": s.get("platform") or {},
                       "trust_remote_code": bool(s.get("trust_remote_code"))})
    models = [s["model"] for s in stages if s["model"]]
    # The benchmark's data before the probe's variants (eval NAME-probe), whatever the file order.
    data = [s["data"] for s in sorted(stages, key=lambda s: s["stage"].endswith("-probe")) if s["data"]]
    return {"stages": stages, "model": models[0] if models else None, "data": data[0] if data else None,
            "remote_code_stages": [s["stage"] for s in stages if s["trust_remote_code"]]}
