"""What marks a diverged training step, for the trainer that stops at it (train.divergence) and
the analysis that finds it again in train/metrics.jsonl (analysis.training)."""

from __future__ import annotations

import math

# The logged figures whose non-finite value means the weights can no longer be trusted.
WATCHED = ("loss", "grad_norm", "eval_loss")


def non_finite(value) -> bool:
    """A logged number that is NaN or infinite (a bool or a missing value is neither)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value)


def first_non_finite(rows: list[dict], watched: tuple[str, ...] = WATCHED) -> dict | None:
    """The first row with a non-finite watched figure, as {step, metric, value} (value as text:
    'nan', 'inf'), or None."""
    for row in rows:
        for key in watched:
            if non_finite(row.get(key)):
                return {"step": row.get("step"), "metric": key, "value": str(float(row[key]))}
    return None
