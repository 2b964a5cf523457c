"""The hand audit of the probe's variants: a seeded sample over GSM8K's test split, each variant
solved from its text alone by a reader who never saw the probe's chain, the answer recorded
beside the gold the probe wrote (probe_audit.json beside this file).

    hand_audit(kind, rules_version) -> {checked, wrong, upper95_pct, ...} or None
    draw_sample(rows, per_kind, seed) -> the audited variants, as the audit drew them

How the sample was drawn, so that anyone can draw it again: the probe's variants of all 1,319
test problems (`build_variants(problems, variants=1, seed=42, kinds=[numbers, names,
magnitudes])`), then for each kind in the order numbers, magnitudes, names,
`random.Random(sample_seed).sample(variants of that kind, sizes[kind])` with one generator carried
from kind to kind (100 numbers, 100 magnitudes and 64 names variants). tests/test_probe_audit.py draws it again and checks that the probe still
writes each audited variant, question and gold, as it was solved.

The upper bound is the exact one-sided 95% bound on the rate of wrong golds (Clopper-Pearson):
0 wrong of 100 bounds the rate below 3.0%, and 0 of 64 below 4.6%.
"""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

AUDIT_FILE = Path(__file__).with_name("probe_audit.json")


@cache
def load_audit() -> dict:
    return json.loads(AUDIT_FILE.read_text())


def draw_sample(rows: list[dict], sizes: dict[str, int], seed: int) -> list[dict]:
    """The variants the audit solves: sizes[kind] of each kind, the kinds in the order `sizes`
    lists them, drawn as the module says."""
    rng = random.Random(seed)
    sample = []
    for kind in sizes:
        sample += rng.sample([r for r in rows if r["kind"] == kind], sizes[kind])
    return sample


def upper_bound_pct(wrong: int, checked: int) -> float:
    """Exact one-sided 95% upper bound on a rate seen `wrong` times in `checked`, in percent."""
    from scipy.stats import beta

    return round(100 * float(beta.ppf(0.95, wrong + 1, checked - wrong)), 1) if wrong < checked else 100.0


def hand_audit(kind: str, rules_version: int | None) -> dict | None:
    """The audit of one kind of variant, or None when none was made under these rules."""
    audit = load_audit()
    if rules_version != audit["rules_version"]:
        return None
    items = [i for i in audit["items"] if i["kind"] == kind]
    if not items:
        return None
    wrong = sum(not i["gold_right"] for i in items)
    return {"checked": len(items), "wrong": wrong, "upper95_pct": upper_bound_pct(wrong, len(items)),
            "sample_seed": audit["sample_seed"], "probe_seed": audit["probe_seed"], "date": audit["date"],
            "drawn_from": audit["drawn_from"], "rules_version": audit["rules_version"]}
