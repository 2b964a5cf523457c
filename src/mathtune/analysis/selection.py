"""Validation exact match during training, and which step each rule keeps.

    analyze_selection(run_dir, summary, curves) -> the "exact_match" part of analysis.json's training

With train.select_by exact_match, every validation point of train/metrics.jsonl carries the
strict exact match of the same validation problems (train.accuracy), and
train/val_exact_match.jsonl each point's answers. From them: the accuracy curve with Wilson
intervals; the step the validation loss would keep and the step exact match keeps (as the
Trainer picks them: the first best among the checkpointed points, step 0 excluded), and what
each solved when they differ; what accuracy did over the last validation points, paired on the
problems; and what the decoding cost, as a share of the training time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mathtune.analysis.common import rounded
from mathtune.core.runfiles import read_jsonl_until_torn, read_metrics
from mathtune.core.stats import (difference_points, mcnemar_exact, paired_bootstrap_difference, paired_counts,
                                 wilson_share)
from mathtune.task.train_summary import TrainSummary

TREND_POINTS = 3
"""The accuracy trend compares the first and the last of the last 3 validation points."""


def best_step(points: list[dict], key: str, higher_is_better: bool) -> int | None:
    """The step a Trainer keeps by `key`: the first best among the points after step 0 (step 0
    is the untrained model's validation, with no checkpoint to keep)."""
    best = None
    for p in points:
        if p["step"] == 0 or p.get(key) is None:
            continue
        if best is None or (p[key] > best[key] if higher_is_better else p[key] < best[key]):
            best = p
    return best["step"] if best else None


def read_points(metrics_path: Path) -> list[dict]:
    """The validation points of metrics.jsonl that carry an exact match."""
    return [{"step": r["step"], "eval_loss": r.get("eval_loss"), "correct": r["val_exact_match_correct"],
             "n": r["val_exact_match_problems"], "decode_s": r.get("val_decode_s")}
            for r in read_metrics(metrics_path) if isinstance(r.get("val_exact_match_correct"), int)]


def _answers(run_dir: Path) -> dict[int, dict[str, bool]]:
    """Per validation point, each problem's strict verdict (train/val_exact_match.jsonl)."""
    path = Path(run_dir) / "train" / "val_exact_match.jsonl"
    return {row["step"]: {a["id"]: bool(a["correct_strict"]) for a in row["answers"]}
            for row in read_jsonl_until_torn(path)} if path.is_file() else {}


def accuracy_trend(points: list[dict], answers: dict[int, dict[str, bool]]) -> dict[str, Any]:
    """Strict exact match at the first and the last of the last TREND_POINTS validation points,
    and the change between them, paired on the same problems."""
    window = points[-TREND_POINTS:]
    if len(window) < 2:
        return {"available": False, "reason": f"{len(points)} validation point(s) with exact match; the trend needs 2"}
    first, last = window[0], window[-1]
    out: dict[str, Any] = {"available": True, "points": len(window), "from_step": first["step"],
                           "to_step": last["step"], "start": wilson_share(first["correct"], first["n"]),
                           "end": wilson_share(last["correct"], last["n"])}
    a, b = answers.get(first["step"]), answers.get(last["step"])
    if a and b and a.keys() == b.keys():
        ids = sorted(a)
        before, after = [a[i] for i in ids], [b[i] for i in ids]
        change = difference_points(*paired_bootstrap_difference(before, after))
        counts = paired_counts(before, after)
        lo, hi = change["ci95_points"]
        verdict = ("more problems solved" if lo > 0 else "fewer problems solved" if hi < 0 else
                   "no change in problems solved shown")
        out.update(change=change, paired_problems=len(ids), solved=counts["improved"], lost=counts["regressed"],
                   mcnemar_p=round(mcnemar_exact(counts["improved"], counts["regressed"]), 4), verdict=verdict)
    else:
        out.update(change=None, verdict="not paired")
    return out


def analyze_selection(run_dir: Path, summary: TrainSummary | None, wall_time_s: float | None) -> dict[str, Any]:
    metrics_path = Path(run_dir) / "train" / "metrics.jsonl"
    points = read_points(metrics_path) if metrics_path.is_file() else []
    if not points:
        return {"available": False, "select_by": summary.select_by if summary else "eval_loss",
                "reason": "no validation exact match in this run (train.select_by: exact_match measures it)"}
    by_loss = best_step(points, "eval_loss", higher_is_better=False)
    by_accuracy = best_step(points, "correct", higher_is_better=True)
    at = {p["step"]: p for p in points}
    disagreement = None  # the two rules' steps with what each solved, where they differ
    if by_loss is not None and by_accuracy is not None and by_loss != by_accuracy:
        disagreement = {rule: {"step": step, "correct": at[step]["correct"], "n": at[step]["n"]}
                        for rule, step in (("by_loss", by_loss), ("by_exact_match", by_accuracy))}
    decode = sum(p["decode_s"] or 0.0 for p in points)
    return {
        "available": True,
        "select_by": summary.select_by if summary else "eval_loss",
        "problems": points[-1]["n"],
        "points": [{"step": p["step"], "eval_loss": rounded(p["eval_loss"], 4), **wilson_share(p["correct"], p["n"])}
                   for p in points],
        "best_step_by_loss": by_loss,
        "best_step_by_exact_match": by_accuracy,
        "kept_step": summary.best_step if summary else None,
        "disagreement": disagreement,
        "trend": accuracy_trend(points, _answers(run_dir)),
        "decode_s": rounded(decode, 1),
        "decode_share_pct": rounded(100 * decode / wall_time_s, 1) if wall_time_s else None,
    }
