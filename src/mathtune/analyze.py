"""Analysis: every figure the report shows, computed from the run folder's files alone.

    mathtune report RUN_DIR        (rebuilds analysis.json, then the report)

Reads config.yaml, train/metrics.jsonl, train/summary.json, eval/*.jsonl and
eval/*.summary.json; writes RUN_DIR/analysis.json. Never runs a model. The numbers the
report prints are stored here already rounded, so a reader finds each one again verbatim.
Missing parts (no train/ in an eval-only folder, no tuned model) are recorded as not
available with the reason instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from mathtune.config import Config, config_from_yaml_text
from mathtune.errors import MathtuneError
from mathtune.probe import PROBE_SUFFIX, probe_analysis
from mathtune.provenance import run_provenance
from mathtune.regression import regression_analysis
from mathtune.selfcheck import self_check
from mathtune.selfconsistency import self_consistency
from mathtune.runfiles import read_eval_records, read_metrics, write_atomic
from mathtune.stats import (linear_change_pct, mcnemar_exact, paired_bootstrap_difference, paired_counts,
                            wilson_interval, wilson_share)
from mathtune.taxonomy import CATEGORIES, PRECEDENCE, RULES, arithmetic_slips, classify_error, count_reasoning_steps

SCHEMA_VERSION = 1

# --- definitions of the training summaries (stored in analysis.json next to the numbers) ---
SMOOTHING_WINDOW_FRACTION = 0.10
"""First/last window of a curve = this share of its logged points (at least one point)."""
FINAL_STRETCH_FRACTION = 0.10
"""The final stretch = the last 10% of the logged step range."""
VALIDATION_TREND_POINTS = 3
"""The validation trend is read from the last 3 evaluations; with fewer there is no verdict."""
MIN_STRETCH_POINTS = 5
"""The training trend needs a line through at least 5 logged losses: the final stretch, widened
to the last 5 logged points when it holds fewer."""
TREND_THRESHOLD_PCT = 1.0
"""A change smaller than 1% of the loss over a window counts as flat."""
SIGN_CONVENTION = ("every decrease is (start - end) / start x 100: positive when the loss fell, negative "
                   "when it rose")

UNNAMED_DATA = "data not named in the summary"
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL_PCT = 95
NGRAM = 13
EXAMPLES_PER_CATEGORY = 3
EXAMPLE_MAX_CHARS = 1500
MAX_STEP_BUCKET = 8
"""Problems with 8 or more reasoning steps share one bucket ('8+'): there are few of them."""
MODEL_ORDER = ("base", "tuned")


# --- small readers ----------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MathtuneError(f"{path}: malformed JSON ({err.msg}, line {err.lineno})") from None


def load_run_config(run_dir: Path) -> Config | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return config_from_yaml_text(path.read_text(encoding="utf-8"), str(path))


def _r(value: float | None, digits: int = 1) -> float | None:
    """Round for display; None stays None (shown as n/a)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits) + 0.0  # + 0.0: no "-0.0"


def _pct(proportion: float | None) -> float | None:
    return None if proportion is None else _r(proportion * 100, 1)


def _signed(value: float | None, unit: str = "%") -> str:
    return "n/a" if value is None else f"{value:+.1f}{unit}"


def _moved(decrease: float | None) -> str:
    """A decrease in words, so that no sign has to be read: 'fell 2.3%', 'rose 2.3%'."""
    if decrease is None:
        return "n/a"
    return "did not change" if decrease == 0 else f"{'fell' if decrease > 0 else 'rose'} {abs(decrease):.1f}%"


# --- training ---------------------------------------------------------------------------------


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


def loss_decrease(series: dict[str, list]) -> dict[str, Any]:
    first, last = first_last_window_means(series["loss"])
    pct = None if first in (None, 0) else (first - last) / first * 100
    return {
        "points": len(series["loss"]),
        "window_points": window_size(len(series["loss"])) if series["loss"] else 0,
        "first_window_mean": _r(first, 4),
        "last_window_mean": _r(last, 4),
        "decrease_pct": _r(pct),
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
        return None if change is None else _r(-change)

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
    definition = {
        "train_window": (f"last {round(FINAL_STRETCH_FRACTION * 100)}% of the logged step range, at least "
                         f"{MIN_STRETCH_POINTS} logged points"),
        "validation_window_points": VALIDATION_TREND_POINTS,
        "min_train_points": MIN_STRETCH_POINTS,
        "threshold_pct": TREND_THRESHOLD_PCT,
        "sign": SIGN_CONVENTION,
        "rule": (
            "overfitting: validation loss rises by more than the threshold over its window while "
            "training loss falls; still improving: validation loss (training loss when there is no "
            "validation) falls by more than the threshold; plateaued: otherwise; not enough points: the "
            "deciding window holds fewer points than it needs"
        ),
    }
    stretch = final_stretch(curves)
    train_points = stretch.get("train_points", len(curves["train"]["step"]))
    train_dec = stretch.get("train_decrease_pct") if train_points >= MIN_STRETCH_POINTS else None
    val_pts = list(zip(val["step"], val["loss"]))[-VALIDATION_TREND_POINTS:]
    enough_val = len(val_pts) >= VALIDATION_TREND_POINTS
    val_change = linear_change_pct([p[0] for p in val_pts], [p[1] for p in val_pts]) if enough_val else None
    val_dec = _r(-val_change) if val_change is not None else None
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
                return _r(e, 2)
    return None


def training_recommendation(trend: dict, summary: dict, curves: dict, config: Config | None) -> str:
    """What to do next, from the verdict and the numbers behind it (each named with its window)."""
    verdict = trend["verdict"]
    val_dec, train_dec = trend["validation_decrease_pct"], trend["train_decrease_pct"]
    window = trend["validation_window_steps"]
    val_text = (
        f"validation loss {_moved(val_dec)} over the last {trend['validation_points_used']} evaluations "
        f"(steps {window[0]} to {window[1]})" if val_dec is not None else ""
    )
    train_text = (f"training loss {_moved(train_dec)} over the final stretch ({trend['train_points_used']} "
                  "logged points)" if train_dec is not None else "")
    if verdict == "not enough points":
        steps = summary.get("global_step") or (curves["train"]["step"][-1] if curves["train"]["step"] else None)
        if curves["validation"]["step"]:
            every = max(1, steps // (VALIDATION_TREND_POINTS + 1)) if steps else None
            how = (f"set train.eval_every_steps to {every}{' or less' if every > 1 else ''} (this run took {steps} "
                   "steps), or train longer"
                   if every else "evaluate more often (train.eval_every_steps) or train longer")
            return (f"Not enough validation points for a verdict: {trend['validation_points_used']} evaluations, and "
                    f"the trend needs the last {VALIDATION_TREND_POINTS}. To get one, {how}.")
        return (f"Not enough training-loss points for a verdict: {trend['train_points_used']} logged, and the trend "
                f"needs {MIN_STRETCH_POINTS}. To get one, log more often (train.logging_steps) or train longer, "
                "and keep a validation split (data.val_fraction).")
    decider, other = (val_text, train_text) if val_dec is not None else (train_text, "")
    other = f"; {other}" if other else ""
    facts = "; ".join(t for t in (val_text, train_text) if t)
    best_step, best_loss = summary.get("best_step"), _r(summary.get("best_eval_loss"), 4)
    epochs = config.train.epochs if config else None
    if verdict == "overfitting":
        best_epoch = _epochs_at(curves, best_step)
        at = f" (epoch {best_epoch})" if best_epoch is not None else ""
        return (
            f"Overfitting: {facts}. Keep the checkpoint from step {best_step}{at} with validation loss "
            f"{best_loss}; more epochs would make it worse. Train for fewer epochs or regularize more "
            "(higher LoRA dropout, lower learning rate) instead."
        )
    if verdict == "still improving":
        more = f" than the {epochs} used" if epochs is not None else ""
        stopped = " even though early stopping fired" if summary.get("stopped_early") else ""
        return (
            f"Still improving: {decider}, more than the {TREND_THRESHOLD_PCT}% threshold{stopped}{other}. "
            f"More epochs{more} are likely to lower the validation loss further; whether that lifts "
            "benchmark exact match must be measured, not assumed."
        )
    return (
        f"Plateaued: {decider}, within the {TREND_THRESHOLD_PCT}% threshold{other}. More epochs of the same "
        f"recipe are unlikely to help; the best checkpoint is step {best_step} (validation loss "
        f"{best_loss}). Change the recipe instead (learning rate, LoRA rank, data) to go further."
    )


def analyze_training(run_dir: Path, config: Config | None) -> dict[str, Any]:
    metrics_path = run_dir / "train" / "metrics.jsonl"
    summary_path = run_dir / "train" / "summary.json"
    if not metrics_path.is_file():
        return {"available": False, "reason": "no training in this run (no train/metrics.jsonl)"}
    if config is not None and config.train.method == "grpo":
        return {"available": False, "reason": (
            "method grpo maximises a reward and has no supervised loss curve or validation loss; its reward, "
            "KL and completion length per step are in the GRPO section")}
    curves = read_training_curves(metrics_path)
    if not curves["train"]["step"]:
        return {"available": False, "reason": "train/metrics.jsonl holds no logged training step"}
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    trend = training_trend(curves)

    def token_accuracy(series: dict) -> dict[str, Any]:
        start, end = first_last_window_means(series["mean_token_accuracy"])
        return {"start_pct": _pct(start), "end_pct": _pct(end)}

    wall = summary.get("wall_time_s")
    return {
        "available": True,
        "summary_available": summary_path.is_file(),
        "definitions": {
            "loss_decrease": (
                "(smoothed first window - smoothed last window) / smoothed first window x 100, where "
                f"a window is the mean of {round(SMOOTHING_WINDOW_FRACTION * 100)}% of the logged points "
                "(at least one)"
            ),
            "final_stretch": (
                f"decrease of a least-squares line fitted to the losses logged in the last "
                f"{round(FINAL_STRETCH_FRACTION * 100)}% of the step range (widened to the last "
                f"{MIN_STRETCH_POINTS} logged training losses when it holds fewer), in % of its starting value; "
                "validation over the same steps, where it has at least 2 points"
            ),
            "token_accuracy": (
                "teacher-forced next-token accuracy on the solution tokens (the model sees the gold "
                "prefix at every position); NOT problem-solving accuracy. Start and end are the "
                "first- and last-window means"
            ),
            "window_fraction_pct": round(SMOOTHING_WINDOW_FRACTION * 100),
            "sign": SIGN_CONVENTION,
        },
        "curves": curves,
        "loss_decrease": {"train": loss_decrease(curves["train"]), "validation": loss_decrease(curves["validation"])},
        "final_stretch": final_stretch(curves),
        "trend": trend,
        "recommendation": training_recommendation(trend, summary, curves, config),
        "token_accuracy": {"train": token_accuracy(curves["train"]), "validation": token_accuracy(curves["validation"])},
        "best_step": summary.get("best_step"),
        "best_eval_loss": _r(summary.get("best_eval_loss"), 4),
        "stopped_early": summary.get("stopped_early"),
        "early_stopping_patience": summary.get("early_stopping_patience"),
        "global_step": summary.get("global_step", curves["train"]["step"][-1]),
        "wall_time_s": _r(wall, 1),
        "wall_time_min": _r(wall / 60, 1) if isinstance(wall, (int, float)) else None,
        "tokens_seen": summary.get("tokens_seen"),
        "tokens_per_s": _r(summary.get("tokens_per_s"), 1),
        "peak_memory_gib": _r(summary["peak_memory_bytes"] / 2**30, 2) if summary.get("peak_memory_bytes") else None,
        "trainable_params": summary.get("trainable_params"),
        "total_params": summary.get("total_params"),
        "device": summary.get("device"),
        # Cents for real runs; a short GPU test run still shows a non-zero cost.
        "cost_usd": _r(summary.get("cost_usd"), 2 if (summary.get("cost_usd") or 0) >= 1 else 4),
        "gpu_hourly_usd": summary.get("gpu_hourly_usd"),
        "cost_note": summary.get("cost_note"),
        "data_sources": summary.get("data_sources"),
    }


# --- benchmark --------------------------------------------------------------------------------


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


def _category(record: dict) -> str | None:
    # The per-problem file is the record of what was claimed; recompute only when it is silent.
    if "error_category" in record and (record["error_category"] is not None or record.get("correct_strict")):
        return record["error_category"]
    return classify_error(record)


def model_accuracy(records: list[dict], summary: dict) -> dict[str, Any]:
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kind in ("strict", "flexible"):
        correct = sum(1 for r in records if r.get(f"correct_{kind}"))
        lo, hi = wilson_interval(correct, n)
        out[kind] = {
            "correct": correct,
            "accuracy_pct": _pct(correct / n) if n else None,
            "ci95_pct": [_pct(lo), _pct(hi)],
        }
    out["truncated"] = sum(1 for r in records if r.get("truncated"))
    for key in ("model", "adapter", "prompt", "max_new_tokens", "samples", "temperature", "device", "dtype", "protocol",
                "data_name"):
        out[key] = summary.get(key)
    out["wall_time_s"] = _r(summary.get("wall_time_s"), 1)
    out["problems_per_s"] = _r(summary.get("problems_per_s"), 2)
    out["tokens_per_s"] = _r(summary.get("tokens_per_s"), 1)
    return out


def paired_comparison(base: list[dict], tuned: list[dict]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in base if r.get("id") is not None}
    common = [(by_id[r["id"]], r) for r in tuned if r.get("id") in by_id]
    result: dict[str, Any] = {
        "n_paired": len(common),
        "joined_on": "id",
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "ci_level_pct": CI_LEVEL_PCT,
    }
    if not common:
        return {**result, "available": False, "reason": "base and tuned share no problem id"}
    for kind in ("strict", "flexible"):
        a = [bool(b.get(f"correct_{kind}")) for b, _ in common]
        b = [bool(t.get(f"correct_{kind}")) for _, t in common]
        diff, lo, hi = paired_bootstrap_difference(a, b, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
        counts = paired_counts(a, b)
        p = mcnemar_exact(counts["improved"], counts["regressed"])
        result[kind] = {
            "difference_pp": _r(diff * 100),
            "ci95_pp": [_r(lo * 100), _r(hi * 100)],
            "mcnemar_p": float(f"{p:.3g}"),
            "mcnemar_p_display": "< 0.001" if p < 0.001 else f"{p:.3f}",
            **counts,
        }
    s = result["strict"]
    lo, hi = s["ci95_pp"]
    if lo > 0:
        reading = "the tuned model is better"
    elif hi < 0:
        reading = "the tuned model is worse"
    else:
        reading = "the benchmark shows no reliable difference (the interval contains 0)"
    result["available"] = True
    result["verdict"] = (
        f"Strict accuracy changed by {_signed(s['difference_pp'], ' points')} (paired bootstrap {CI_LEVEL_PCT}% "
        f"interval {lo} to {hi}; exact McNemar p {s['mcnemar_p_display']}; {s['improved']} problems improved, "
        f"{s['regressed']} regressed, out of {len(common)}): {reading}."
    )
    return result


def accuracy_by_steps(records: list[dict]) -> list[dict[str, Any]]:
    buckets: dict[int, list[bool]] = {}
    for r in records:
        steps = min(count_reasoning_steps(r.get("answer") or ""), MAX_STEP_BUCKET)
        buckets.setdefault(steps, []).append(bool(r.get("correct_strict")))
    rows = []
    for steps in sorted(buckets):
        outcomes = buckets[steps]
        rows.append({"steps": f"{steps}+" if steps == MAX_STEP_BUCKET else str(steps),
                     **wilson_share(sum(outcomes), len(outcomes))})
    return rows


def _example(record: dict, model: str, category: str) -> dict[str, Any]:
    completion = record.get("completion") or ""
    if len(completion) > EXAMPLE_MAX_CHARS:
        completion = completion[:EXAMPLE_MAX_CHARS] + " [...]"
    evidence = ""
    if category == "arithmetic_slip":
        evidence = "; ".join(arithmetic_slips(record.get("completion") or "")[:3])
    return {
        "model": model,
        "id": record.get("id"),
        "question": record.get("question"),
        "gold": record.get("gold"),
        "pred_strict": record.get("pred_strict"),
        "pred_flexible": record.get("pred_flexible"),
        "steps": count_reasoning_steps(record.get("answer") or ""),
        "completion": completion,
        "evidence": evidence,
    }


def analyze_errors(records_by_model: dict[str, list[dict]]) -> dict[str, Any]:
    counts, examples, by_steps = {}, {c: [] for c in CATEGORIES}, {}
    for model, records in records_by_model.items():
        per_cat = {c: 0 for c in CATEGORIES}
        for r in records:
            cat = _category(r)
            if cat in per_cat:
                per_cat[cat] += 1
        counts[model] = per_cat
        by_steps[model] = accuracy_by_steps(records)
    # Examples: the tuned model's wrong answers first (it is the model being judged), then the
    # base model's, in file order, so the choice is deterministic and reproducible.
    for model in sorted(records_by_model, key=lambda m: (m != "tuned", m != "base", m)):
        for r in records_by_model[model]:
            cat = _category(r)
            if cat in examples and len(examples[cat]) < EXAMPLES_PER_CATEGORY:
                examples[cat].append(_example(r, model, cat))
    return {
        "categories": list(CATEGORIES),
        "precedence": list(PRECEDENCE),
        "rules": dict(RULES),  # written from the constants classify_error uses
        "counts": counts,
        "accuracy_by_steps": by_steps,
        "step_bucket_max": MAX_STEP_BUCKET,
        "examples": examples,
    }


def analyze_benchmark(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    files = eval_record_files(run_dir)
    if not files:
        return {"available": False, "reason": "no evaluation in this run (no eval/*.jsonl)"}, {}
    records_by_model, models = {}, {}
    for name, path in files.items():
        records = read_eval_records(path)
        summary_path = path.with_name(f"{name}.summary.json")
        summary = _read_json(summary_path) if summary_path.is_file() else {}
        records_by_model[name] = records
        if name.endswith(PROBE_SUFFIX):  # variants with changed numbers: the probe's section, not the benchmark
            continue
        models[name] = model_accuracy(records, summary)
    if not models:
        return {"available": False, "reason": "no benchmark records in this run (eval/ holds only probe variants)"}, \
            records_by_model
    protocols = {m["protocol"] for m in models.values() if m.get("protocol")}
    names = sorted({m.get("data_name") or UNNAMED_DATA for m in models.values()})
    out: dict[str, Any] = {
        "available": True,
        # 'GSM8K' only when the evaluation recorded GSM8K's own data (see data.data_identity).
        "data_name": " / ".join(names),
        "ci_level_pct": CI_LEVEL_PCT,
        "interval": "Wilson score interval",
        "protocol": " | ".join(sorted(protocols)) if protocols else "not recorded",
        "same_protocol": len(protocols) <= 1,
        "models": models,
    }
    if "base" in records_by_model and "tuned" in records_by_model:
        out["paired"] = paired_comparison(records_by_model["base"], records_by_model["tuned"])
    else:
        out["paired"] = {"available": False, "reason": "needs both eval/base.jsonl and eval/tuned.jsonl"}
    return out, records_by_model


# --- contamination ----------------------------------------------------------------------------


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(train_questions: list[str], test_questions: list[str], n: int = NGRAM) -> dict[str, Any]:
    """Per test question, the share of its n-grams that also occur in some training question."""
    train_grams: set[tuple[str, ...]] = set()
    for q in train_questions:
        train_grams |= ngrams(q, n)
    shares = []
    for q in test_questions:
        grams = ngrams(q, n)
        shares.append(len(grams & train_grams) / len(grams) if grams else 0.0)
    with_any = sum(1 for s in shares if s > 0)
    half = sum(1 for s in shares if s >= 0.5)
    bins = [0, 0.0001, 0.25, 0.5, 0.75, 1.0001]
    labels = ["0%", "(0, 25%)", "[25, 50%)", "[50, 75%)", "[75, 100%]"]
    histogram = [sum(1 for s in shares if lo <= s < hi) for lo, hi in zip(bins, bins[1:])]
    return {
        "n": n,
        "train_questions": len(train_questions),
        "test_questions": len(test_questions),
        "test_questions_with_any_overlap": with_any,
        "test_questions_with_any_overlap_pct": _pct(with_any / len(shares)) if shares else None,
        "test_questions_half_overlapping": half,
        "test_questions_half_overlapping_pct": _pct(half / len(shares)) if shares else None,
        "histogram_labels": labels,
        "histogram_counts": histogram,
    }


def analyze_contamination(config: Config | None, records_by_model: dict[str, list[dict]]) -> dict[str, Any]:
    from mathtune.data import load_split

    test_questions = sorted({r["question"] for rs in records_by_model.values() for r in rs if r.get("question")})
    if not test_questions:
        return {"available": False, "reason": "no test questions in eval/*.jsonl"}
    if config is None:
        return {"available": False, "reason": "no config.yaml, so the training data source is unknown"}
    try:
        train = load_split(config.data.source, "train", val_fraction=config.data.val_fraction, seed=config.seed,
                           fmt=config.data.format())
    except MathtuneError as err:
        return {"available": False, "reason": f"training questions not reachable: {err}"}
    sources = [(config.data.source, [p.question for p in train])]
    from mathtune.mix import load_mix_source

    for i, entry in enumerate(config.data.mix):  # every training source, each on its own
        if entry.weight > 0:
            try:
                sources.append((entry.source, [p.question for p in load_mix_source(entry, i)]))
            except MathtuneError as err:
                return {"available": False, "reason": f"training questions of {entry.source} not reachable: {err}"}
    result = ngram_overlap([q for _, qs in sources for q in qs], test_questions)
    per_source = [{"source": source, **{k: v for k, v in ngram_overlap(qs, test_questions).items()
                                        if not k.startswith("histogram")}} for source, qs in sources]
    return {
        "available": True,
        "source": config.data.source,
        "definition": (
            f"share of each test question's word {NGRAM}-grams (lower-cased letters and digits) that "
            "occur in any question of the training split"
            + (" or of a data.mix source" if len(sources) > 1 else "")
        ),
        **result,
        "per_source": per_source,
    }


# --- the seed claim ---------------------------------------------------------------------------


def seed_claim(training: dict, benchmark: dict) -> dict[str, Any]:
    if not training.get("available"):
        return {"available": False, "reason": "no training in this run"}
    tuned = benchmark.get("models", {}).get("tuned") if benchmark.get("available") else None
    if tuned is None:
        return {"available": False, "reason": "no tuned-model evaluation in this run"}
    token_train = training["token_accuracy"]["train"]["end_pct"]
    token_val = training["token_accuracy"]["validation"]["end_pct"]
    exact = tuned["strict"]["accuracy_pct"]
    token = token_val if token_val is not None else token_train
    data_name = tuned.get("data_name") or UNNAMED_DATA
    return {
        "available": True,
        "token_accuracy_train_end_pct": token_train,
        "token_accuracy_validation_end_pct": token_val,
        "gsm8k_exact_match_strict_pct": exact,
        "data_name": data_name,
        "protocol": tuned.get("protocol"),
        "why_they_differ": (
            f"Mean token accuracy ({token}%) is teacher-forced: at every position the model is handed "
            "the gold solution so far and only has to guess the next token, so one wrong digit costs one "
            f"token; exact match on {data_name} ({exact}%) makes the model write the whole solution itself, where "
            "one early mistake carries through to a wrong final number."
        ),
    }


# --- entry --------------------------------------------------------------------------------------


def build_analysis(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MathtuneError(f"run folder not found: {run_dir}")
    config = load_run_config(run_dir)
    training = analyze_training(run_dir, config)
    benchmark, records_by_model = analyze_benchmark(run_dir)
    from mathtune.recipe_analysis import analyze_recipe  # it builds on this module's helpers

    recipe = analyze_recipe(run_dir, config)
    if not training["available"] and not benchmark["available"] and not recipe.get("grpo", {}).get("available"):
        raise MathtuneError(f"{run_dir} holds neither train/metrics.jsonl nor eval/*.jsonl: nothing to analyze")
    errors = analyze_errors(records_by_model) if records_by_model else {"available": False, "reason": benchmark.get("reason")}
    if records_by_model:
        errors["available"] = True
    provenance = run_provenance(run_dir)
    analysis = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "name": config.name if config else run_dir.name,
            # An evaluation-only folder has no config; its summaries still say what ran.
            "base_model": config.model.name_or_path if config else provenance["model"],
            "data_source": config.data.source if config else provenance["data"],
            "report_formats": list(config.report.formats) if config else ["md", "html"],
            "provenance": provenance,
        },
        "config": config.model_dump(mode="json") if config else None,
        "training": training,
        "benchmark": benchmark,
        "errors": errors,
        "recipe": recipe,
        "contamination": analyze_contamination(config, records_by_model),
        # The follow-ups, each from its own module; empty ("available": false) unless the run asked.
        "self_consistency": self_consistency(run_dir, records_by_model),
        "probe": probe_analysis(run_dir, records_by_model),
        "self_check": self_check(records_by_model),
        "regression": regression_analysis(run_dir),
        "seed_claim": seed_claim(training, benchmark),
    }
    from mathtune.plan import plan_vs_actual

    analysis["plan"] = plan_vs_actual(run_dir, training, benchmark)
    analysis["recommendations"] = recommendations(analysis)
    return analysis


def recommendations(analysis: dict) -> list[str]:
    """Next steps, each quoting the numbers it follows from."""
    out = []
    training, benchmark, errors = analysis["training"], analysis["benchmark"], analysis["errors"]
    if training.get("available"):
        out.append(training["recommendation"])
    out += analysis.get("recipe", {}).get("recommendations", [])
    paired = benchmark.get("paired", {}) if benchmark.get("available") else {}
    if paired.get("available"):
        out.append(paired["verdict"])
    if errors.get("available"):
        model = "tuned" if "tuned" in errors["counts"] else next(iter(errors["counts"]))
        counts = errors["counts"][model]
        wrong = sum(counts.values())
        if wrong:
            top = max(CATEGORIES, key=lambda c: (counts[c], -CATEGORIES.index(c)))
            share = _pct(counts[top] / wrong)
            advice = {
                "format_failure": "the answers are there but not stated as '#### N'; fix the prompt or train on the answer format",
                "truncated": "raise eval.max_new_tokens or teach the model to stop",
                "arithmetic_slip": "the reasoning is set up right but computed wrong; a calculator tool or more worked arithmetic in training would target it",
                "missing_or_extra_step": "the chain stops early or runs one step too far; more multi-step training examples would target it",
                "misread_question": "the model solves a different problem; this is reasoning, not format, and needs a stronger base model or more data",
            }[top]
            out.append(
                f"The {model} model's most common error is {top.replace('_', ' ')} ({counts[top]} of {wrong} "
                f"wrong answers, {share}%): {advice}."
            )
    contamination = analysis["contamination"]
    if contamination.get("available") and contamination["test_questions_half_overlapping"]:
        out.append(
            f"Test questions sharing at least half of their {contamination['n']}-grams with training questions: "
            f"{contamination['test_questions_half_overlapping']} of {contamination['test_questions']}; "
            "check them before trusting the benchmark."
        )
    return out


CHECKSUM_KEY = "sha256_of_the_rest"


def _json_text(analysis: dict) -> str:
    return json.dumps(analysis, indent=2, ensure_ascii=False) + "\n"


def check_not_hand_edited(run_dir: Path) -> None:
    """Refuse to replace an analysis.json that someone changed after mathtune wrote it: it
    carries the sha256 of its own text without that one key, and an edit breaks the match."""
    path = Path(run_dir) / "analysis.json"
    if not path.is_file():
        return
    try:
        analysis = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # not JSON: writes are atomic, so no crash of mathtune's left it so
        analysis = None
    if isinstance(analysis, dict) and CHECKSUM_KEY not in analysis:
        return  # written by a mathtune from before the checksum: derived data, rebuilt
    stored = analysis.pop(CHECKSUM_KEY) if isinstance(analysis, dict) else None
    if stored is None or hashlib.sha256(_json_text(analysis).encode()).hexdigest() != stored:
        raise MathtuneError(f"{path} was changed after mathtune wrote it (edited by hand, or by another tool); "
                            "the report is rebuilt from the run's own files: move your copy away, or pass --overwrite")


def run_analysis(run_dir: Path, *, overwrite: bool = False) -> Path:
    """Compute analysis.json from the run folder's files and write it atomically; an
    analysis.json edited since mathtune wrote it is kept unless overwrite is set."""
    run_dir = Path(run_dir)
    if not overwrite:
        check_not_hand_edited(run_dir)
    analysis = build_analysis(run_dir)
    analysis[CHECKSUM_KEY] = hashlib.sha256(_json_text(analysis).encode()).hexdigest()
    path = run_dir / "analysis.json"
    write_atomic(path, _json_text(analysis))
    return path
