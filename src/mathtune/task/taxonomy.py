"""Error taxonomy: every wrong answer gets exactly one category, by deterministic rules.

The evaluation stage calls `classify_error` for each record; the analysis counts the
categories. The rules read only the model's completion and the gold solution, never a model.

Precedence (the first rule that applies wins; `None` when the strict answer is right):

1. truncated             -- out of tokens before stating a final answer.
2. format_failure        -- no final answer stated in an expected form; the last number is
                            right, or there is no number.
3. arithmetic_slip       -- an equation `a op b = c` whose left side does not give `c`, beyond
                            the rounding that ROUNDING_TOLERANCE allows.
4. missing_or_extra_step -- the prediction is a gold-chain value, or one of STEP_NEIGHBOURS.
5. misread_question      -- none of the above: the model solved a different problem.

The exact wording of each rule, shown in the report, is `RULES`, built from the same constants
the code below uses; tests/test_taxonomy.py checks the two against each other.
"The prediction" is the strict answer when the model stated one, else the flexible one.
Arithmetic is checked with the small recursive-descent parser below (numbers, + - * /,
parentheses, postfix %); nothing is ever passed to Python's eval.
"""

from __future__ import annotations

import re
from fractions import Fraction

CATEGORIES = ("format_failure", "truncated", "arithmetic_slip", "missing_or_extra_step", "misread_question")
"""Display order in the report."""

PRECEDENCE = ("truncated", "format_failure", "arithmetic_slip", "missing_or_extra_step", "misread_question")
"""The order in which classify_error tries the rules."""


# --- a safe arithmetic evaluator -------------------------------------------------------

_TOKEN_RE = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|([-+*/()%]))")
# Multiplication and division signs models write, mapped to the parser's two operators.
_OPERATOR_SPELLINGS = (
    ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"),
    ("×", "*"), ("·", "*"), ("∙", "*"), ("÷", "/"), ("−", "-"), ("–", "-"),
)
_MAX_EXPRESSION_CHARS = 200


class _ParseError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise _ParseError(f"unexpected character at {pos}: {text[pos]!r}")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := ('+'|'-') factor | primary '%'? ; primary := NUMBER | '(' expr ')'"""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0
        self.binary_ops = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise _ParseError("unexpected end")
        self.pos += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            self.binary_ops += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            self.binary_ops += 1
            rhs = self.factor()
            if op == "*":
                value = value * rhs
            elif rhs == 0:
                raise _ParseError("division by zero")
            else:
                value = value / rhs
        return value

    def factor(self) -> Fraction:
        if self.peek() in ("+", "-"):
            sign = self.take()
            value = self.factor()
            return -value if sign == "-" else value
        value = self.primary()
        if self.peek() == "%":
            self.take()
            value = value / 100
        return value

    def primary(self) -> Fraction:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise _ParseError("unbalanced parenthesis")
            return value
        if token[0].isdigit() or token[0] == ".":
            return Fraction(token)
        raise _ParseError(f"unexpected token {token!r}")


def _normalize_expression(text: str) -> str:
    for spelling, op in _OPERATOR_SPELLINGS:
        text = text.replace(spelling, op)
    # "3 x 4": an x between two numbers is a multiplication sign, anywhere else a letter.
    text = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d($])", " * ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,200 -> 1200 (not "3, 4")
    return text.replace("$", "")


def _evaluate(text: str) -> tuple[Fraction, int]:
    """(value, number of binary operators); _ParseError unless the whole text is arithmetic."""
    parser = _Parser(_tokenize(text))
    value = parser.expr()
    if parser.peek() is not None:
        raise _ParseError(f"trailing token {parser.peek()!r}")
    return value, parser.binary_ops


def evaluate_arithmetic(text: str) -> Fraction:
    """Exact value of an arithmetic expression such as '(3 + 4) x $2' or '1,200 / 3';
    ValueError for anything else (names, calls, powers, unbalanced parentheses)."""
    if len(text) > _MAX_EXPRESSION_CHARS:
        raise ValueError("expression too long")
    try:
        return _evaluate(_normalize_expression(text))[0]
    except _ParseError as err:
        raise ValueError(f"not an arithmetic expression: {text!r} ({err})") from None


# --- equations in free text ------------------------------------------------------------

_EQUALS_RE = re.compile(r"(?<![<>=!])=(?!=)")
# A letter right after the number makes it an algebraic term ("= 1.2Y"), not a result.
_RESULT_RE = re.compile(r"\s*\$?\s*(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)(?![\d,]*\.?\d|[A-Za-z])")
# After the result: another operator and operand ("a = b + c", "8/3 = 24/Y") means it is not a result.
_CONTINUES_RE = re.compile(r"\s*(?:[-+*/×÷xX]\s*[\d($A-Za-z]|%|\\times|\\div)")
# Characters that can make up the left side; the left side is the longest run of them
# that parses, so "He had 5. 3 + 4 = 7" checks "3 + 4".
_LEFT_CHARS_RE = re.compile(r"[\d\s.,$()+\-*/×·∙÷−–xX%]*$")
_OPERAND_START_RE = re.compile(r"(?<![\d.])[\d($\-]")


def find_equations(text: str) -> list[tuple[str, Fraction, str]]:
    """Every `left = result` in the text where left is arithmetic with at least one operator:
    (left text, value of left, stated result as written). Chains 'a + b = c + d = e' give one entry per
    '=' whose right side is a bare number."""
    found = []
    segment_start = 0
    for m in _EQUALS_RE.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        start = max(segment_start, line_start)
        segment_start = m.end()
        right = _RESULT_RE.match(text, m.end())
        if not right or _CONTINUES_RE.match(text, right.end()):
            continue
        left_text = _normalize_expression(text[start:m.start()])
        run = _LEFT_CHARS_RE.search(left_text)
        candidate = left_text[run.start():] if run else ""
        for start_at in (s.start() for s in _OPERAND_START_RE.finditer(candidate)):
            expression = candidate[start_at:]
            before = candidate[:start_at].rstrip()
            # Only drop text that ends a sentence ("He had 5. 3 + 4 = 7"); dropping part of an
            # expression ("60 students x 2/3", "8 x 1 1/2") would check something never written.
            if before and before[-1] not in ".,":
                break
            if len(expression) > _MAX_EXPRESSION_CHARS:
                continue
            try:
                value, binary_ops = _evaluate(expression)
            except _ParseError:
                continue
            if binary_ops:
                found.append((expression.strip(), value, right.group(1).replace(",", "")))
            break
    return found


# How far a stated result may sit from the exact value of its left side before the equation
# counts as a slip, in units of the last decimal place the result is written with: half a unit,
# i.e. 0.5 for a whole number and 0.005 for an amount in cents, so c may be the exact value
# rounded to the places it shows (an exact half may go either way).
# Why any tolerance: GSM8K's reference solutions round in a few known places, and a model that
# imitates them is not wrong. A "how many whole loaves/boxes/cycles" division drops the
# remainder ("13 / 6 = 2 full cycles") and money is rounded to cents ("31 / 3 = 10.33"), so
# 15 / 2 = 7 may be a deliberate whole-number answer. The allowance is rounding to the
# nearest, not any floor or ceiling (that would also excuse genuine slips such as 10 / 3 = 4),
# so a floor that drops more than half ("23 / 3 = 7 boxes") still counts as a slip.
# Measured once with find_equations over GSM8K's 8,792 train and test solutions: those two are
# the only genuine roundings; the other inexact results are typos or mixed numbers
# ("3 / 2 = 1 1/2", "17/3 = 5 and 2/3") whose result the finder reads as the whole part, and the
# allowance also spares those whose fraction is a half or less.
ROUNDING_TOLERANCE = Fraction(1, 2)

# Equations the arithmetic-slip rule text quotes, with whether each is a slip. RULES
# prints them and the tests check each against arithmetic_slips, so the two cannot drift apart.
ROUNDING_EXAMPLES = (("15 / 2 = 7", False), ("15 / 2 = 8", False), ("10 / 3 = 3.33", False),
                     ("15 / 2 = 6", True), ("17 / 3 = 5", True), ("3 * 4 = 13", True))


def rounding_tolerance(result_text: str) -> Fraction:
    """The allowed distance for a result written as result_text: ROUNDING_TOLERANCE units of
    its last decimal place (0.5 for "7", 0.005 for "3.33")."""
    places = len(result_text.split(".", 1)[1]) if "." in result_text else 0
    return ROUNDING_TOLERANCE / 10**places


def equation_is_consistent(value: Fraction, result_text: str) -> bool:
    """True when the stated result is within rounding_tolerance(result_text) of the value
    (10 / 3 = 3.33, 7 / 2 = 3.5 and 15 / 2 = 7 are fine; 7 * 8 = 54 is a slip)."""
    return abs(value - Fraction(result_text)) <= rounding_tolerance(result_text)


def arithmetic_slips(completion: str) -> list[str]:
    """The equations in the completion whose left side does not give the stated result."""
    return [
        f"{left} = {result} (is {_format_fraction(value)})"
        for left, value, result in find_equations(completion)
        if not equation_is_consistent(value, result)
    ]


def _format_fraction(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"


# --- the gold chain ----------------------------------------------------------------------

_ANNOTATION_RE = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_ANY_NUMBER_RE = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\d.])\d+(?:\.\d+)?")


def count_reasoning_steps(answer: str) -> int:
    """Number of calculator annotations <<...>> in a GSM8K gold solution."""
    return len(_ANNOTATION_RE.findall(answer))


def _to_fraction(text: str | None) -> Fraction | None:
    if text is None:
        return None
    try:
        return Fraction(text.replace(",", "").replace("$", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def gold_chain_values(answer: str) -> list[Fraction]:
    """The result of every calculator step in the gold solution, in order."""
    values = []
    for _, result in _ANNOTATION_RE.findall(answer):
        value = _to_fraction(result)
        if value is not None:
            values.append(value)
    return values


def gold_solution_numbers(answer: str) -> set[Fraction]:
    """Every number written in the gold solution (operands, results, the answer)."""
    numbers = set()
    for text in _ANY_NUMBER_RE.findall(answer):
        value = _to_fraction(text)
        if value is not None:
            numbers.add(value)
    return numbers


# The answers one operation away from the gold answer, with x another number written in the
# gold solution: a step added (gold + x, gold * x, ...) or one undone. Each entry is its
# written form and its value (None where undefined).
STEP_NEIGHBOURS = (
    ("gold + x", lambda gold, x: gold + x),
    ("gold - x", lambda gold, x: gold - x),
    ("x - gold", lambda gold, x: x - gold),
    ("gold * x", lambda gold, x: gold * x),
    ("gold / x", lambda gold, x: gold / x if x != 0 else None),
)


def is_missing_or_extra_step(prediction: Fraction, gold: Fraction, answer: str) -> bool:
    if prediction == gold:
        return False
    if prediction in gold_chain_values(answer):
        return True
    return any(
        prediction == neighbour(gold, x)
        for x in gold_solution_numbers(answer) - {gold}
        for _, neighbour in STEP_NEIGHBOURS
    )


# --- the classifier ------------------------------------------------------------------------


def classify_error(record: dict) -> str | None:
    """The error category of one scored record, or None when its strict answer is right.

    Reads: completion, answer (full gold solution), gold, pred_strict, pred_flexible,
    correct_strict, correct_flexible, truncated. See the module docstring for the rules.
    """
    if record.get("correct_strict"):
        return None
    completion = record.get("completion") or ""
    pred_strict = record.get("pred_strict")
    pred_flexible = record.get("pred_flexible")
    if record.get("truncated") and pred_strict is None:
        return "truncated"
    if pred_flexible is None and pred_strict is None:
        return "format_failure"
    if pred_strict is None and record.get("correct_flexible"):
        return "format_failure"
    if arithmetic_slips(completion):
        return "arithmetic_slip"
    prediction = _to_fraction(pred_strict if pred_strict is not None else pred_flexible)
    gold = _to_fraction(record.get("gold"))
    answer = record.get("answer") or ""
    if prediction is not None and gold is not None and is_missing_or_extra_step(prediction, gold, answer):
        return "missing_or_extra_step"
    return "misread_question"


# --- the rules as written -----------------------------------------------------------------


def _rounding_examples(is_slip: bool) -> list[str]:
    return [equation for equation, slip in ROUNDING_EXAMPLES if slip == is_slip]


def _join(items: list[str], word: str) -> str:
    return ", ".join(items[:-1]) + f" {word} " + items[-1] if len(items) > 1 else "".join(items)


RULES: dict[str, str] = {
    "truncated": (
        "the completion hit max_new_tokens before stating a final answer (one that stated an answer "
        "and then ran on is judged by the later rules)"
    ),
    "format_failure": (
        "no final answer stated in an expected form, and either the last number in the text is "
        "right or the text holds no number at all"
    ),
    "arithmetic_slip": (
        "an equation 'a op b = c' in the completion whose left side does not give c, allowing for "
        f"rounding: c may differ from the exact value by up to {_format_fraction(rounding_tolerance('1'))} "
        f"for a whole number or {_format_fraction(rounding_tolerance('1.00'))} for an amount in cents "
        f"({_format_fraction(ROUNDING_TOLERANCE)} of a unit in the last decimal place c is written with), "
        "as GSM8K's own solutions round to whole items and to cents; this is rounding to the nearest, so "
        "a floor division that drops more than that is still a slip; not slips: "
        + _join(_rounding_examples(False), "and") + "; slips: " + _join(_rounding_examples(True), "and")
    ),
    "missing_or_extra_step": (
        "the prediction equals the result of one of the gold solution's calculator steps (a step "
        "left out), or is one operation away from the gold answer: "
        + _join([name for name, _ in STEP_NEIGHBOURS], "or")
        + ", with x any other number written in the gold solution (a step added or undone)"
    ),
    "misread_question": (
        "the answer is wrong and no rule above applies, so every equation passes the arithmetic-slip "
        f"check, rounding included (an equation such as {_rounding_examples(False)[0]} does not make "
        "an answer an arithmetic slip): the model solved a different problem"
    ),
}
"""The written rule of each category, as the report shows it; built from the constants above."""
