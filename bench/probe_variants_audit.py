"""Audit of the robustness probe's variants on a whole test set: generation only, no model.

    python bench/probe_variants_audit.py [--data ../shared/gsm8k/test.jsonl] [--seed 42] [--variants 1]
                                         [--sample 30]

Builds the variants exactly as `mathtune probe` does (task.variants.build_variants), then checks
each one as an outside reader would and prints the counts as JSON: variants kept, draws turned
down per rule, problems skipped per reason, numbers held per rule, and the audit's findings
(each should be 0): a '1' before a plural noun that the original did not have, a 1 of the
question changed, a fraction changed, a held unit fact or year changed, distinct numbers made
equal, an annotation that does not recompute or a gold that is not the last step's result.
--sample N prints N variants beside their originals for reading.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

from mathtune.task.data import Problem, load_split
from mathtune.task.variants import FRACTION, build_variants, held_numbers, parse_chain, question_numbers

ONE_PLURAL = re.compile(r"(?<![\d.,/$])\b1 ([a-z]+(?<![su])s)\b")


def audit(problems: list[Problem], rows: list[dict]) -> Counter:
    by_id = {p.id: p for p in problems}
    found = Counter()
    for row in rows:
        original = by_id[row["original_id"]]
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
    args = ap.parse_args()
    problems = load_split(str(args.data), "test")
    rows, counts = build_variants(problems, variants=args.variants, seed=args.seed)
    findings = audit(problems, rows)
    by_id = {p.id: p for p in problems}
    for row in random.Random(0).sample(rows, min(args.sample, len(rows))):
        print(f"--- {row['original_id']} {row['changed']}\n  was: {by_id[row['original_id']].question}\n"
              f"  now: {row['question']}\n  gold {by_id[row['original_id']].gold} -> {row['answer'].rsplit('#### ', 1)[1]}")
    print(json.dumps({"problems": counts["problems"], "kept": counts["kept"], "variants": counts["variants"],
                      "draws_rejected": counts["draws_rejected"], "held": counts["held"],
                      "skipped": counts["skipped"], "audit": {k: findings[k] for k in (
                          "one_before_a_plural_added", "a_1_changed", "fraction_changed", "unit_fact_or_year_changed",
                          "distinct_numbers_made_equal", "chain_does_not_recompute")}}, indent=1))


if __name__ == "__main__":
    main()
