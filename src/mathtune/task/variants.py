"""The robustness probe's variants: the same problems with other numbers, in the spirit of
GSM-Symbolic and GSM-Plus.

    build_variants(problems, variants=N, seed=S, kinds=[numbers, names, magnitudes])
                                                 -> (variant problems, what was kept and skipped per kind)
    write_variants(out_dir, problems, ...)       -> OUT/probe/, a data folder any evaluator reads

(analysis.followup_measures pairs a model's records on the variants with its records on the originals.)

A GSM8K solution carries calculator annotations, `<<48/2=24>>`, one per step. Each number in
an annotation comes from the question, from an earlier step's result, or is a constant the
solver brought (the 2 of "half", the 60 of an hour). A variant gives the question's numbers
new values, recomputes every step in order with the safe arithmetic parser (never `eval`),
and takes the last step's result as the new gold answer.

A problem is kept only when its whole chain can be recomputed: every annotation is plain
arithmetic that gives its stated result, and the gold answer is a step's result. A variant
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
  a foot", task.stated_facts), or a year ("in 2019"), is held; a number a unit bounds ("8 hours
  a day", "12 years old") is drawn within the bound.
Draws these rules turn down are counted by rule in the summary, beside the skip reasons.

Written here because neither lm-evaluation-harness nor the GSM-Symbolic release builds
variants from GSM8K's own annotations; their templates are written by hand.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from mathtune.config import PROBE_KINDS
from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import jsonl_text, write_atomic, write_json_atomic
from mathtune.task.data import Problem
from mathtune.task.renaming import rename_people
from mathtune.task.stated_facts import fixed_numbers
from mathtune.task.taxonomy import evaluate_arithmetic

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
EXPR_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?|\.\d+)")
# A number in the question: '1,200', '48', '2.5'; not part of a word ('2nd', 'B12') or a time ('3:30').
# A fraction's parts ('1/4', '3/4ths') and dates ('3/15') are no numbers of their own: see FRACTION.
QUESTION_NUMBER = re.compile(r"(?<![\w.,:/])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w:/]|\.\d|,\d{3})")
FRACTION = re.compile(r"(?<![\w.,/])(\d+)/(\d+)(?:ths|rds|nds|sts|th|rd|nd|st)?(?![\w/]|\.\d)")
KINDS = PROBE_KINDS  # what a variant changes: see build_variants
MAGNITUDE_FACTORS = (10, 100, 1000)
DRAWS = 200  # draws tried for each variant before the problem counts as having no sensible variant
MAX_VALUE = 10**9  # a recomputed step larger than this is not a grade-school quantity

# Constants that a question's words bring into a solution. When the question also states the
# same number and the solution uses it more often than the question states it, some uses are
# the word's, and changing them all would change "half" too: such a problem is skipped.
WORD_CONSTANTS = {
    2: ("half", "twice", "double", "pair", "two times", "both"), 3: ("triple", "third", "three times"),
    4: ("quarter", "fourth"), 7: ("week",), 10: ("ten", "dime"), 12: ("dozen", "month", "year", "feet", "foot", "inch"),
    24: ("day",), 30: ("month",), 52: ("year", "week"), 60: ("hour", "minute", "second"),
    100: ("percent", "%", "cent", "century"), 365: ("year",), 1000: ("thousand", "kilo"),
}

SKIP_REASONS = {
    "no_annotations": "the solution has no calculator annotations",
    "not_arithmetic": "an annotation is not plain arithmetic",
    "wrong_annotation": "an annotation does not compute to its stated result",
    "gold_not_a_step": "the gold answer is not the result of an annotated step",
    "no_question_number": "no number of the question enters the calculation",
    "percent_two_forms": "a number of the question enters the calculation in two forms (20 and 0.2)",
    "ambiguous_constant": "a number of the question is also a constant its words imply (2 and 'half')",
    "numbers_collapse": f"every sensible draw in {DRAWS} made two distinct numbers of the question equal",
    "no_sensible_variant": f"no sensible variant in {DRAWS} draws",
    "nothing_to_scale": "every number of the calculation is a percentage, held, or bounded by its unit",
    "no_person_name": "no person's name from the list of first names in the question",
    "all_numbers_held": "every number of the question that enters the calculation is held (a 1, a unit fact, a year)",
}
# The rules a draw must pass beyond recomputing; a draw turned down is drawn again.
DRAW_RULES = {
    "count_of_one": "a number drawn as 1 (its noun would lose its number: '1 hours')",
    "beyond_unit_bound": "a number drawn past what its unit allows (more than 24 hours a day, 7 days a week, age 100)",
    "numbers_collapse": "two distinct numbers of the question made equal",
}
# Numbers of the question left as they are, by rule.
HELD_RULES = {
    "one": "a 1 (its noun is singular)",
    "unit_fact": "a fact of the calendar or of units ('28 days in the month', '12 inches in a foot')",
    "year": "a year of the calendar ('in 2019')",
    "fraction": "a fraction a/b, one value whose parts are not drawn",
}


@dataclass
class Operand:
    start: int
    end: int
    kind: str  # "question" | "step" | "const"
    value: Fraction
    step: int = -1  # for kind "step": which earlier step


@dataclass
class Step:
    expr: str
    result: Fraction
    operands: list[Operand]


def _fraction(text: str) -> Fraction | None:
    text = text.strip().replace(",", "").removeprefix("$")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


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
    text = f"{float(value):.{places}f}" if places else str(value.numerator // value.denominator)
    if "," in like and places == 0:
        text = f"{int(text):,}"
    return text


def question_numbers(question: str) -> list[tuple[int, int, Fraction, str]]:
    """(start, end, value, text) of each number in the question."""
    found = []
    for m in QUESTION_NUMBER.finditer(question):
        value = _fraction(m.group(0))
        if value is not None:
            found.append((m.start(), m.end(), value, m.group(0)))
    return found


def parse_chain(problem: Problem, numbers: list | None = None) -> tuple[list[Step] | None, str | None]:
    """The annotated steps with each operand's source, or (None, skip reason); `numbers` is
    question_numbers(problem.question) where the caller has it already."""
    annotations = ANNOTATION.findall(problem.answer)
    if not annotations:
        return None, "no_annotations"
    in_question = {value for _, _, value, _ in (numbers or question_numbers(problem.question))}
    fractions = {(m.group(1), m.group(2)) for m in FRACTION.finditer(problem.question)}
    steps: list[Step] = []
    for expr, stated in annotations:
        result = _fraction(stated)
        try:
            value = evaluate_arithmetic(expr)
        except ValueError:
            return None, "not_arithmetic"
        if result is None:
            return None, "not_arithmetic"
        if value != result:
            return None, "wrong_annotation"
        operands = []
        # The parts of a question's fraction written as that fraction ('32*3/4') are its value,
        # not numbers of the question that another number of the same value would change.
        in_fraction = {i for f in re.finditer(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", expr)
                       if (f.group(1), f.group(2)) in fractions for i in (f.start(1), f.start(2))}
        for m in EXPR_NUMBER.finditer(expr):
            v = Fraction(m.group(0))
            if m.start() in in_fraction:
                operands.append(Operand(m.start(), m.end(), "const", v))
                continue
            earlier = [j for j, s in enumerate(steps) if s.result == v]
            if earlier:  # a result carried forward; the latest one when several match
                operands.append(Operand(m.start(), m.end(), "step", v, earlier[-1]))
            elif v in in_question:
                operands.append(Operand(m.start(), m.end(), "question", v))
            else:
                operands.append(Operand(m.start(), m.end(), "const", v))
        steps.append(Step(expr, result, operands))
    return steps, None


def _answer_step(steps: list[Step], gold: Fraction) -> int | None:
    for j in range(len(steps) - 1, -1, -1):
        if steps[j].result == gold:
            return j
    return None


def recompute(steps: list[Step], values: dict[Fraction, Fraction]) -> list[tuple[str, Fraction]] | None:
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


def held_numbers(question: str, numbers: list) -> tuple[dict[Fraction, str], dict[Fraction, int]]:
    """(values held with the rule that holds them, upper bounds of the others) for a question's
    numbers. A value held anywhere is held everywhere: a variant changes values, not places."""
    spans, bounds_at = fixed_numbers(question)
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
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise MathtuneError(f"unknown probe kind {', '.join(unknown) or '(none)'}; the kinds are {', '.join(KINDS)}")
    rows, by_kind = [], {}
    for kind in KINDS:
        if kind in kinds:
            if kind == "names":
                made, by_kind[kind] = _name_variants(problems, variants, seed)
            else:
                made, by_kind[kind] = _number_variants(problems, variants, seed, kind)
            rows += made
    return rows, {"problems": len(problems), "kinds": [k for k in KINDS if k in kinds], "variants": len(rows),
                  "variants_per_problem": variants, "seed": seed, "by_kind": by_kind}


def _name_variants(problems: list[Problem], variants: int, seed: int) -> tuple[list[dict], dict]:
    rng = random.Random(f"{seed}-names")
    rows, skipped, kept = [], Counter(), 0
    for problem in problems:
        made: list[tuple[str, str, dict]] = []
        for _ in range(DRAWS):
            if len(made) == variants:
                break
            renamed = rename_people(problem.question, problem.answer, rng)
            if renamed is None:
                break
            if all(renamed[2] != m for _, _, m in made):
                made.append(renamed)
        if not made:
            skipped["no_person_name"] += 1
            continue
        kept += 1
        for k, (question, solution, mapping) in enumerate(made, start=1):
            rows.append({"id": f"{problem.id}~names-v{k}", "original_id": problem.id, "kind": "names",
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


def _scaled_text(value: Fraction, text: str) -> str:
    """A scaled number as a writer would put it: '1,200', '$250.00' (cents where it had cents)."""
    if value >= 1000 and value.denominator == 1:
        return format_number(value, like="1,000" + (text[text.index("."):] if "." in text else ""))
    return format_number(value, like=text)


def _number_variants(problems: list[Problem], variants: int, seed: int,
                     kind: str = "numbers") -> tuple[list[dict], dict]:
    """"numbers": each number of the question drawn anew within its size; "magnitudes": the
    question's numbers all scaled by one factor of 10, 100 or 1,000, so that the story keeps
    its proportions (what was twice another stays twice it) at a larger scale. Percentages,
    and numbers a unit bounds below ten times their size (24 hours a day), are held there."""
    rng = random.Random(seed) if kind == "numbers" else random.Random(f"{seed}-{kind}")
    rows, skipped, kept = [], Counter(), 0
    rejected = Counter({rule: 0 for rule in DRAW_RULES})
    held_count = Counter({rule: 0 for rule in HELD_RULES})
    for problem in problems:
        numbers = question_numbers(problem.question)
        held_count["fraction"] += len(FRACTION.findall(problem.question))
        held, bounds = held_numbers(problem.question, numbers)
        held_count.update(rule for v, rule in held.items())
        steps, why = parse_chain(problem, numbers)
        gold = _fraction(problem.gold)
        if steps is not None:
            answer_at = _answer_step(steps, gold) if gold is not None else None
            if answer_at is None:
                why = "gold_not_a_step"
        if steps is not None and why is None:
            uses = Counter(op.value for s in steps for op in s.operands if op.kind == "question")
            consts = {op.value for s in steps for op in s.operands if op.kind == "const"}
            used = sorted(v for v in uses if v not in held)
            if not uses:
                why = "no_question_number"
            elif not used:
                why = "all_numbers_held"
            elif any(v / 100 in consts for v in used if v >= 1):
                why = "percent_two_forms"
            else:
                lower = problem.question.lower()
                stated = Counter(v for _, _, v, _ in numbers)
                if any(uses[v] > stated[v] and any(w in lower for w in WORD_CONSTANTS.get(int(v), ()))
                       for v in used if v.denominator == 1):
                    why = "ambiguous_constant"
        if why is not None:
            skipped[why] += 1
            continue
        percent = {v for start, end, v, _ in numbers if problem.question[end:end + 1] == "%"
                   or problem.question[end:end + 8].strip().startswith("percent")}
        if kind == "magnitudes":
            # A multiplier ("3 times as many") scaled is another story, not the same one larger.
            times = {v for _, end, v, _ in numbers if re.match(r"\s*(?:times|x)\b", problem.question[end:])}
            used = [v for v in used if v not in percent | times and bounds.get(v, MAX_VALUE) >= 10 * v]
            if not used:
                skipped["nothing_to_scale"] += 1
                continue
            options = {v: [v * factor for factor in MAGNITUDE_FACTORS] for v in used}
        else:
            options = {v: _candidates(v, v in percent) for v in used}
        originals = {v for _, _, v, _ in numbers}
        made, seen, sensible = [], set(), 0
        for _ in range(DRAWS):
            if len(made) == variants:
                break
            if kind == "magnitudes":
                factor = rng.choice(MAGNITUDE_FACTORS)
                values = {v: v * factor for v in used}
            else:
                values = {v: rng.choice(options[v]) for v in used if options[v]}
            key = tuple(sorted(values.items()))
            if not values or key in seen:
                continue
            seen.add(key)
            rule = _draw_rule(values, bounds)
            if rule is not None:
                rejected[rule] += 1
                continue
            chain = recompute(steps, values)
            if chain is None:
                continue
            sensible += 1
            if collapses(values, originals):
                rejected["numbers_collapse"] += 1
                continue
            made.append((values, chain))
        if not made:
            skipped["numbers_collapse" if sensible else "no_sensible_variant"] += 1
            continue
        kept += 1
        rows += [_variant_row(problem, k, kind, numbers, values, chain, answer_at)
                 for k, (values, chain) in enumerate(made, start=1)]
    return rows, {"kept": kept, "variants": len(rows), "skipped": dict(sorted(skipped.items())),
                  # retried; a problem left with none is skipped
                  "draws_rejected": dict(rejected), "draw_rules": dict(DRAW_RULES),
                  "held": dict(held_count), "held_rules": dict(HELD_RULES),
                  "skip_reasons": {k: SKIP_REASONS[k] for k in sorted(skipped)}}


def _variant_row(problem: Problem, k: int, kind: str, numbers: list, values: dict, chain: list,
                 answer_at: int) -> dict:
    """The k-th variant of a problem as a data row: the question with the drawn values written
    in, the recomputed chain up to the answer as its solution."""
    question, shift = problem.question, 0
    for start, end, v, text in numbers:
        if v in values:
            new = format_number(values[v], like=text) if kind == "numbers" else _scaled_text(values[v], text)
            question = question[: start + shift] + new + question[end + shift:]
            shift += len(new) - (end - start)
    question = fix_articles(question, {format_number(values[v], like=text) if kind == "numbers"
                                       else _scaled_text(values[v], text)
                                       for _, _, v, text in numbers if v in values})
    new_gold = chain[answer_at][1]
    solution = "\n".join(f"{expr} = <<{expr}={format_number(res)}>>{format_number(res)}"
                         for expr, res in chain[: answer_at + 1])
    return {"id": f"{problem.id}~v{k}" if kind == "numbers" else f"{problem.id}~{kind}-v{k}",
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
    write_json_atomic(folder / "summary.json", {**counts, "source": source})
    return folder
