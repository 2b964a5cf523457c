"""Statistics for accuracy on a fixed set of problems.

Wilson intervals for one model; for two models on the same problems, paired statistics
(they share the problems, so two separate intervals overstate the uncertainty).
"""

from __future__ import annotations

import math

import numpy as np

# Every paired bootstrap in mathtune resamples this many times with this seed, so that an
# interval is the same number wherever it is shown.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (good near 0 and 1, unlike Wald)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly 0 or 1; the formula leaves float dust there.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def wilson_share(hits: int, n: int) -> dict:
    """hits of n as analysis.json shows an accuracy: percent and 95% Wilson interval, rounded."""
    if not n:
        return {"correct": hits, "n": n, "accuracy_pct": None, "ci95_pct": [None, None]}
    lo, hi = wilson_interval(hits, n)
    return {"correct": hits, "n": n, "accuracy_pct": round(100 * hits / n, 1),
            "ci95_pct": [round(100 * lo, 1), round(100 * hi, 1)]}


def difference_points(diff: float, lo: float, hi: float) -> dict:
    """A paired difference of accuracies (fractions) and its interval, as points rounded to 0.1."""
    return {"points": round(100 * diff, 1), "ci95_points": [round(100 * lo, 1), round(100 * hi, 1)]}


def signed(value: float, digits: int = 1) -> str:
    """'+1.5', '-2.0', and '0.0' for no change (never '+0.0' or '-0.0')."""
    text = f"{value:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 problem', '2 problems', '0 problems'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def points_text(d: dict) -> str:
    """'-3.0 points [-8.0, 1.0]' for a difference_points dict."""
    return f"{signed(d['points'])} points [{d['ci95_points'][0]}, {d['ci95_points'][1]}]"


def mcnemar_exact(improved: int, regressed: int) -> float:
    """Two-sided exact McNemar p-value: under "no difference" each discordant problem
    (right for one model only) is a fair coin, so the improved count is Binomial(b + c, 1/2).
    1.0 when there are no discordant problems."""
    from scipy.stats import binomtest

    discordant = improved + regressed
    if discordant == 0:
        return 1.0
    return float(binomtest(improved, discordant, 0.5, alternative="two-sided").pvalue)


def p_value_text(p: float | None) -> str:
    """A p-value as every table of mathtune shows it: '0.688', '1.000', '< 0.001'."""
    if p is None:
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired_bootstrap_difference(
    correct_a: list[bool], correct_b: list[bool], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> tuple[float, float, float]:
    """(mean(b) - mean(a), lo, hi): percentile interval of the accuracy difference, resampling
    problems (pairs) with replacement, so the correlation between the two models is kept."""
    a = np.asarray(correct_a, dtype=np.int8)
    b = np.asarray(correct_b, dtype=np.int8)
    if a.shape != b.shape:
        raise ValueError("paired bootstrap needs the same problems for both models")
    n = len(a)
    if n == 0:
        return (0.0, 0.0, 0.0)
    per_problem = (b - a).astype(np.float64)
    rng = np.random.default_rng(seed)
    # Resample in chunks: resamples x n indices at once can be hundreds of MB for 1,319 problems.
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = per_problem[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(per_problem.mean()), float(lo), float(hi))


def paired_counts(correct_a: list[bool], correct_b: list[bool]) -> dict[str, int]:
    """Problems improved (a wrong, b right), regressed (a right, b wrong), and the two ties."""
    pairs = list(zip(correct_a, correct_b, strict=True))
    return {
        "improved": sum(1 for x, y in pairs if not x and y),
        "regressed": sum(1 for x, y in pairs if x and not y),
        "both_right": sum(1 for x, y in pairs if x and y),
        "both_wrong": sum(1 for x, y in pairs if not x and not y),
    }


def linear_change_pct(xs: list[float], ys: list[float]) -> float | None:
    """Relative change of a least-squares line fitted to (xs, ys), from its value at the first
    x to its value at the last, in % of the first (negative = falling). A fitted line is
    far less noisy than comparing two single logged losses. None with fewer than 2 points."""
    if len(xs) < 2 or xs[0] == xs[-1]:
        return None
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    start = slope * xs[0] + intercept
    end = slope * xs[-1] + intercept
    if start == 0:
        return None
    return float((end - start) / abs(start) * 100)
