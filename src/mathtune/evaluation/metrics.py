"""Accuracy figures computed from scored records, shared by the benchmark's closing lines and
the analysis: accuracy with Wilson intervals, maj@k and pass@k over recorded samples, and what a
self-check turn changed.

    accuracy_figures(records)   -> n, strict and flexible accuracy and their intervals
    curve(records, "strict")    -> maj@k and pass@k rows for k = 1, 2, 4, ... K
    check_turn_effect(records)  -> fixed, broken and the net change of chat-verify's second turn

maj@k: the majority answer of a problem's first k samples (ties to the answer drawn first) is
right; pass@k: at least one of them is right, the ceiling a perfect verifier could reach.
Written here rather than taken from lm-evaluation-harness: its `maj@k` filter scores one k per
task run, and neither it nor TRL computes pass@k beside maj@k from one set of samples.
"""

from __future__ import annotations

from mathtune.core.stats import (difference_points, mcnemar_exact, paired_bootstrap_difference, paired_counts,
                                 points_text, wilson_interval)
from mathtune.core.stats import wilson_share as share
from mathtune.task.score import majority_vote, numbers_equal

def accuracy_figures(records: list[dict]) -> dict:
    """n, strict and flexible accuracy, and their Wilson intervals, of scored records."""
    n = len(records)
    out: dict = {"n": n}
    counts = {kind: sum(r[f"correct_{kind}"] for r in records) for kind in ("strict", "flexible")}
    out.update({f"accuracy_{kind}": c / n for kind, c in counts.items()})
    out.update({f"ci95_{kind}": list(wilson_interval(c, n)) for kind, c in counts.items()})
    return out


def ks_for(samples: int) -> list[int]:
    """1, 2, 4, ... up to samples, and samples itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples]


def same_answer(a: str | None, b: str | None) -> bool:
    """Two extracted answers agree: both absent, or the same number."""
    if a is None or b is None:
        return a is None and b is None
    return numbers_equal(a, b)


def curve(records: list[dict], kind: str = "strict") -> list[dict]:
    """maj@k and pass@k rows for records that each carry the same number of samples."""
    K = min(len(r["samples"]) for r in records)
    rows = []
    for k in ks_for(K):
        maj = sum(numbers_equal(majority_vote([s[f"pred_{kind}"] for s in r["samples"][:k]]), r["gold"])
                  for r in records)
        any_right = sum(any(s[f"correct_{kind}"] for s in r["samples"][:k]) for r in records)
        rows.append({"k": k, "maj": share(maj, len(records)), "pass": share(any_right, len(records))})
    return rows


def check_turn_effect(records: list[dict]) -> dict:
    first = [bool(r["first_turn"]["correct_strict"]) for r in records]
    final = [bool(r["correct_strict"]) for r in records]
    counts = paired_counts(first, final)
    fixed, broken = counts["improved"], counts["regressed"]
    changed = sum(r["first_turn"]["pred_strict"] != r["pred_strict"] for r in records)
    diff, lo, hi = paired_bootstrap_difference(first, final)
    p = mcnemar_exact(fixed, broken)
    net = difference_points(diff, lo, hi)
    covers_zero = lo <= 0 <= hi
    verdict = (f"The self-check turn fixed {fixed} and broke {broken} of {len(records)} answers: net "
               f"{points_text(net)}, McNemar p {p:.3f}; "
               + ("the interval covers zero, so no effect is shown at this size." if covers_zero else
                  "the interval excludes zero."))
    return {"n": len(records), "first_turn": share(sum(first), len(records)), "final_turn": share(sum(final), len(records)),
            "fixed": fixed, "broken": broken, "answer_changed": changed, "net_change": net,
            "mcnemar_p": round(p, 4), "verdict": verdict}
