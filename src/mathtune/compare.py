"""Side-by-side table of finished runs.

    mathtune compare RUN_DIR RUN_DIR ...

Reads each run's config.yaml, eval/*.summary.json and train/summary.json (never a model) and
returns a Markdown table: the config keys that differ between the runs, then accuracies
with their 95% intervals as the evaluation stage recorded them, cost and wall time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathtune.config import config_from_yaml_text
from mathtune.errors import MathtuneError
from mathtune.stats import wilson_interval

MODELS = ("base", "tuned")


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MathtuneError(f"{path}: malformed JSON ({err.msg})") from None


def load_run_facts(run_dir: Path) -> dict[str, Any]:
    """The facts one column of the table needs; MathtuneError for a folder that is not a
    finished run (no config.yaml, or no evaluation summary yet)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MathtuneError(f"run folder not found: {run_dir}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MathtuneError(f"{run_dir} is not a run folder (no config.yaml)")
    config = config_from_yaml_text(config_path.read_text(encoding="utf-8"), str(config_path))
    evals = {m: run_dir / "eval" / f"{m}.summary.json" for m in MODELS}
    evals = {m: _read_json(p) for m, p in evals.items() if p.is_file()}
    if not evals:
        raise MathtuneError(f"{run_dir} is unfinished: no eval/base.summary.json or eval/tuned.summary.json yet")
    train_path = run_dir / "train" / "summary.json"
    return {
        "dir": run_dir,
        "config": _flatten(config.model_dump(mode="json")),
        "evals": evals,
        "train": _read_json(train_path) if train_path.is_file() else None,
    }


def _accuracy_cell(summary: dict | None, kind: str) -> str:
    if summary is None or summary.get(f"accuracy_{kind}") is None:
        return "n/a"
    ci = summary.get(f"ci95_{kind}")
    if not ci and isinstance(summary.get(f"correct_{kind}"), int) and summary.get("n"):
        ci = wilson_interval(summary[f"correct_{kind}"], summary["n"])  # older summaries lack the interval
    interval = f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else ""
    return f"{summary[f'accuracy_{kind}'] * 100:.1f}%{interval}"


def _show(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|")


def compare_runs(run_dirs: list[Path]) -> str:
    """A Markdown table with one column per run."""
    if not run_dirs:
        raise MathtuneError("compare needs at least one run folder")
    runs = [load_run_facts(Path(d)) for d in run_dirs]
    header = ["", *(r["dir"].name or str(r["dir"]) for r in runs)]
    rows: list[list[str]] = []

    keys = sorted({k for r in runs for k in r["config"]})
    differing = [k for k in keys if len({json.dumps(r["config"].get(k), sort_keys=True) for r in runs}) > 1]
    for key in differing:
        rows.append([f"config: {key}", *(_show(r["config"].get(key)) for r in runs)])
    if not differing and len(runs) > 1:
        rows.append(["config", *("identical" for _ in runs)])

    for model in MODELS:
        if not any(model in r["evals"] for r in runs):
            continue
        for kind in ("strict", "flexible"):
            rows.append([f"{model} accuracy, {kind} (95% CI)", *(_accuracy_cell(r["evals"].get(model), kind) for r in runs)])
    protocols = [_show((r["evals"].get("tuned") or r["evals"].get("base") or {}).get("protocol")) for r in runs]
    rows.append(["protocol", *protocols])

    def train_value(r: dict, key: str, fmt=str) -> str:
        value = (r["train"] or {}).get(key)
        return "n/a" if value is None else fmt(value)

    rows.append(["best step", *(train_value(r, "best_step") for r in runs)])
    rows.append(["training wall time", *(train_value(r, "wall_time_s", lambda s: f"{s / 60:.1f} min") for r in runs)])
    rows.append(["training cost", *(train_value(r, "cost_usd", lambda c: f"${c:.2f}") for r in runs)])
    rows.append([
        "evaluation wall time",
        *(f"{sum(s.get('wall_time_s') or 0 for s in r['evals'].values()) / 60:.1f} min" for r in runs),
    ])

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if len({p for p in protocols}) > 1:
        lines.append("")
        lines.append("Warning: the runs were evaluated under different protocols; their accuracies are not comparable.")
    return "\n".join(lines)
