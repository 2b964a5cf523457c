"""What the chat-verify prompt's self-check turn did, paired on the same problems.

    self_check(records_by_model) -> the "self_check" part of analysis.json

For every evaluation run with `prompt: chat-verify`, each record holds the first answer
(`first_turn`) and the answer after the model was asked to check its work (the record's own
fields). Paired on the problem: how many answers the check fixed (wrong, then right), how
many it broke (right, then wrong), the net change in strict accuracy with a paired bootstrap
interval, and McNemar's exact test on the discordant pairs.
"""

from __future__ import annotations

from mathtune.stats import difference_points, mcnemar_exact, paired_bootstrap_difference, paired_counts, points_text
from mathtune.stats import wilson_share as share

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def check_turn_effect(records: list[dict]) -> dict:
    first = [bool(r["first_turn"]["correct_strict"]) for r in records]
    final = [bool(r["correct_strict"]) for r in records]
    counts = paired_counts(first, final)
    fixed, broken = counts["improved"], counts["regressed"]
    changed = sum(r["first_turn"]["pred_strict"] != r["pred_strict"] for r in records)
    diff, lo, hi = paired_bootstrap_difference(first, final, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
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


def self_check(records_by_model: dict[str, list[dict]]) -> dict:
    checked = {name: recs for name, recs in records_by_model.items()
               if recs and all(isinstance(r.get("first_turn"), dict) for r in recs)}
    if not checked:
        return {"available": False, "reason": "no evaluation here used the chat-verify prompt "
                                              "(set eval.prompt: chat-verify, or mathtune eval --prompt chat-verify)"}
    return {"available": True, "models": {name: check_turn_effect(recs) for name, recs in checked.items()},
            "definitions": {
                "fixed": "strictly wrong after the first turn, strictly right after the check",
                "broken": "strictly right after the first turn, strictly wrong after the check",
                "net_change": "final-turn minus first-turn strict accuracy, points, with a paired bootstrap "
                              f"95% interval ({BOOTSTRAP_RESAMPLES:,} resamples of the problems)"}}
