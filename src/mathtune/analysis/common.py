"""What the analysis modules share: display rounding, the windows of a curve, and the readers
of a run folder's config and records.

    rounded(0.12345, 3) -> 0.123      pct(0.4567) -> 45.7
    first_last_window_means(values)  -> the smoothed start and end of a curve
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mathtune.config import Config, config_from_yaml_text

SMOOTHING_WINDOW_FRACTION = 0.10
"""First/last window of a curve = this share of its logged points (at least one point)."""
MODEL_ORDER = ("base", "tuned")
UNNAMED_DATA = "data not named in the summary"


def rounded(value: float | None, digits: int = 1) -> float | None:
    """Round for display; None stays None (shown as n/a)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits) + 0.0  # + 0.0: no "-0.0"


def pct(proportion: float | None) -> float | None:
    return None if proportion is None else rounded(proportion * 100, 1)


def window_size(n_points: int, fraction: float = SMOOTHING_WINDOW_FRACTION) -> int:
    return max(1, math.ceil(n_points * fraction))


def first_last_window_means(values: list[float | None],
                            fraction: float = SMOOTHING_WINDOW_FRACTION) -> tuple[float | None, float | None]:
    """Mean of the first and of the last window of a curve (the smoothed start and end)."""
    present = [v for v in values if isinstance(v, (int, float))]
    if not present:
        return None, None
    w = window_size(len(present), fraction)
    return sum(present[:w]) / w, sum(present[-w:]) / w


def load_run_config(run_dir: Path) -> Config | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return config_from_yaml_text(path.read_text(encoding="utf-8"), str(path))


def eval_record_files(run_dir: Path) -> dict[str, Path]:
    """eval/NAME.jsonl per model; base and tuned first, then any others by name."""
    folder = run_dir / "eval"
    if not folder.is_dir():
        return {}
    # An evaluation still running (NAME.partial.jsonl) or a re-scored copy is not a model's records.
    found = {p.stem: p for p in folder.glob("*.jsonl") if not p.stem.endswith(".scored")
             and not re.search(r"\.partial(\.rank\d+)?$", p.stem)}
    ordered = [n for n in MODEL_ORDER if n in found] + sorted(n for n in found if n not in MODEL_ORDER)
    return {n: found[n] for n in ordered}
