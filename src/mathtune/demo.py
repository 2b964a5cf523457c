"""The embedded default: the whole pipeline on a small real model, on CPU, offline.

    mathtune demo

Model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from the package registry, dequantized to
fp32 once and cached). Data, first found of: MATHTUNE_DATA, the hub's openai/gsm8k, the
GSM8K-style problems shipped in mathtune/demo_data (said loudly: those are not GSM8K).
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

from mathtune.config import load_config
from mathtune.core.errors import MathtuneError
from mathtune.core.hub import unreachable_reason
from mathtune.task.data import HUB_DEFAULT, load_source_split

DEMO_MODEL = "qwen2.5-coder-0.5b-instruct"
DEMO_RUN_DIR = Path("runs") / "demo"


def demo_config_path() -> Path:
    return Path(str(resources.files("mathtune") / "configs" / "demo.yaml"))


def shipped_demo_data() -> Path:
    return Path(str(resources.files("mathtune") / "demo_data"))


def choose_data_source() -> tuple[str, str]:
    """(source, how it was chosen)."""
    env = os.environ.get("MATHTUNE_DATA")
    if env:
        return env, f"GSM8K from MATHTUNE_DATA={env}"
    reason = hub_unreachable_reason()
    if reason is None:
        try:
            load_source_split(HUB_DEFAULT, "test")
            return HUB_DEFAULT, f"GSM8K from the hub ({HUB_DEFAULT})"
        except MathtuneError as err:
            reason = str(err)
    return str(shipped_demo_data()), (
        f"GSM8K is not reachable (MATHTUNE_DATA is unset; {reason}). Using the GSM8K-style problems "
        "shipped with mathtune: the demo's accuracies are NOT GSM8K figures"
    )


def hub_unreachable_reason() -> str | None:
    """Why the hub cannot be used, found quickly, so an offline machine does not sit through
    the hub client's retry back-off (about 25 s) before the demo falls back."""
    from huggingface_hub import constants  # the hub client's import is slow; only the demo's data choice needs it

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return unreachable_reason()


def run_demo(out_dir: Path = DEMO_RUN_DIR) -> Path:
    from mathtune.pipeline import run_experiment
    from mathtune.models.registry import ensure_model

    start = time.perf_counter()
    gguf = ensure_model(DEMO_MODEL)
    source, how = choose_data_source()
    print(f"demo data: {how}", flush=True)
    config = load_config(demo_config_path(), [f"model.name_or_path={gguf}", f"data.source={source}"])
    report = run_experiment(config, out_dir)
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    print(f"open the report: {report.resolve()}")
    return report
