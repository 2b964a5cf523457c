"""A GSM8K solution's annotated chain, traced back to its question beyond doubt: what the
probe's variants (task.variants) recompute with new numbers.

    parse_chain(problem)        -> (steps, None) | (None, why)   each annotation's operands, read
                                                                  as a question number, an earlier
                                                                  result or a constant
    trace(problem, numbers, kind) -> (Chain, None) | (None, why) the same chain, kept only when
                                                                  every operand has one source

A variant's gold is the chain recomputed with the question's new numbers, so it is right only
if every number the chain uses is accounted for. `trace` keeps a problem only when:
- every step is an annotated calculation: an annotation with no operator (`<<5=5>>`), or a
  calculation written in prose (`2L = 22 - 8 = 14`) whose result the chain uses, means a step
  the chain cannot recompute;
- the gold answer is the last step's result, and no comparison in prose picks it ("1600 > 1200":
  new numbers may pick the other one);
- each operand has exactly one source: a number of the question, an earlier result, or a
  constant that the question's words bring (task.implied: "two", "half", "a dozen", "percent",
  "7 days a week"). An operand with none is an unexplained constant; one with two (a question's
  5 that is also an earlier 10/2) could be read either way, and new numbers would give two
  different golds. Where the two sources never change (a number held as it is, and a word's
  constant), they agree in every variant and the operand is a constant;
- a number the question also says in words ("2 hours less" beside "two days"), or writes in
  another form (the 20 of 20% beside a 0.8), is held: changing one form and not the other
  would change the problem;
- a number that sets the shape of the chain (the 4 of a 4-level castle whose chain doubles
  three times and adds four terms) is held: with another count the chain would need other steps.
What is held is counted by rule in the summary; what is skipped, by reason.

Written here because neither lm-evaluation-harness nor the GSM-Symbolic release traces
GSM8K's annotations; their variants are written by hand.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from mathtune.task.data import Problem
from mathtune.task.implied import implied_values, percent_forms
from mathtune.task.taxonomy import evaluate_arithmetic, find_equations

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
# A unit written onto a number ("40g", "5km", "2x", "3pm") leaves it a number; an ordinal ("2nd")
# or a word ("B12") does not.
_UNIT_SUFFIX = r"(?:g|kg|mg|lbs?|oz|km|m|cm|mm|ft|mi|mph|kph|ml|l|L|[GMT][Bb]|hrs?|h|mins?|secs?|x|am|pm|AM|PM|yds?)\b"
# A number in the question: '1,200', '48', '2.5', '40g', '$3/gallon'; not part of a word ('2nd',
# 'B12') or a time ('3:30'). A fraction's parts ('1/4', '3/4ths') and dates ('3/15') are no
# numbers of their own: see FRACTION.
QUESTION_NUMBER = re.compile(r"(?<![\w.,:/])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?"
                             rf"(?!(?!{_UNIT_SUFFIX})\w|:|/(?![A-Za-z])|\.\d|,\d{{3}})")
EXPR_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?|\.\d+)")
# A fraction written a/b in the question: one value, whose parts are no numbers of their own.
FRACTION = re.compile(r"(?<![\w.,/])(\d+)/(\d+)(?:ths|rds|nds|sts|th|rd|nd|st)?(?![\w/]|\.\d)")
_OPERATOR = re.compile(r"\d\s*[-+*/x×÷]\s*[\d.(]|\)\s*[-+*/x×÷]|[-+*/x×÷]\s*\(")
# A comparison in the solution's prose: the gold was picked among results, not computed.
_COMPARISON = re.compile(r"[<>≥≤]|\b(?:cheaper|more expensive|greater than|less than|larger than|smaller than|"
                         r"better deal|exceeds?|whichever|the most|the least|the larger|the smaller|lowest|highest|largest|smallest|"
                         r"biggest|cheapest|fewest|maximum|minimum)\b", re.IGNORECASE)

CHAIN_SKIP_REASONS = {
    "no_annotations": "the solution has no calculator annotations",
    "not_arithmetic": "an annotation is not plain arithmetic",
    "wrong_annotation": "an annotation does not compute to its stated result",
    "bare_annotation": "an annotation states a number without its calculation (<<5=5>>)",
    "step_in_prose": "a calculation of the solution is written in prose, not annotated",
    "gold_not_a_step": "the gold answer is not the result of an annotated step",
    "answer_not_last_step": "the gold answer is not the last step's result",
    "comparison_in_solution": "the solution picks its answer by a comparison, which new numbers may turn",
    "unexplained_constant": "a number of the calculation is no number of the question, no earlier result "
                            "and no constant the question's words give",
    "two_sources": "a number of the calculation could come from two places (a number of the question and "
                   "an earlier result of the same value)",
    "no_question_number": "no number of the question enters the calculation",
    "unused_number": "a number of the question does not enter the calculation, and new numbers around it could "
                     "contradict it ('20 students, 5 good at math only, 8 at English only')",
    "all_numbers_held": "every number of the question that enters the calculation is held",
}
CHAIN_HELD_RULES = {
    "also_implied": "a number the question also gives in words ('2 hours' beside 'two days', '60' beside 'hour')",
    "percent_form": "a percentage the calculation also uses in another form (20 beside 0.2 or 0.8)",
    "count": "a count that sets the shape of the calculation (how many terms or repeated steps)",
    "stated_more_than_used": "a number the question states more often than the calculation uses it: one of its "
                             "places plays no part in the calculation (the 3 of '3 cities' beside '3 times a day')",
    "reused_small_number": "a small number the calculation uses more often than the question states it: some "
                           "uses may be a constant the question leaves unsaid (the 2 of 'parents')",
}
# Numbers a solution often brings unsaid (2 parents, 2 sides, 12 months, 100 percent): where the
# question states one of them and the calculation uses it more often, it is held.
SMALL_CONSTANTS = {Fraction(n) for n in (2, 3, 4, 7, 12, 24, 52, 60, 100, 365, 1000)}


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


@dataclass
class Chain:
    """A chain traced beyond doubt: its steps with one source per operand, the question's
    values it uses that a variant may change, and the values held with their rule."""
    steps: list[Step]
    used: list[Fraction]
    held: dict[Fraction, str] = field(default_factory=dict)


def to_fraction(text: str) -> Fraction | None:
    text = text.strip().replace(",", "").removeprefix("$")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def question_numbers(question: str) -> list[tuple[int, int, Fraction, str]]:
    """(start, end, value, text) of each number in the question."""
    found = []
    for m in QUESTION_NUMBER.finditer(question):
        value = to_fraction(m.group(0))
        if value is not None:
            found.append((m.start(), m.end(), value, m.group(0)))
    return found


def parse_chain(problem: Problem, numbers: list | None = None) -> tuple[list[Step] | None, str | None]:
    """The annotated steps with a source for each operand (an earlier result first, then a
    number of the question, else a constant), or (None, skip reason). `numbers` is the
    question's (start, end, value, text) list where the caller has it."""
    annotations = ANNOTATION.findall(problem.answer)
    if not annotations:
        return None, "no_annotations"
    in_question = {value for _, _, value, _ in (numbers or question_numbers(problem.question))}
    fractions = {(m.group(1), m.group(2)) for m in FRACTION.finditer(problem.question)}
    steps: list[Step] = []
    for expr, stated in annotations:
        result = to_fraction(stated)
        try:
            value = evaluate_arithmetic(expr)
        except ValueError:
            return None, "not_arithmetic"
        if result is None:
            return None, "not_arithmetic"
        if value != result:
            return None, "wrong_annotation"
        # The parts of a question's fraction written as that fraction ('32*3/4') are its value,
        # not numbers of the question that another number of the same value would change.
        in_fraction = {i for f in re.finditer(r"(?<![\d.])(\d+)\s*/\s*(\d+)(?![\d.])", expr)
                       if (f.group(1), f.group(2)) in fractions for i in (f.start(1), f.start(2))}
        operands = []
        for m in EXPR_NUMBER.finditer(expr):
            v = Fraction(m.group(0))
            earlier = [j for j, s in enumerate(steps) if s.result == v]
            if m.start() in in_fraction:
                operands.append(Operand(m.start(), m.end(), "const", v, step=-2))  # -2: a fraction's part
            elif earlier:  # a result carried forward; the latest one when several match
                operands.append(Operand(m.start(), m.end(), "step", v, earlier[-1]))
            elif v in in_question:
                operands.append(Operand(m.start(), m.end(), "question", v))
            else:
                operands.append(Operand(m.start(), m.end(), "const", v))
        steps.append(Step(expr, result, operands))
    return steps, None


def _shape_problem(problem: Problem, steps: list[Step], gold: Fraction | None) -> str | None:
    """Why the chain cannot be recomputed as a whole, whatever its operands, or None."""
    if any(not _OPERATOR.search(s.expr.strip()) for s in steps):
        return "bare_annotation"
    results = {s.result for s in steps}
    prose = ANNOTATION.sub(" ", problem.answer.rsplit("####", 1)[0])
    for _, _, stated in find_equations(prose):
        if to_fraction(stated) not in results:
            return "step_in_prose"
    if gold is None or all(s.result != gold for s in steps):
        return "gold_not_a_step"
    if steps[-1].result != gold:
        return "answer_not_last_step"
    if _COMPARISON.search(prose):
        return "comparison_in_solution"
    return None


def count_values(steps: list[Step]) -> set[Fraction]:
    """Counts the chain's shape is made of: the terms of a long sum, an operand added to itself
    (5 + 5 + 5 for 3 days) or multiplied by itself (2 * 2 * 2, with one more for the levels it
    doubles between), a run of steps of the same form with a constant (x * 2, x * 2, x * 2)."""
    counts: set[Fraction] = set()
    for step in steps:
        bare = step.expr.replace(" ", "")
        values = [op.value for op in step.operands]
        repeated = {values.count(v) for v in set(values) if values.count(v) >= 2}
        if re.fullmatch(r"[\d.+()$]+", bare):  # n terms, or n of n + 1 things the question asks the last of
            counts |= {Fraction(m) for m in repeated} | (
                {Fraction(len(values)), Fraction(len(values) + 1)} if len(values) >= 3 else set())
        elif re.fullmatch(r"[\d.*x×()$]+", bare):
            counts |= {Fraction(n) for m in repeated if m >= 3 for n in (m, m + 1)}
    shapes = [re.sub(r"\d+(?:\.\d+)?|\.\d+", lambda m: _shape_number(m, s), s.expr.replace(" ", "")) for s in steps]
    run = 1
    for i in range(1, len(shapes) + 1):
        if i < len(shapes) and shapes[i] == shapes[i - 1] and re.search(r"\d", shapes[i]):
            run += 1
            continue
        if run >= 2:
            counts |= {Fraction(run), Fraction(run + 1)}
        run = 1
    return counts


def _shape_number(m: re.Match, step: Step) -> str:
    op = next((o for o in step.operands if o.start == m.start()), None)
    return "X" if op is not None and op.kind != "const" else m.group(0)


def trace(problem: Problem, numbers: list, held: dict[Fraction, str]) -> tuple[Chain | None, str | None]:
    """The chain with one source for each operand, or (None, skip reason); `held` (value: rule)
    is what the caller holds already, and gains the values held here."""
    steps, why = parse_chain(problem, numbers)
    if steps is None:
        return None, why
    why = _shape_problem(problem, steps, to_fraction(problem.gold))
    if why is not None:
        return None, why
    in_question = {value for _, _, value, _ in numbers}
    implied = implied_values(problem.question)
    percents = {v: p for v, p in percent_forms(problem.question).items() if p in in_question}
    for value in count_values(steps) & in_question:
        held.setdefault(value, "count")
    for value in in_question & set(implied):
        held.setdefault(value, "also_implied")
    stated = Counter(value for _, _, value, _ in numbers)
    taken = Counter(op.value for s in steps for op in s.operands if op.kind == "question")
    for value in SMALL_CONSTANTS & set(taken):
        if taken[value] > stated[value]:
            held.setdefault(value, "reused_small_number")
    for value in set(taken):
        if stated[value] > taken[value]:
            held.setdefault(value, "stated_more_than_used")
    for value in {op.value for s in steps for op in s.operands} - in_question:
        if value in percents:
            held.setdefault(percents[value], "percent_form")
    resolved, variable = [], []
    for i, step in enumerate(steps):
        operands = []
        for op in step.operands:
            if op.step == -2:
                operands.append(op)
                continue
            source = _one_source(op, i, steps, variable, in_question, held, set(implied) | set(percents))
            if isinstance(source, str):
                return None, source
            operands.append(source)
        variable.append(any(op.kind != "const" for op in operands))
        resolved.append(Step(step.expr, step.result, operands))
    used = sorted({op.value for s in resolved for op in s.operands if op.kind == "question"})
    if used and in_question - set(used) - set(held):
        return None, "unused_number"
    if not used:
        return None, ("all_numbers_held" if any(op.value in in_question for s in steps for op in s.operands)
                      else "no_question_number")
    return Chain(resolved, used, held), None


def _one_source(op: Operand, i: int, steps: list[Step], variable: list[bool], in_question: set,
                held: dict, constants: set) -> Operand | str:
    """The operand with its one source, or the skip reason when it has none or two."""
    v = op.value
    earlier = [j for j in range(i) if steps[j].result == v]
    changing = [j for j in earlier if variable[j]]
    from_question = v in in_question and v not in held
    fixed = any(not variable[j] for j in earlier) or (v in in_question and v in held) or v in constants
    sources = len(changing) + from_question + fixed
    if sources == 0:
        return "unexplained_constant"
    if sources > 1:
        return "two_sources"
    if changing:
        return Operand(op.start, op.end, "step", v, changing[0])
    return Operand(op.start, op.end, "question" if from_question else "const", v)
