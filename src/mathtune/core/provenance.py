"""What a result was made with: the versions of mathtune and the libraries that shape it."""

from __future__ import annotations

import hashlib
import json
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import read_json

LIBRARIES = ("mathtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


def library_version(name: str) -> str | None:
    """An installed distribution's version, None where it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Installed versions (None for one that is not installed), with Python's."""
    return {"python": platform.python_version()} | {name: library_version(name) for name in LIBRARIES}


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


def adapter_variant(use_dora: bool, use_rslora: bool) -> str:
    """The adapter's name: 'LoRA', 'DoRA', 'rsLoRA' or 'DoRA + rsLoRA'."""
    return " + ".join(name for name, on in (("DoRA", use_dora), ("rsLoRA", use_rslora)) if on) or "LoRA"


def describe_adapter(adapter_dir: str | Path) -> dict | None:
    """What a PEFT adapter is, from its adapter_config.json: the variant (LoRA, DoRA, rsLoRA),
    rank, alpha and the modules it adapts; None where the folder holds no adapter config."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return None
    settings = read_json(path)
    variant = adapter_variant(bool(settings.get("use_dora")), bool(settings.get("use_rslora")))
    targets = settings.get("target_modules")
    # PEFT writes either module names or the full paths it expanded 'all-linear' to: the names say it.
    names = sorted({t.rsplit(".", 1)[-1] for t in targets}) if isinstance(targets, list) else targets
    return {"variant": variant, "r": settings.get("r"), "alpha": settings.get("lora_alpha"), "target_modules": names}


# The files that make a PEFT adapter what it is: its settings and its weights (a model card or a
# tokenizer beside them changes nothing it computes).
ADAPTER_CONTENT = ("adapter_config.json", "adapter_model.safetensors")


def adapter_sha256(adapter_dir: str | Path) -> str | None:
    """The adapter's content hash (sha256 over its settings and weights, in ADAPTER_CONTENT's
    order): what a finished evaluation of it is matched by, wherever the folder lies. None
    where the folder holds no complete adapter (yet)."""
    files = [Path(adapter_dir) / name for name in ADAPTER_CONTENT]
    try:
        stamps = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
        return _hash_files(stamps)
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=16)
def _hash_files(stamps: tuple) -> str:
    """Keyed by path, size and modification time: an adapter is hashed once per process, and
    again whenever it is rewritten. The settings are hashed as parsed: PEFT writes the target
    modules it expanded 'all-linear' to in an order that changes from one process to the next."""
    digest = hashlib.sha256()
    for path, _, _ in stamps:
        digest.update(Path(path).name.encode() + b"\0")
        if path.endswith(".json"):
            settings = json.loads(Path(path).read_text(encoding="utf-8"))
            if isinstance(settings.get("target_modules"), list):
                settings["target_modules"] = sorted(settings["target_modules"])
            digest.update(json.dumps(settings, sort_keys=True).encode())
            continue
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def quantization_label(record: dict | None) -> str:
    """One line for the base weights as loaded: 'full precision', or the quantization with its
    library version, e.g. '4bit NF4, double quantization, compute float32 (bitsandbytes 0.50.2)'."""
    if not record:
        return "full precision"
    details = [record.get("quant_type", "").upper() or None,
               "double quantization" if record.get("double_quant") else None,
               f"compute {record['compute_dtype']}" if record.get("compute_dtype") else None]
    shown = ", ".join(d for d in details if d)
    return f"{record['quantization']}{' ' + shown if shown else ''} ({record['library']} {record['version']})"


def adapter_label(settings: dict | None) -> str | None:
    """One line for an adapter: 'DoRA r 8, alpha 16, on down_proj, gate_proj, ...'."""
    if not settings:
        return None
    targets = settings.get("target_modules")
    on = ", ".join(targets) if isinstance(targets, list) else str(targets)
    return f"{settings['variant']} r {settings.get('r')}, alpha {settings.get('alpha')}, on {on}"


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
                       "lm_head": train.get("lm_head"), "decoder": None, "path_checks": path_checks(train),
                       "batch_size": train.get("batch_size"), "versions": train.get("versions") or {},
                       "trust_remote_code": bool(train.get("trust_remote_code")),
                       "weights": quantization_label(train.get("quantization_record")),
                       "adapter_settings": adapter_label(train.get("adapter_settings")),
                       "adapter_merged": None,
                       "adapter_trained_dtype": (train.get("adapter_settings") or {}).get("trained_dtype")})
    for path in sorted((run_dir / "eval").glob("*.summary.json")) if (run_dir / "eval").is_dir() else []:
        s = _read(path)
        if not s:
            continue
        stages.append({"stage": f"eval {path.name.removesuffix('.summary.json')}", "model": s.get("model"),
                       "adapter": s.get("adapter"), "data": data_label(s.get("data_identity")) or s.get("data"),
                       "device": s.get("device"), "dtype": s.get("dtype"), "attention": s.get("attention"),
                       "lm_head": None, "decoder": s.get("decoder"), "path_checks": path_checks(s),
                       "batch_size": s.get("batch_size"), "versions": s.get("platform") or {},
                       "trust_remote_code": bool(s.get("trust_remote_code")),
                       "weights": quantization_label(s.get("quantization_record")),
                       "adapter_settings": adapter_label(s.get("adapter_settings")),
                       "adapter_merged": s.get("adapter_merged")})
    models = [s["model"] for s in stages if s["model"]]
    # The benchmark's data before the probe's variants (eval NAME-probe), whatever the file order.
    data = [s["data"] for s in sorted(stages, key=lambda s: s["stage"].endswith("-probe")) if s["data"]]
    return {"stages": stages, "model": models[0] if models else None, "data": data[0] if data else None,
            "remote_code_stages": [s["stage"] for s in stages if s["trust_remote_code"]],
            "weights": _weights_note(stages), "adapters": _adapters(stages)}


def path_checks(summary: dict) -> list[str]:
    """How each path a stage ran was chosen, from its summary's fast_paths (models.first_use):
    'attention mathtune_segments: checked on this device, pass (max diff 2e-07, tolerance 0.001)'."""
    lines = []
    for kind, r in (summary.get("fast_paths") or {}).items():
        if not isinstance(r, dict) or not r.get("check"):
            continue
        if r.get("reason"):
            lines.append(f"{kind} {r.get('path')}: {r['reason']}")
        else:
            diff = "" if r.get("max_diff") is None else f" (max diff {r['max_diff']:.2g}, tolerance {r['tolerance']:.2g})"
            lines.append(f"{kind} {r.get('path')}: checked on this device, {r.get('verdict')}{diff}")
    return lines


def _adapters(stages: list[dict]) -> list[dict]:
    """Each adapter described once, with the stages that trained or evaluated it."""
    found: dict[str, dict] = {}
    for s in stages:
        if s.get("adapter_settings"):
            entry = found.setdefault(s["adapter_settings"], {"adapter": s["adapter_settings"], "stages": []})
            entry["stages"].append(s["stage"])
            if s.get("adapter_trained_dtype"):
                entry["trained_dtype"] = s["adapter_trained_dtype"]
    return list(found.values())


def _weights_note(stages: list[dict]) -> str | None:
    """Whether the evaluations compared base and tuned on the same base weights, said where a
    stage ran on quantized weights (None where every stage had full-precision weights)."""
    quantized = [s for s in stages if s["weights"] != "full precision"]
    if not quantized:
        return None
    evals = [s for s in stages if s["stage"].startswith("eval ")]
    kinds = {s["weights"] for s in evals}
    unmerged = [s["stage"] for s in evals if s.get("adapter_merged") is False]
    if len(kinds) == 1 and len(evals) > 1:
        text = (f"Every evaluation ran on the same quantized base ({next(iter(kinds))}): base and tuned are "
                "compared on the same weights")
        if unmerged:
            text += f", the tuned model being that base with its adapter beside it, unmerged ({', '.join(unmerged)})"
        return text + "."
    listing = "; ".join(f"{s['stage']}: {s['weights']}" for s in stages)
    return f"The stages ran on differently held base weights ({listing}): their results are not paired on one base."
