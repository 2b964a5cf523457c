"""Audit of the robustness probe's variants on a whole test set: generation only, no model.

    python bench/probe_variants_audit.py [--kind numbers|names|magnitudes] [--data ../shared/gsm8k]
                                         [--seed 42] [--variants 1] [--sample 30]

Builds the variants exactly as `mathtune probe` does (task.variants.build_variants), then checks
each one as an outside reader would and prints the counts as JSON: variants kept, draws turned
down per rule, problems skipped per reason, numbers held per rule, and the audit's findings
(each should be 0): a '1' before a plural noun that the original did not have, a 1 of the
question changed, a fraction changed, a held unit fact or year changed, distinct numbers made
equal, an annotation that does not recompute or a gold that is not the last step's result;
for --kind names: digits or gold changed, or no name changed; for magnitudes also a changed
number below ten times its original.
--sample N prints N variants beside their originals for reading.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

from mathtune.task.data import Problem, load_split
from mathtune.task.variants import FRACTION, build_variants, held_numbers, parse_chain, question_numbers

ONE_PLURAL = re.compile(r"(?<![\d.,/$])\b1 ([a-z]+(?<![su])s)\b")


DIGITS = re.compile(r"\d+")
# The text classes a careful writer would not sign (each should be 0).
MONEY_4_DIGITS = re.compile(r"\$\d{4,}(?:\.\d\d)?\b")
TIME_NUMBER = re.compile(r"\b(\d[\d,]*(?:\.\d+)?)[\s-]*(?:hours?|days?|weeks?|months?|years?)\b", re.I)
HOURS_A_DAY = re.compile(r"\b(\d[\d,]*(?:\.\d+)?)\s*hours?\s+(?:a|per|each|every)\s+day\b", re.I)
CLOCK_NUMBER = re.compile(r"\b(\d{1,2}(?::\d\d)?)\s*(?:am|pm|a\.m\.|p\.m\.|o'clock)", re.I)
AGE = re.compile(r"\b(\d[\d,]*)[\s-]*years?[\s-]*old\b|\bage (?:of )?(\d[\d,]*)", re.I)
PARTS = re.compile(r"\b(\d+)[\s-]+(?:legs?|wheels?|sides?|wings?)\b", re.I)
PLACE = re.compile(r"\b(?:San|Santa|St\.?|Mount|Lake|Fort|Port)\s+([A-Z][a-z]+)|\b([A-Z][a-z]+)(?:'s)?\s+(?:Street|"
                   r"Avenue|Road|County|City|Park|River|Island|Beach|School|Store|Restaurant|Pizza|Bakery|Market)\b")
TITLE = re.compile(r"\b(Mr\.?|Mrs\.?|Ms\.?|Miss|brother|sister|son|daughter|wife|husband|mother|father|uncle|aunt)"
                   r",?\s+([A-Z][a-z]+)\b")
MALE_TITLES = {"Mr", "Mr.", "brother", "son", "husband", "father", "uncle"}


def _text_classes(original: str, question: str, kind: str) -> Counter:
    """The classes of text no careful writer would sign, found in a numbers or magnitudes variant."""
    found = Counter()
    found["money_without_separator_added"] += bool(
        kind == "magnitudes" and set(MONEY_4_DIGITS.findall(question)) - set(MONEY_4_DIGITS.findall(original)))
    found["clock_time_changed"] += CLOCK_NUMBER.findall(question) != CLOCK_NUMBER.findall(original)
    found["hours_a_day_over_24"] += any(Fraction(h.replace(",", "")) > 24 for h in HOURS_A_DAY.findall(question))
    found["age_over_100"] += any(Fraction((a or b).replace(",", "")) > 100 for a, b in AGE.findall(question))
    found["parts_of_a_thing_changed"] += PARTS.findall(question) != PARTS.findall(original)
    if kind == "magnitudes":
        found["time_scaled"] += TIME_NUMBER.findall(question) != TIME_NUMBER.findall(original)
    return found


def _name_classes(original: str, row: dict) -> Counter:
    """Places renamed, titles that no longer fit, old names left in any casing."""
    from mathtune.task.renaming import GENDER

    found = Counter()
    places = {n for m in PLACE.finditer(original) for n in m.groups() if n}
    found["place_renamed"] += bool(places & set(row["changed"]))
    found["title_disagrees"] += any(GENDER.get(name) in ("male", "female")
                                    and GENDER[name] != ("male" if title in MALE_TITLES else "female")
                                    for title, name in TITLE.findall(row["question"]) if name in row["changed"].values())
    found["old_name_left_any_casing"] += any(re.search(rf"\b{old}\b", row["question"] + row["answer"], re.I)
                                             for old in row["changed"])
    return found


def audit(problems: list[Problem], rows: list[dict]) -> Counter:
    by_id = {p.id: p for p in problems}
    found = Counter()
    for row in rows:
        original = by_id[row["original_id"]]
        if row["kind"] == "names":
            found["names_digits_changed"] += DIGITS.findall(row["question"]) != DIGITS.findall(original.question)
            found["names_gold_changed"] += row["answer"].rsplit("#### ", 1)[1] != original.answer.rsplit("#### ", 1)[1]
            found["names_none_changed"] += not row["changed"] or any(
                re.search(rf"\b{old}\b", row["question"]) for old in row["changed"])
            found.update(_name_classes(original.question, row))
            continue
        found.update(_text_classes(original.question, row["question"], row["kind"]))
        if row["kind"] == "magnitudes":
            found["magnitudes_below_10x"] += any(Fraction(new.replace(",", "")) < 10 * Fraction(old.replace(",", ""))
                                                 for old, new in row["changed"].items())
        if Counter(ONE_PLURAL.findall(row["question"])) - Counter(ONE_PLURAL.findall(original.question)):
            found["one_before_a_plural_added"] += 1
        if "1" in row["changed"]:
            found["a_1_changed"] += 1
        if FRACTION.findall(row["question"]) != FRACTION.findall(original.question):
            found["fraction_changed"] += 1
        held, _ = held_numbers(original.question, question_numbers(original.question))
        if any(rule in ("unit_fact", "year") and str(v) in row["changed"] for v, rule in held.items()):
            found["unit_fact_or_year_changed"] += 1
        before = {v for *_, v, _ in question_numbers(original.question)}
        after = [v for *_, v, _ in question_numbers(row["question"])]
        if len(set(after)) < len(before):
            found["distinct_numbers_made_equal"] += 1
        gold = row["answer"].rsplit("#### ", 1)[1]
        steps, why = parse_chain(Problem(row["id"], row["question"], row["answer"], gold))
        if why is not None or str(steps[-1].result) != gold.replace(",", ""):
            found["chain_does_not_recompute"] += 1
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/gsm8k"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--variants", type=int, default=1)
    ap.add_argument("--sample", type=int, default=0)
    ap.add_argument("--kind", default="numbers", choices=["numbers", "names", "magnitudes"])
    args = ap.parse_args()
    problems = load_split(str(args.data), "test")
    rows, summary = build_variants(problems, variants=args.variants, seed=args.seed, kinds=[args.kind])
    counts = summary["by_kind"][args.kind]
    findings = audit(problems, rows)
    by_id = {p.id: p for p in problems}
    for row in random.Random(0).sample(rows, min(args.sample, len(rows))):
        print(f"--- {row['original_id']} {row['changed']}\n  was: {by_id[row['original_id']].question}\n"
              f"  now: {row['question']}\n  gold {by_id[row['original_id']].gold} -> {row['answer'].rsplit('#### ', 1)[1]}")
    checks = ("names_digits_changed", "names_gold_changed", "names_none_changed", "place_renamed",
              "title_disagrees", "old_name_left_any_casing") if args.kind == "names" else (
        "one_before_a_plural_added", "a_1_changed", "fraction_changed", "unit_fact_or_year_changed",
        "distinct_numbers_made_equal", "chain_does_not_recompute", "money_without_separator_added",
        "clock_time_changed", "hours_a_day_over_24", "age_over_100", "parts_of_a_thing_changed") + (
        ("magnitudes_below_10x", "time_scaled") if args.kind == "magnitudes" else ())
    print(json.dumps({"kind": args.kind, "problems": len(problems), "kept": counts["kept"],
                      "variants": counts["variants"], "draws_rejected": counts.get("draws_rejected"),
                      "held": counts.get("held"), "skipped": counts["skipped"],
                      "audit": {k: findings[k] for k in checks}}))


if __name__ == "__main__":
    main()
