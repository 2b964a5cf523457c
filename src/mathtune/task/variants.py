"""The robustness probe's variants: the same problems with other numbers, in the spirit of
GSM-Symbolic and GSM-Plus.

    build_variants(problems, variants=N, seed=S, kinds=[numbers, names, magnitudes])
                                                 -> (variant problems, what was kept and skipped per kind)
    write_variants(out_dir, problems, ...)       -> OUT/probe/, a data folder any evaluator reads

(analysis.followup_measures pairs a model's records on the variants with its records on the originals.)

A GSM8K solution carries calculator annotations, `<<48/2=24>>`, one per step. A variant gives
the question's numbers new values, recomputes every step in order with the safe arithmetic
parser (never `eval`), and takes the last step's result as the new gold answer. That gold is
right only when every number of the chain is accounted for beyond doubt, which task.chain
checks: a problem whose chain has a step in prose, an unexplained constant or an operand that
could come from two places is skipped under a named reason, never guessed at. A variant
is kept only when it makes senseA variant
is kept only when it makes sense: every step's result stays positive where the original's
was, whole where the original's was whole (no division leaves a fraction the original did
not have), with no more decimals than the original's, and numbers the question keeps apart
stay apart (4 inch and 2 inch heels do not both become 3 inch: that is another problem, or a
trivial one); otherwise another draw is tried.

A variant is also one a careful writer would sign:
- Number agreement: a count is never drawn as 1, and a 1 of the question is never changed.
  "1 hours" and "2 hour" are what changing the noun with the count avoids, but that takes
  inflecting any English noun (person/people, foot/feet) and the verbs that agree with it
  ("1 customer buys", "2 customers buy"); holding the 1 loses little and is always right.
- A fraction written a/b is one value: its parts are never drawn (nor traced to the calculation
  as numbers of the question), so "1/4 of the seniors" and "3/4ths" stay as they are while the
  question's other numbers change.
- A number stated as a fact of the calendar or of units ("28 days in the month", "12 inches in
  a foot", task.stated_facts), a year ("in 2019"), a number that names a thing ("2 x 4" lumber,
  "$20 bills", "Route 66", a date, a range "grades 4 - 7") and a time of the clock ("3 pm") are
  held; a number a unit bounds ("8 hours a day", "12 years old") is drawn within the bound.
- Magnitudes scale quantities only: percentages, multipliers, times (the calendar and the clock
  do not scale) are held, questions about ages are skipped, and money keeps its separators
  ("$3,000.00").
- Names rename people only (task.renaming): never a place or a business, with titles and
  relations that agree, and no old name left in any casing.
Draws these rules turn down are counted by rule in the summary, beside the skip reasons.

Written here because neither lm-evaluation-harness nor the GSM-Symbolic release builds
variants from GSM8K's own annotations; their templates are written by hand.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from fractions import Fraction
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.probe_kinds import PROBE_KIND_TABLE
from mathtune.core.runfiles import jsonl_text, write_atomic
from mathtune.task.chain import (CHAIN_HELD_RULES, CHAIN_SKIP_REASONS, FRACTION, Chain, parse_chain,
                                  question_numbers, trace)
from mathtune.task.data import Problem
from mathtune.task.implied import naming_spans, time_spans
from mathtune.task.probe_summary import ProbeSummary, write_probe_summary
from mathtune.task.renaming import RENAME_SKIP_REASONS, rename_people
from mathtune.task.stated_facts import fixed_numbers
from mathtune.task.taxonomy import evaluate_arithmetic

__all__ = ["FRACTION", "build_variants", "format_number", "parse_chain", "question_numbers", "write_variants"]

MAGNITUDE_FACTORS = (10, 100, 1000)
DRAWS = 200  # draws tried for each variant before the problem counts as having no sensible variant
MAX_VALUE = 10**9  # a recomputed step larger than this is not a grade-school quantity

# What a variant's rules count. The rules version is kept in the probe's summary: variants made
# under other rules are refused, never mixed with these (pipeline.ensure_variants).
RULES_VERSION = 3
# GSM8K test problems whose published solution misreads its own question, found by the hand
# audit (task.probe_audit): a variant recomputed through that solution would carry the misreading.
# Keyed by the first 16 hex digits of the question's SHA-256, so that no other data set's ids
# can match by chance.
DISPUTED_ORIGINALS = {
    "fd00105695254e90": "54 students in six groups of equal size make 6 groups of 9, which the solution counts as 9 groups",
    "fbfe67e3ade2b0bd": "Ahmed read half of Ezra's books of this hour; the solution halves Ezra's books with the ones "
                        "he decided to read later",
    "18becb25c8a05be7": "whole flagstones of 75 pounds fill a 2,000-pound truck with 26, so 80 need 4 trucks; the "
                        "solution divides the total weight and answers 3",
}
SKIP_REASONS = {
    **CHAIN_SKIP_REASONS,
    "original_gold_disputed": "the published solution misreads its own question (found by the hand audit); a variant "
                              "would carry the misreading",
    "numbers_collapse": f"every sensible draw in {DRAWS} made two distinct numbers of the question equal",
    "no_sensible_variant": f"no sensible variant in {DRAWS} draws",
    "nothing_to_scale": "every number of the calculation is a percentage, a time, a multiplier, held, or bounded "
                        "by its unit",
    "ages": "the question is about ages, which a larger scale would put beyond a human life",
    "no_person_name": "no person's name from the list of first names in the question",
    **RENAME_SKIP_REASONS,
}
# The rules a draw must pass beyond recomputing; a draw turned down is drawn again.
DRAW_RULES = {
    "count_of_one": "a number drawn as 1 (its noun would lose its number: '1 hours')",
    "beyond_unit_bound": "a number drawn past what its unit allows (more than 24 hours a day, 7 days a week, age 100)",
    "numbers_collapse": "two distinct numbers of the question made equal",
    "share_over_whole": "an answer asked as a percentage of a whole drawn past 100% (a 5-hour day spent 10 hours "
                        "cleaning)",
}
# Numbers of the question left as they are, by rule.
HELD_RULES = {
    "one": "a 1 (its noun is singular)",
    "unit_fact": "a fact of the calendar or of units ('28 days in the month', '12 inches in a foot')",
    "year": "a year of the calendar ('in 2019')",
    "fraction": "a fraction a/b, one value whose parts are not drawn",
    "name": "a number that names a thing ('2 x 4' lumber, 'Route 66', a date), not a quantity",
    "clock": "a time of the clock ('3 pm', '7:30')",
    "parts": "how many parts a kind of thing has ('spiders with 8 legs', 'a 6-sided die')",
    **CHAIN_HELD_RULES,
}


def _decimals(value: Fraction) -> int | None:
    """Decimal places of a terminating decimal; None when it does not terminate."""
    d = value.denominator
    for places in range(0, 7):
        if (10**places) % d == 0:
            return places
    return None


def format_number(value: Fraction, like: str = "") -> str:
    """A value as a question or a solution writes it: '1,200' when `like` had a comma, '2.5';
    two decimals where `like` had two."""
    places = _decimals(value) or 0
    if "." in like and len(like.split(".")[1]) == 2 and places <= 2:
        places = 2  # money keeps its cents: '$0.75' becomes '$0.50', not '$0.5'
    if "," in like:  # thousands separated as the question separates them: '$3,000.00'
        return f"{float(value):,.{places}f}" if places else f"{value.numerator // value.denominator:,}"
    return f"{float(value):.{places}f}" if places else str(value.numerator // value.denominator)


def recompute(steps: list, values: dict[Fraction, Fraction]) -> list[tuple[str, Fraction]] | None:
    """Each step's expression and result with the question's numbers replaced; None when a
    step stops making sense (see the module's docstring)."""
    done: list[tuple[str, Fraction]] = []
    for step in steps:
        expr, shift = step.expr, 0
        for op in step.operands:
            if op.kind == "question":
                new = values.get(op.value, op.value)
            elif op.kind == "step":
                new = done[op.step][1]
            else:
                continue
            text = format_number(new)
            if new < 0:
                text = f"({text})"
            expr = expr[: op.start + shift] + text + expr[op.end + shift:]
            shift += len(text) - (op.end - op.start)
        try:
            result = evaluate_arithmetic(expr)
        except ValueError:
            return None
        if abs(result) > MAX_VALUE:
            return None
        if step.result > 0 and result <= 0 or step.result >= 0 and result < 0:
            return None
        places, new_places = _decimals(step.result), _decimals(result)
        if new_places is None or places is None or new_places > places:
            return None  # whole stays whole; 2.5 may become 3.5 or 4, not 3.33...
        done.append((expr.strip(), result))
    return done


def _candidates(value: Fraction, is_percent: bool) -> list[Fraction]:
    """Values a question number may take: same kind and magnitude (roughly half to one and a
    half times it), keeping its decimal places and its roundness (multiples of 10 or 5)."""
    places = _decimals(value) or 0
    unit = Fraction(1, 10**places)
    scaled = value / unit
    step = 1
    if places == 0:
        while scaled % (step * 10) == 0 and scaled // (step * 10) >= 2:
            step *= 10  # 50,000 moves in steps of 10,000; 60 in steps of 10
        if step == 1 and scaled >= 10 and scaled % 5 == 0:
            step = 5
    lo = max(step, math.ceil(scaled * Fraction(1, 2) / step) * step)
    hi = max(lo + 2 * step, math.floor(scaled * Fraction(3, 2) / step) * step)
    out = [Fraction(n) * unit for n in range(lo, hi + 1, step) if Fraction(n) * unit != value]
    if is_percent:
        out = [v for v in out if 0 < v <= 100]
    return out


def collapses(values: dict[Fraction, Fraction], originals: set[Fraction]) -> bool:
    """Whether the new values make two numbers of the question equal that were distinct: two
    changed ones, or a changed one and one left as it was."""
    new = [values.get(v, v) for v in originals]
    return len(set(new)) < len(new)


def question_key(question: str) -> str:
    """The key of DISPUTED_ORIGINALS: the first 16 hex digits of the question's SHA-256."""
    return hashlib.sha256(question.encode()).hexdigest()[:16]


def held_numbers(question: str, numbers: list) -> tuple[dict[Fraction, str], dict[Fraction, int]]:
    """(values held with the rule that holds them, upper bounds of the others) for a question's
    numbers. A value held anywhere is held everywhere: a variant changes values, not places."""
    spans, bounds_at = fixed_numbers(question)
    spans = {**naming_spans(question), **spans}
    held: dict[Fraction, str] = {}
    bounds: dict[Fraction, int] = {}
    for start, end, value, _ in numbers:
        if value == 1:
            held[value] = "one"
        elif (start, end) in spans:
            held.setdefault(value, spans[(start, end)])
        elif (start, end) in bounds_at:
            bounds[value] = min(bounds.get(value, bounds_at[(start, end)]), bounds_at[(start, end)])
    return held, bounds


def _draw_rule(values: dict[Fraction, Fraction], bounds: dict[Fraction, int]) -> str | None:
    """The first rule of DRAW_RULES (but the collapse, checked after recomputing) a draw breaks."""
    if any(new == 1 for new in values.values()):
        return "count_of_one"
    if any(new > bounds[v] for v, new in values.items() if v in bounds):
        return "beyond_unit_bound"
    return None


def build_variants(problems: list[Problem], *, variants: int = 1, seed: int = 42,
                   kinds: tuple[str, ...] | list[str] = ("numbers",)) -> tuple[list[dict], dict]:
    """Up to `variants` copies of each problem for each kind of change: "numbers" (the
    question's numbers, chain recomputed), "magnitudes" (the numbers scaled up, chain
    recomputed) and "names" (the people renamed, task.renaming);
    returns (variant rows for a data file, per kind the counts kept and skipped with their
    reasons). Each kind draws from its own seeded generator, so asking for another kind
    beside one leaves that one's variants as they were."""
    known = PROBE_KIND_TABLE.names()  # what a variant changes (core.probe_kinds)
    unknown = [k for k in kinds if k not in known]
    if unknown or not kinds:
        raise MathtuneError(f"unknown probe kind {', '.join(unknown) or '(none)'}; the kinds are {', '.join(known)}")
    rows, by_kind = [], {}
    for kind in known:
        if kind in kinds:
            maker = _name_variants if PROBE_KIND_TABLE.get(kind).renames else _number_variants
            made, by_kind[kind] = maker(problems, variants, seed, kind)
            rows += made
    return rows, {"problems": len(problems), "kinds": [k for k in known if k in kinds], "variants": len(rows),
                  "variants_per_problem": variants, "seed": seed, "rules_version": RULES_VERSION, "by_kind": by_kind}


def _name_variants(problems: list[Problem], variants: int, seed: int, kind: str) -> tuple[list[dict], dict]:
    rows, skipped, kept = [], Counter(), 0
    entry = PROBE_KIND_TABLE.get(kind)
    for problem in problems:
        rng = random.Random(f"{seed}-{kind}-{problem.id}")
        made: list[tuple[str, str, dict]] = []
        why = None
        for _ in range(DRAWS):
            if len(made) == variants:
                break
            renamed = rename_people(problem.question, problem.answer, rng)
            if isinstance(renamed, str):
                why = renamed
                break
            if all(renamed[2] != m for _, _, m in made):
                made.append(renamed)
        if not made:
            skipped[why or "no_sensible_variant"] += 1
            continue
        kept += 1
        for k, (question, solution, mapping) in enumerate(made, start=1):
            rows.append({"id": entry.variant_id(problem.id, k), "original_id": problem.id, "kind": kind,
                         "question": question, "answer": solution, "changed": mapping})
    return rows, {"kept": kept, "variants": len(rows), "skipped": dict(sorted(skipped.items())),
                  "skip_reasons": {k: SKIP_REASONS[k] for k in sorted(skipped)}}


def _reads_with_an(number: str) -> bool:
    """Whether a number is read starting with a vowel sound: 8, 11, 18, 80, 800, 11,000 ('an 8-hour day')."""
    whole = number.lstrip("$").split(".")[0].replace(",", "")
    lead = whole[: len(whole) % 3 or 3]
    return lead.startswith("8") or lead in ("11", "18")


def fix_articles(question: str, new_numbers: set[str]) -> str:
    """'a'/'an' before each new number as it is read: a 5-hour day may become an 8-hour day."""
    def article(m: re.Match) -> str:
        if m.group(3) not in new_numbers:
            return m.group(0)
        wanted = "an" if _reads_with_an(m.group(3)) else "a"
        if m.group(1)[0].isupper():
            wanted = wanted.capitalize()
        return f"{wanted}{m.group(2)}{m.group(3)}"
    return re.sub(r"\b([Aa]n?)(\s+\$?)(\d[\d,]*(?:\.\d+)?)", article, question)


def _scaled_text(value: Fraction, text: str, money: bool) -> str:
    """A scaled number as a writer would put it: '1,200'; money keeps its cents ('$250.00',
    '$3,000.00'), a quantity drops them once it is whole (2.25 yards a thousandfold: '2,250')."""
    if not money:
        return format_number(value, like="1,000" if value >= 1000 else "")
    if value >= 1000:
        return format_number(value, like="1,000" + (text[text.index("."):] if "." in text else ""))
    return format_number(value, like=text)


def _number_variants(problems: list[Problem], variants: int, seed: int, kind: str) -> tuple[list[dict], dict]:
    """"numbers": each number of the question drawn anew within its size; "magnitudes": the
    question's numbers all scaled by one factor of 10, 100 or 1,000, so that the story keeps
    its proportions (what was twice another stays twice it) at a larger scale."""
    rows, skipped, kept = [], Counter(), 0
    rejected = Counter({rule: 0 for rule in DRAW_RULES})
    held_count = Counter({rule: 0 for rule in HELD_RULES})
    for problem in problems:
        numbers = question_numbers(problem.question)
        held_count["fraction"] += len(FRACTION.findall(problem.question))
        held, bounds = held_numbers(problem.question, numbers)
        chain, why = trace(problem, numbers, held)
        if why is None and question_key(problem.question) in DISPUTED_ORIGINALS:
            why = "original_gold_disputed"
        if why is None:
            options, why = _options(problem, numbers, chain, bounds, kind)
        if why is not None:
            skipped[why] += 1
            continue
        held_count.update(held.values())
        # Each problem draws from its own seeded generator: whether another problem is kept, or
        # which problems are asked for, never changes this one's variants.
        rng = random.Random(f"{seed}-{kind}-{problem.id}")
        made = _draw(rng, chain, options, (bounds, _share_cap(problem, chain)), numbers, kind, rejected, variants)
        if isinstance(made, str):
            skipped[made] += 1
            continue
        kept += 1
        rows += [_variant_row(problem, k, kind, numbers, values, done, len(chain.steps) - 1)
                 for k, (values, done) in enumerate(made, start=1)]
    return rows, {"kept": kept, "variants": len(rows), "skipped": dict(sorted(skipped.items())),
                  # retried; a problem left with none is skipped
                  "draws_rejected": dict(rejected), "draw_rules": dict(DRAW_RULES),
                  "held": dict(held_count), "held_rules": dict(HELD_RULES),
                  "skip_reasons": {k: SKIP_REASONS[k] for k in sorted(skipped)}}


SCALABLE_TIME = ("second", "minute", "sec", "min")
AGE_WORDS = re.compile(r"\b(?:years? old|year-old|how old|older|younger|age|ages|aged|birthday|born|turns? \d+|"
                       r"turned \d+)\b", re.IGNORECASE)


def _options(problem: Problem, numbers: list, chain: Chain, bounds: dict, kind: str) -> tuple[dict, str | None]:
    """The values each changed number may take, or the skip reason. Magnitudes scale neither a
    percentage, a multiplier ("3 times as many": scaled, it is another story), a time (8 hours
    a day, 3 days, 12 years: the calendar and the clock do not scale), nor an age."""
    question = problem.question
    percent = {v for _, end, v, _ in numbers if question[end:end + 1] == "%" or
               question[end:end + 8].strip().startswith("percent")}
    if not PROBE_KIND_TABLE.get(kind).scales:
        return {v: _candidates(v, v in percent) for v in chain.used}, None
    if AGE_WORDS.search(question):
        return {}, "ages"
    times = {v for _, end, v, _ in numbers if re.match(r"\s*(?:times|x)\b", question[end:])}
    # Hours, days, weeks, months and years do not scale; a 15-minute walk may take 150 minutes.
    timed = {span for span, unit in time_spans(question).items() if unit not in SCALABLE_TIME}
    times |= {v for start, end, v, _ in numbers if (start, end) in timed}
    used = [v for v in chain.used if v not in percent | times and bounds.get(v, MAX_VALUE) >= 10 * v]
    if not used:
        return {}, "nothing_to_scale"
    return {v: [v * factor for factor in MAGNITUDE_FACTORS] for v in used}, None


ASKS_PERCENT = re.compile(r"(?:percent|percentage|%)[^.?!]*\?\s*$|\b(?:what|which) (?:percent|percentage)",
                          re.IGNORECASE)


def _share_cap(problem: Problem, chain: Chain) -> Fraction | None:
    """100 where the question asks for a percentage that the original answer keeps within a whole."""
    gold = chain.steps[-1].result
    return Fraction(100) if ASKS_PERCENT.search(problem.question) and gold <= 100 else None


def _draw(rng: random.Random, chain: Chain, options: dict, limits: tuple, numbers: list, kind: str,
          rejected: Counter, variants: int) -> list | str:
    """Up to DRAWS draws of new values, each kept when its chain recomputes sensibly and keeps
    the question's distinct numbers distinct; the variants made, or why there are none."""
    originals = {v for _, _, v, _ in numbers}
    bounds, cap = limits
    made, seen, sensible = [], set(), 0
    for _ in range(DRAWS):
        if len(made) == variants:
            break
        if PROBE_KIND_TABLE.get(kind).scales:
            factor = rng.choice(MAGNITUDE_FACTORS)
            values = {v: v * factor for v in options}
        else:
            values = {v: rng.choice(options[v]) for v in options if options[v]}
        key = tuple(sorted(values.items()))
        if not values or key in seen:
            continue
        seen.add(key)
        rule = _draw_rule(values, bounds)
        if rule is not None:
            rejected[rule] += 1
            continue
        done = recompute(chain.steps, values)
        if done is None:
            continue
        if cap is not None and done[-1][1] > cap:
            rejected["share_over_whole"] += 1
            continue
        sensible += 1
        if collapses(values, originals):
            rejected["numbers_collapse"] += 1
            continue
        made.append((values, done))
    if not made:
        return "numbers_collapse" if sensible else "no_sensible_variant"
    return made


def _variant_row(problem: Problem, k: int, kind: str, numbers: list, values: dict, chain: list,
                 answer_at: int) -> dict:
    """The k-th variant of a problem as a data row: the question with the drawn values written
    in, the recomputed chain up to the answer as its solution."""
    entry = PROBE_KIND_TABLE.get(kind)
    written = {start: format_number(values[v], like=text) if not entry.scales
               else _scaled_text(values[v], text, money=problem.question[start - 1:start] == "$")
               for start, _, v, text in numbers if v in values}
    question, shift = problem.question, 0
    for start, end, _, _ in numbers:
        if start in written:
            question = question[: start + shift] + written[start] + question[end + shift:]
            shift += len(written[start]) - (end - start)
    question = fix_articles(question, set(written.values()))
    new_gold = chain[answer_at][1]
    solution = "\n".join(f"{expr} = <<{expr}={format_number(res)}>>{format_number(res)}"
                         for expr, res in chain[: answer_at + 1])
    return {"id": entry.variant_id(problem.id, k),
            "original_id": problem.id, "kind": kind,
            "question": question, "answer": f"{solution}\n#### {format_number(new_gold)}",
            "changed": {format_number(v): format_number(n) for v, n in sorted(values.items())}}


# --- writing the variants ------------------------------------------------------------------------

PROBE_FOLDER = "probe"  # RUN_DIR/probe/test.jsonl: the variants, a data folder of their own
PROBE_SUFFIX = "-probe"  # eval/NAME-probe.jsonl: the records of model NAME on the variants


def write_variants(out_dir: Path, problems: list[Problem], *, variants: int, seed: int, source: str,
                   kinds: tuple[str, ...] | list[str] = ("numbers",)) -> Path:
    """Build the variants of problems and write them (with what was skipped) under
    out_dir/probe/; returns the folder, which `mathtune eval --data` reads like any other."""
    rows, counts = build_variants(problems, variants=variants, seed=seed, kinds=kinds)
    if not rows:
        reasons = ", ".join(f"{n} {SKIP_REASONS[k]}" for c in counts["by_kind"].values() for k, n in c["skipped"].items())
        raise MathtuneError(f"none of the {len(problems)} problems gave a variant ({reasons})")
    folder = Path(out_dir) / PROBE_FOLDER
    write_atomic(folder / "test.jsonl", jsonl_text(rows))
    write_probe_summary(folder / "summary.json", ProbeSummary(**counts, source=source))
    return folder
