"""What the training method of a run did: RFT's kept-solution counts, GRPO's reward curve.

    analyze_recipe(run_dir, config) -> the "recipe" part of analysis.json

Reads train/summary.json (RFT's counts, written by train.rft) and train/metrics.jsonl (GRPO's
per-step reward, share of mixed groups, KL and completion length, written by train.run from
TRL's logs). Never runs a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mathtune.analysis.common import first_last_window_means, pct, rounded, window_size
from mathtune.config import Config
from mathtune.core.runfiles import read_jsonl
from mathtune.task.train_summary import TrainSummary, read_train_summary

WINDOW_FRACTION = 0.25
"""GRPO's start and end are the means of the first and last quarter of the logged steps
(at least one step): single steps of a sampled reward are noisy."""
GRPO_SERIES = ("reward", "reward_std", "mixed_groups", "kl", "completion_length", "truncated_share")
LOW_MIXED_GROUPS_PCT = 25.0
LOW_SHARE_FROM_MODEL_PCT = 50.0


def analyze_recipe(run_dir: Path, config: Config | None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    summary_path = run_dir / "train" / "summary.json"
    summary = read_train_summary(summary_path) if summary_path.is_file() else None
    method = (summary.method if summary else None) or (config.train.method if config else "sft")
    out: dict[str, Any] = {"method": method, "recommendations": []}
    section = RECIPE_SECTIONS.get(method)  # a method's own section: what it sampled, how its reward moved
    if section is not None:
        out[method] = section(run_dir, config, summary, out["recommendations"])
    return out


def _rft(run_dir: Path, config: Config | None, summary: TrainSummary | None,
         recommendations: list[dict]) -> dict[str, Any]:
    stats = summary.rft if summary else None
    if not stats:
        return {"available": False, "reason": "train/summary.json holds no RFT counts (training unfinished?)"}
    share = pct(stats.get("share_from_model"))
    result = {
        "available": True,
        **{k: stats.get(k) for k in (
            "problems", "samples_per_problem", "temperature", "max_new_tokens", "keep_per_problem",
            "sampled_solutions", "strictly_correct_samples", "problems_with_correct_sample",
            "correct_samples_too_long", "max_length", "solutions_kept",
            "kept_from_model", "kept_from_gold", "sampling_generated_tokens", "sampling_reused", "samples_file")},
        "sampling_wall_time_s": rounded(stats.get("sampling_wall_time_s"), 1),
        "share_from_model_pct": share,
        "problems_with_correct_sample_pct": pct(stats["problems_with_correct_sample"] / stats["problems"])
        if stats.get("problems") else None,
        "sample_accuracy_strict_pct": pct(stats.get("sample_accuracy_strict")),
    }
    if stats.get("correct_samples_too_long"):
        recommendations.append({"advice": "rft samples too long", "count": stats["correct_samples_too_long"],
                                "max_length": stats["max_length"]})
    if share is not None and share < LOW_SHARE_FROM_MODEL_PCT:
        recommendations.append({"advice": "rft few model solutions"})
    return result


def _grpo(run_dir: Path, config: Config | None, summary: TrainSummary | None, recommendations: list[dict]) -> dict[str, Any]:
    metrics_path = run_dir / "train" / "metrics.jsonl"
    rows = [r for r in read_jsonl(metrics_path) if isinstance(r.get("step"), int)] if metrics_path.is_file() else []
    rows = [r for r in rows if isinstance(r.get("reward"), (int, float))]
    if not rows:
        return {"available": False, "reason": "train/metrics.jsonl holds no GRPO step"}
    reward_names = sorted({k for r in rows for k in r if k.startswith("reward_") and k != "reward_std"})
    curves: dict[str, list] = {"step": [r["step"] for r in rows]}
    for key in GRPO_SERIES + tuple(reward_names):
        curves[key] = [r.get(key) for r in rows]

    def ends(key: str, digits: int = 3) -> dict[str, Any]:
        present = sum(isinstance(v, (int, float)) for v in curves[key])
        first, last = first_last_window_means(curves[key], WINDOW_FRACTION)
        return {"start": rounded(first, digits), "end": rounded(last, digits),
                "window_steps": window_size(present, WINDOW_FRACTION) if present else 0}

    mixed = [v for v in curves["mixed_groups"] if isinstance(v, (int, float))]
    mixed_pct = pct(sum(mixed) / len(mixed)) if mixed else None
    g = config.train.grpo if config else None
    wall = summary.wall_time_s if summary else None
    result = {
        "available": True,
        "settings": g.model_dump(mode="json") if g else None,
        "learning_rate": config.train.learning_rate if config else None,
        "prompts_per_step": (config.train.batch_size * config.train.gradient_accumulation_steps // g.group_size)
        if config else None,
        "steps": len(rows),
        "curves": curves,
        "reward": ends("reward"),
        "completion_length": ends("completion_length", 1),
        "kl": ends("kl", 5) if any(isinstance(v, (int, float)) for v in curves["kl"]) else None,
        "per_reward": {name.removeprefix("reward_"): ends(name) for name in reward_names},
        "mixed_groups_mean_pct": mixed_pct,
        "truncated_share": ends("truncated_share"),
        "wall_time_s": rounded(wall, 1),
        "wall_time_per_step_s": rounded(wall / len(rows), 1) if isinstance(wall, (int, float)) and rows else None,
        "tokens_seen": summary.tokens_seen if summary else None,
        "device": summary.device if summary else None,
        "cost_usd": summary.cost_usd if summary else None,
        "cost_note": summary.cost_note if summary else None,
        "window_fraction_pct": round(WINDOW_FRACTION * 100),
    }
    if mixed_pct is not None and mixed_pct < LOW_MIXED_GROUPS_PCT:
        recommendations.append({"advice": "grpo few mixed groups"})
    return result


# The methods whose runs have a section of their own in analysis.json, under the method's name
# (core.method_kinds says which methods the report gives one).
RECIPE_SECTIONS = {"rft": _rft, "grpo": _grpo}
