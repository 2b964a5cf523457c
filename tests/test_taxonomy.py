import inspect
import re
from fractions import Fraction

import pytest

from mathtune.task.taxonomy import (
    CATEGORIES,
    PRECEDENCE,
    ROUNDING_TOLERANCE,
    RULES,
    STEP_NEIGHBOURS,
    arithmetic_slips,
    classify_error,
    count_reasoning_steps,
    equation_is_consistent,
    evaluate_arithmetic,
    find_equations,
    gold_chain_values,
    rounding_tolerance,
)

JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market.\n#### 18"
)


def record(completion, pred_strict=None, pred_flexible=None, *, gold="18", answer=JANET, truncated=False):
    return {
        "completion": completion,
        "answer": answer,
        "gold": gold,
        "pred_strict": pred_strict,
        "pred_flexible": pred_flexible,
        "correct_strict": pred_strict == gold,
        "correct_flexible": pred_flexible == gold,
        "truncated": truncated,
    }


@pytest.mark.parametrize(
    "text, value",
    [
        ("3 + 4", 7),
        ("(3 + 4) x $2", 14),
        ("1,200 / 3", 400),
        ("2 × 3 ÷ 4", Fraction(3, 2)),
        ("-5 + 2", -3),
        ("50% * 20", 10),
        ("3 \\times 4", 12),
        ("0.1 + 0.2", Fraction(3, 10)),
    ],
)
def test_evaluate_arithmetic(text, value):
    assert evaluate_arithmetic(text) == value


@pytest.mark.parametrize(
    "text",
    ["__import__('os').system('true')", "2 ** 10", "abs(-3)", "(3 + 4", "3 +", "1 / 0", "9" * 300],
)
def test_evaluate_arithmetic_refuses_anything_else(text):
    with pytest.raises(ValueError):
        evaluate_arithmetic(text)


def test_find_equations_reads_gold_annotations_and_prose():
    assert [(left, result) for left, _, result in find_equations(JANET)] == [("16-3-4", "9"), ("9*2", "18")]
    assert find_equations("Let x = 5. The price is = 3") == []


def test_arithmetic_slips_on_literal_strings():
    assert arithmetic_slips("7 * 8 = 54 eggs") == ["7 * 8 = 54 (is 56)"]
    assert arithmetic_slips("He had 5. 3 + 4 = 8 apples.") == ["3 + 4 = 8 (is 7)"]
    # Rounding to the places the result shows is not a slip; neither are 1,200-style numbers,
    # chained equalities, x as a multiplication sign, or algebra the parser cannot read.
    assert arithmetic_slips("10/3 = 3.33 and 7 / 2 = 3.5") == []
    assert arithmetic_slips("2 x $1,200 = $2,400") == []
    assert arithmetic_slips("2*3 = 3*2 = 6") == []
    assert arithmetic_slips("Let x = 5, so 2x + 3 = 13") == []
    assert arithmetic_slips("<<16-3-4=9>>9 and <<9*2=19>>19") == ["9*2 = 19 (is 18)"]
    assert arithmetic_slips("5 - 8 = -3") == []


def test_gold_chain():
    assert count_reasoning_steps(JANET) == 2
    assert gold_chain_values(JANET) == [9, 18]
    assert count_reasoning_steps("Just 5.\n#### 5") == 0


def test_correct_strict_has_no_category():
    assert classify_error(record("... #### 18", "18", "18")) is None


def test_truncated_before_stating_an_answer():
    assert classify_error(record("16 - 3 = 13, then 13 - 4 = 9, then", None, "9", truncated=True)) == "truncated"
    # Stated a (wrong) answer, then ran on: the budget is not why it is wrong.
    assert classify_error(record("16 - 3 - 4 = 9. #### 9 and then", "9", "9", truncated=True)) == "missing_or_extra_step"


def test_format_failure():
    assert classify_error(record("She makes 9 * 2 = 18 dollars", None, "18")) == "format_failure"
    assert classify_error(record("I cannot tell.", None, None)) == "format_failure"


def test_arithmetic_slip_beats_step_rules():
    assert classify_error(record("16 - 3 - 4 = 9. 9 * 2 = 16. #### 16", "16", "16")) == "arithmetic_slip"


def test_missing_or_extra_step():
    # Stopped one step early: 9 is an intermediate value of the gold chain.
    assert classify_error(record("16 - 3 - 4 = 9 eggs. #### 9", "9", "9")) == "missing_or_extra_step"
    # One operation too many, with a number of the gold solution: 18 * 2.
    assert classify_error(record("9 * 2 = 18, twice: 18 * 2 = 36. #### 36", "36", "36")) == "missing_or_extra_step"
    # 18 * 7 is one operation away too, but 7 appears nowhere in the gold solution.
    assert classify_error(record("9 * 2 = 18, 18 * 7 = 126. #### 126", "126", "126")) == "misread_question"


def test_misread_question():
    assert classify_error(record("16 - 3 = 13 eggs. 13 * 3 = 39. #### 39", "39", "39")) == "misread_question"


def test_script_in_completion_is_just_text():
    assert classify_error(record("<script>alert(1)</script> #### 39", "39", "39")) == "misread_question"


def test_every_wrong_record_gets_exactly_one_known_category():
    completions = [
        ("", None, None, False),
        ("#### 18", "18", "18", False),
        ("7 * 8 = 54 #### 54", "54", "54", True),
        ("9 * 2 = 18", None, "18", True),
        ("#### 1,000", "1000", "1000", False),
    ]
    for text, strict, flexible, truncated in completions:
        category = classify_error(record(text, strict, flexible, truncated=truncated))
        assert category is None or category in CATEGORIES
    assert set(PRECEDENCE) == set(CATEGORIES)


@pytest.mark.full_gsm8k
def test_gold_solutions_rarely_look_like_slips(gsm8k_dir):
    # GSM8K's own solutions are (nearly) all correct arithmetic, with and without their
    # <<a*b=c>> annotations; the few hits are genuine typos in the dataset ("8*3 = 240").
    import json

    from mathtune.task.prompts import clean_solution

    answers = [json.loads(line)["answer"] for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()]
    flagged = sum(1 for a in answers for text in (a, clean_solution(a)) if arithmetic_slips(text))
    assert flagged / (2 * len(answers)) < 0.01
    checked = sum(len(find_equations(a)) for a in answers)
    assert checked > 2 * len(answers)  # and the finder does read most of their equations


# --- the rules as written are the rules as coded ------------------------------------------

_EQUATION_IN_TEXT_RE = re.compile(r"\d+(?:\.\d+)? [-+*/] \d+(?:\.\d+)? = \d+(?:\.\d+)?")


def _slip_rule_examples() -> tuple[list[str], list[str]]:
    """The equations the arithmetic-slip rule text calls not slips, and those it calls slips."""
    text = RULES["arithmetic_slip"]
    assert text.count("not slips: ") == 1 and text.count("; slips: ") == 1, text
    passing, slipping = text.split("not slips: ")[1].split("; slips: ")
    return _EQUATION_IN_TEXT_RE.findall(passing), _EQUATION_IN_TEXT_RE.findall(slipping)


def test_every_category_has_a_rule_and_every_rule_a_category():
    returned = set(re.findall(r'return "(\w+)"', inspect.getsource(classify_error)))
    assert returned == set(CATEGORIES) == set(PRECEDENCE) == set(RULES)
    for category, text in RULES.items():
        assert isinstance(text, str) and len(text) > 40, category


def test_arithmetic_slip_rule_states_the_tolerance_the_code_uses():
    text = RULES["arithmetic_slip"]
    whole, cents = rounding_tolerance("7"), rounding_tolerance("7.00")
    assert whole == ROUNDING_TOLERANCE and cents == ROUNDING_TOLERANCE / 100
    assert f"up to {float(whole):g} for a whole number" in text
    assert f"{float(cents):g} for an amount in cents" in text
    assert "GSM8K" in text  # says why there is a tolerance at all
    # The code draws the line exactly where the text says, on both sides of it.
    for stated, tolerance in (("7", whole), ("3.33", cents)):
        for sign in (1, -1):
            edge = Fraction(stated) + sign * tolerance
            assert equation_is_consistent(edge, stated)
            assert not equation_is_consistent(edge + sign * tolerance / 1000, stated)


def test_arithmetic_slip_rule_examples_are_classified_as_written():
    passing, slipping = _slip_rule_examples()
    # The cases the rule must spell out, on both sides of the tolerance.
    assert "15 / 2 = 7" in passing
    assert "15 / 2 = 6" in slipping and "3 * 4 = 13" in slipping
    for equation in passing:
        assert arithmetic_slips(f"So {equation} loaves.") == [], equation
    for equation in slipping:
        assert len(arithmetic_slips(f"So {equation} loaves.")) == 1, equation
    # And through the classifier: within the tolerance the answer falls through to the later
    # rules (7 is no value of the gold chain, nor one operation from 18: misread question).
    assert classify_error(record("15 / 2 = 7 loaves. #### 7", "7", "7")) == "misread_question"
    assert classify_error(record("15 / 2 = 6 loaves. #### 6", "6", "6")) == "arithmetic_slip"
    assert classify_error(record("3 * 4 = 13 eggs. #### 13", "13", "13")) == "arithmetic_slip"
    assert "15 / 2 = 7" in RULES["misread_question"]


def test_missing_or_extra_step_rule_names_the_operations_the_code_tries():
    text = RULES["missing_or_extra_step"]
    written = re.findall(r"\b(?:gold|x) [-+*/] (?:gold|x)\b", text)
    assert written == [name for name, _ in STEP_NEIGHBOURS]
    gold, x = Fraction(18), Fraction(4)  # 4 is written in JANET and is no value of its chain
    for name in written:
        value = evaluate_arithmetic(name.replace("gold", str(gold)).replace("x", str(x)))
        prediction = str(value.numerator) if value.denominator == 1 else str(float(value))
        assert classify_error(record(f"#### {prediction}", prediction, prediction)) == "missing_or_extra_step", name
    # An operation the text does not list is not one step away: x / gold.
    assert classify_error(record("#### 0.2", "0.2", "0.2", gold="20", answer="5 * 4 = <<5*4=20>>20\n#### 20")) != (
        "missing_or_extra_step"
    )


def _error_section(rules: dict) -> list:
    from mathtune.report.build import error_blocks

    models = ["base", "tuned"]
    return error_blocks({
        "available": True,
        "categories": list(CATEGORIES),
        "precedence": list(PRECEDENCE),
        "rules": rules,
        "counts": {m: {c: 0 for c in CATEGORIES} for m in models},
        "accuracy_by_steps": {m: [] for m in models},
        "step_bucket_max": 6,
        "examples": {c: [] for c in CATEGORIES},
    }, set())


def test_report_prints_the_rules_verbatim():
    # The report prints analysis.json's rules as stored (every number it shows must be found
    # there), so the taxonomy's text has to reach it whole, tolerance and examples included.
    from mathtune.report.render import render_html, render_markdown

    blocks = _error_section(dict(RULES))
    markdown = render_markdown(blocks)
    for category, text in RULES.items():
        assert f"- {category.replace('_', ' ')}: {text}" in markdown
    assert "0.5 for a whole number" in render_html(blocks, "t", {})


def test_analysis_json_carries_the_rules_as_coded():
    from mathtune.analysis.benchmark import analyze_errors

    assert analyze_errors({"tuned": []})["rules"] == RULES
