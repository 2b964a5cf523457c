"""The training part of the analysis: loss curves, their decrease, the trend verdict and what
to do next (as codes with their numbers; report.explanations words them), teacher-forced token accuracy, time, throughput and cost.

    analyze_training(run_dir, config) -> the "training" part of analysis.json

Reads train/metrics.jsonl and train/summary.json; never runs a model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mathtune.analysis.common import (SMOOTHING_WINDOW_FRACTION, first_last_window_means, pct, rounded,
                                      window_size)
from mathtune.analysis.selection import analyze_selection
from mathtune.config import Config
from mathtune.core.divergence import WATCHED, first_non_finite
from mathtune.core.method_kinds import METHOD_KIND_TABLE
from mathtune.core.runfiles import read_metrics
from mathtune.core.stats import linear_change_pct
from mathtune.task.train_summary import TrainSummary, read_train_summary

FINAL_STRETCH_FRACTION = 0.10
"""The final stretch = the last 10% of the logged step range."""

VALIDATION_TREND_POINTS = 3
"""The validation trend is read from the last 3 evaluations; with fewer there is no verdict."""

MIN_STRETCH_POINTS = 5
"""The training trend needs a line through at least 5 logged losses: the final stretch, widened
to the last 5 logged points when it holds fewer."""

TREND_THRESHOLD_PCT = 1.0
"""A change smaller than 1% of the loss over a window counts as flat."""


def _finite(value: Any) -> bool:
    # A diverged step logs NaN or inf; it cannot be averaged and is not valid JSON to store.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _finite_or_none(value: Any) -> float | None:
    return value if _finite(value) else None


def read_training_curves(metrics_path: Path) -> dict[str, dict[str, list[float]]]:
    """Train and eval series from metrics.jsonl. Eval values may sit in the same object as the
    train values of their step or in a separate object with the same step; both are read."""
    train: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for row in read_metrics(metrics_path):
        step = row["step"]
        if _finite(row.get("loss")):
            train[step] = {"loss": row["loss"], "acc": _finite_or_none(row.get("mean_token_accuracy")), "epoch": row.get("epoch")}
        if _finite(row.get("eval_loss")):
            evals[step] = {"loss": row["eval_loss"], "acc": _finite_or_none(row.get("eval_mean_token_accuracy")), "epoch": row.get("epoch")}

    def series(points: dict[int, dict]) -> dict[str, list]:
        steps = sorted(points)
        return {
            "step": steps,
            "epoch": [points[s]["epoch"] for s in steps],
            "loss": [float(points[s]["loss"]) for s in steps],
            "mean_token_accuracy": [points[s]["acc"] for s in steps],
        }

    return {"train": series(train), "validation": series(evals)}


def loss_decrease(series: dict[str, list]) -> dict[str, Any]:
    first, last = first_last_window_means(series["loss"])
    decrease = None if first in (None, 0) else (first - last) / first * 100
    return {
        "points": len(series["loss"]),
        "window_points": window_size(len(series["loss"])) if series["loss"] else 0,
        "first_window_mean": rounded(first, 4),
        "last_window_mean": rounded(last, 4),
        "decrease_pct": rounded(decrease),
    }


def final_stretch(curves: dict[str, dict[str, list]]) -> dict[str, Any]:
    """Change of a fitted line over the last FINAL_STRETCH_FRACTION of the step range."""
    train = curves["train"]
    if len(train["step"]) < 2:
        return {"available": False, "reason": "fewer than 2 logged training steps"}
    first_step, last_step = train["step"][0], train["step"][-1]
    start = last_step - (last_step - first_step) * FINAL_STRETCH_FRACTION

    train_pts = [(s, v) for s, v in zip(train["step"], train["loss"]) if s >= start]
    if len(train_pts) < MIN_STRETCH_POINTS:  # a sparse curve: widen to its last points
        train_pts = list(zip(train["step"], train["loss"]))[-MIN_STRETCH_POINTS:]
        start = min(start, train_pts[0][0])
    # Validation over the same steps (no widening of its own: its points are few and far apart).
    val_pts = [(s, v) for s, v in zip(curves["validation"]["step"], curves["validation"]["loss"]) if s >= start]

    def decrease(pts: list[tuple]) -> float | None:
        if len(pts) < 2:
            return None
        change = linear_change_pct([p[0] for p in pts], [p[1] for p in pts])
        return None if change is None else rounded(-change)

    return {
        "available": True,
        "fraction_pct": round(FINAL_STRETCH_FRACTION * 100),
        "from_step": math.floor(start),
        "to_step": last_step,
        "train_points": len(train_pts),
        "validation_points": len(val_pts),
        "train_decrease_pct": decrease(train_pts),
        "validation_decrease_pct": decrease(val_pts),
    }


def training_trend(curves: dict[str, dict[str, list]]) -> dict[str, Any]:
    """'still improving', 'plateaued' or 'overfitting' from the last windows of the curves, or
    'not enough points' when the windows hold too few losses for a line to mean anything.

    validation window: the last VALIDATION_TREND_POINTS evaluations, decrease of a fitted line.
    train window: the final stretch (at least MIN_STRETCH_POINTS logged losses), likewise.
    With a validation curve the verdict rests on it; the training curve decides only in a run
    without validation.
    """
    val = curves["validation"]
    # The rule's numbers; report.explanations states the rule in words.
    definition = {
        "final_stretch_fraction_pct": round(FINAL_STRETCH_FRACTION * 100),
        "validation_window_points": VALIDATION_TREND_POINTS,
        "min_train_points": MIN_STRETCH_POINTS,
        "threshold_pct": TREND_THRESHOLD_PCT,
    }
    stretch = final_stretch(curves)
    train_points = stretch.get("train_points", len(curves["train"]["step"]))
    train_dec = stretch.get("train_decrease_pct") if train_points >= MIN_STRETCH_POINTS else None
    val_pts = list(zip(val["step"], val["loss"]))[-VALIDATION_TREND_POINTS:]
    enough_val = len(val_pts) >= VALIDATION_TREND_POINTS
    val_change = linear_change_pct([p[0] for p in val_pts], [p[1] for p in val_pts]) if enough_val else None
    val_dec = rounded(-val_change) if val_change is not None else None
    result = {
        "definition": definition,
        "train_decrease_pct": train_dec,
        "validation_decrease_pct": val_dec,
        "train_points_used": train_points,
        "validation_points_used": len(val_pts),
        "validation_window_steps": [val_pts[0][0], val_pts[-1][0]] if val_pts else None,
    }
    decider = val_dec if val["step"] else train_dec
    if decider is None:
        return {**result, "verdict": "not enough points"}
    if val_dec is not None and val_dec < -TREND_THRESHOLD_PCT and train_dec is not None and train_dec > 0:
        verdict = "overfitting"
    elif decider > TREND_THRESHOLD_PCT:
        verdict = "still improving"
    else:
        verdict = "plateaued"
    return {**result, "verdict": verdict}


def _epochs_at(curves: dict, step: int | None) -> float | None:
    for series in (curves["validation"], curves["train"]):
        for s, e in zip(series["step"], series["epoch"]):
            if s == step and isinstance(e, (int, float)):
                return rounded(e, 2)
    return None


def _interval_used(curves: dict, series: str, key: str, config: Config | None) -> int | None:
    """The interval in steps a run used (train.eval_every_steps or train.logging_steps): from
    its config, or read off the curve's spacing where there is no config."""
    if config is not None:
        return getattr(config.train, key)
    steps = curves[series]["step"]
    gaps = [b - a for a, b in zip(steps, steps[1:]) if b > a]
    return min(gaps) if gaps else None


def _how_to_get_a_verdict(trend: dict, summary: TrainSummary | None, curves: dict, config: Config | None) -> dict[str, Any]:
    """What would give the trend a verdict: never a setting already in effect."""
    steps = (summary.global_step if summary else None) or (curves["train"]["step"][-1] if curves["train"]["step"] else None)
    if curves["validation"]["step"]:
        every = _interval_used(curves, "validation", "eval_every_steps", config)
        step = {"advice": "more validation points", "have": trend["validation_points_used"],
                "needs": VALIDATION_TREND_POINTS, "steps": steps, "eval_every_steps": every}
        if not steps:
            return step
        # Validation runs at step 0, every `every` steps and at the last step: 1 + ceil(steps / every)
        # evaluations. Aim at a few more than the window needs.
        suggest = max(1, steps // (VALIDATION_TREND_POINTS + 1))
        if every is None or suggest < every:
            return {**step, "suggest_eval_every_steps": suggest}
        return {**step, "steps_needed": (VALIDATION_TREND_POINTS - 2) * every + 1}
    return {"advice": "more training points", "have": trend["train_points_used"], "needs": MIN_STRETCH_POINTS,
            "logging_steps": _interval_used(curves, "train", "logging_steps", config)}


def training_next_step(trend: dict, summary: TrainSummary | None, curves: dict, config: Config | None,
                       accuracy: dict | None = None) -> dict[str, Any]:
    """What to do next, as an advice code (the trend's verdict, or what would give one) with the
    numbers it quotes beside the trend's own; where validation exact match was measured, the
    problems-solved verdict too. report.explanations puts it in words."""
    step = _loss_next_step(trend, summary, curves, config)
    em = (accuracy or {}).get("trend") or {}
    if em.get("available"):
        step["exact_match"] = {"verdict": em["verdict"], "kept_step": accuracy.get("kept_step")}
    return step


def _moved(decrease: float | None) -> dict[str, Any] | None:
    """A decrease as a direction and a size, so that no sign has to be read ('fell 2.3%')."""
    if decrease is None:
        return None
    return {"direction": "did not change" if decrease == 0 else "fell" if decrease > 0 else "rose", "pct": abs(decrease)}


def _loss_next_step(trend: dict, summary: TrainSummary | None, curves: dict, config: Config | None) -> dict[str, Any]:
    verdict = trend["verdict"]
    if verdict == "not enough points":
        return _how_to_get_a_verdict(trend, summary, curves, config)
    moved = {"validation_loss_moved": _moved(trend["validation_decrease_pct"]),
             "train_loss_moved": _moved(trend["train_decrease_pct"])}
    best_step = summary.best_step if summary else None
    best = {"best_step": best_step, "best_eval_loss": rounded(summary.best_eval_loss if summary else None, 4)}
    if verdict == "overfitting":
        return {"advice": verdict, **moved, **best, "best_epoch": _epochs_at(curves, best_step)}
    if verdict == "still improving":
        return {"advice": verdict, **moved, "epochs": config.train.epochs if config else None,
                "stopped_early": bool(summary and summary.stopped_early)}
    return {"advice": verdict, **moved, **best}


def analyze_training(run_dir: Path, config: Config | None) -> dict[str, Any]:
    metrics_path = run_dir / "train" / "metrics.jsonl"
    summary_path = run_dir / "train" / "summary.json"
    if not metrics_path.is_file():
        # "ran": false: the report leaves the section out (an evaluation or probe folder), where a
        # training that ran but left no readable log is said in its place.
        return {"available": False, "ran": False, "reason": "no training in this run (no train/metrics.jsonl)"}
    # float16 training logs an inf gradient norm where its loss scaler skipped a step (train.divergence).
    fp16 = config is not None and config.model.dtype == "float16"
    diverged = first_non_finite(read_metrics(metrics_path), tuple(k for k in WATCHED if not (fp16 and k == "grad_norm")))
    if diverged is not None:
        if config is not None:  # what the recommendation to try next starts from
            diverged |= {"learning_rate": config.train.learning_rate, "dtype": config.model.dtype}
        # No curve or table of a diverged run: its last figures are NaN and the finite ones before
        # them describe a training that did not finish.
        return {"available": False, "diverged": diverged, "reason": (
            f"training diverged at step {diverged['step']}: {diverged['metric']} was {diverged['value']}, so training "
            "stopped there and no adapter was kept from it; the loss curves and training figures of this run are "
            "not shown")}
    no_curve = METHOD_KIND_TABLE.get(config.train.method).no_loss_curve if config is not None else None
    if no_curve:
        return {"available": False, "reason": no_curve}
    curves = read_training_curves(metrics_path)
    if not curves["train"]["step"]:
        return {"available": False, "reason": "train/metrics.jsonl holds no logged training step"}
    summary = read_train_summary(summary_path) if summary_path.is_file() else None
    trend = training_trend(curves)

    def token_accuracy(series: dict) -> dict[str, Any]:
        start, end = first_last_window_means(series["mean_token_accuracy"])
        return {"start_pct": pct(start), "end_pct": pct(end)}

    accuracy = analyze_selection(run_dir, summary, summary.wall_time_s if summary else None)
    return {
        "available": True,
        "summary_available": summary_path.is_file(),
        # The definitions' numbers; report.explanations defines each measure in words.
        "definitions": {
            "window_fraction_pct": round(SMOOTHING_WINDOW_FRACTION * 100),
            "final_stretch_fraction_pct": round(FINAL_STRETCH_FRACTION * 100),
            "min_train_points": MIN_STRETCH_POINTS,
        },
        "curves": curves,
        "loss_decrease": {"train": loss_decrease(curves["train"]), "validation": loss_decrease(curves["validation"])},
        "final_stretch": final_stretch(curves),
        "trend": trend,
        "recommendation": training_next_step(trend, summary, curves, config, accuracy),
        "exact_match": accuracy,
        "token_accuracy": {"train": token_accuracy(curves["train"]), "validation": token_accuracy(curves["validation"])},
        **_summary_figures(summary, curves["train"]["step"][-1]),
    }


def _summary_figures(summary: TrainSummary | None, last_step: int) -> dict[str, Any]:
    """analysis.json's training figures from train/summary.json; without one (a training not
    finished) the last logged step and no figure."""
    if summary is None:
        return {**dict.fromkeys(("best_step", "best_eval_loss", "stopped_early", "early_stopping_patience")),
                "global_step": last_step,
                **dict.fromkeys(("wall_time_s", "wall_time_min", "tokens_seen", "tokens_per_s", "peak_memory_gib",
                                 "trainable_params", "base_params", "total_params", "device", "cost_usd",
                                 "gpu_hourly_usd", "cost_note", "data_sources", "answer_forms",
                                 "prompt_answer_form"))}
    s, wall = summary, summary.wall_time_s
    return {
        "best_step": s.best_step,
        "best_eval_loss": rounded(s.best_eval_loss, 4),
        "stopped_early": s.stopped_early,
        "early_stopping_patience": s.early_stopping_patience,
        "global_step": s.global_step,
        "wall_time_s": rounded(wall, 1),
        "wall_time_min": rounded(wall / 60, 1) if isinstance(wall, (int, float)) else None,
        "tokens_seen": s.tokens_seen,
        "tokens_per_s": rounded(s.tokens_per_s, 1),
        "peak_memory_gib": rounded(s.peak_memory_bytes / 2**30, 2) if s.peak_memory_bytes else None,
        "trainable_params": s.trainable_params,
        "base_params": s.base_params,
        "total_params": s.total_params,
        "device": s.device,
        # Cents for real runs; a short GPU test run still shows a non-zero cost.
        "cost_usd": rounded(s.cost_usd, 2 if (s.cost_usd or 0) >= 1 else 4),
        "gpu_hourly_usd": s.gpu_hourly_usd,
        "cost_note": s.cost_note,
        "data_sources": s.data_sources,
        "answer_forms": s.answer_forms,  # how the training answers state their number, with counts
        "prompt_answer_form": s.prompt_answer_form,  # the form the chat prompt asked for
    }
