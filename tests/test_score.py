"""Answer extraction on literal strings, and agreement with the field's reference filters."""

import json
import re

import pytest

from mathtune.task.score import (
    extract_flexible,
    extract_gold,
    extract_strict,
    majority_vote,
    normalize_number,
    score_completion,
)


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("She makes 9 * 2 = 18 dollars.\n#### 18", "18", "18"),
        ("The answer is 18", "18", "18"),  # no final period
        ("The answer is 18.", "18", "18"),
        ("The final answer is 18", "18", "18"),
        ("#### $18", "18", "18"),
        ("It costs $18.", None, "18"),
        ("#### 1,800", "1800", "1800"),
        ("#### 18.00", "18", "18"),
        ("#### 18.0", "18", "18"),
        ("#### 0.50", "0.5", "0.5"),
        ("The temperature fell to -5. The answer is -5.", "-5", "-5"),
        ("The answer is \u22125", "-5", "-5"),  # unicode minus
        ("So the total is \\boxed{42}.", "42", "42"),
        ("\\boxed{\\$1,250}", "1250", "1250"),
        ("The answer is **18**.", "18", "18"),
        ("**The final answer is: $18.50**", "18.5", "18.5"),
        ("#### **25**", "25", "25"),
        ("The answer is: 1,000,000.", "1000000", "1000000"),
        ("The answer is 18. That is 3 more than 15.", "18", "15"),  # a number after the final answer
        ("#### 18\nNext question: 5 apples", "18", "5"),
        ("", None, None),
        ("I don't know.", None, None),
        ("1,8", None, "8"),  # not a thousands group: two numbers, never 18
        ("Step 1: 3 + 4 = 7\nStep 2: 7 * 2 = 14", None, "14"),
    ],
)
def test_extractors_on_literal_strings(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize(
    "raw, norm",
    [("18", "18"), ("18.0", "18"), ("$18", "18"), ("18.00", "18"), ("1,800", "1800"), ("-5", "-5"),
     ("$-5", "-5"), ("0.250", "0.25"), ("abc", None), (None, None), ("--5", None)],
)
def test_normalize_number(raw, norm):
    assert normalize_number(raw) == norm


def test_numbers_compare_as_numbers():
    for text in ("#### 18", "#### 18.0", "#### $18", "#### 18.00", "The answer is 18.0."):
        assert score_completion(text, "18")["correct_strict"], text
    assert not score_completion("#### 1,8", "18")["correct_strict"]
    assert score_completion("#### 1,800", "1800")["correct_strict"]
    assert not score_completion("#### 5", "-5")["correct_strict"]
    assert score_completion("#### -5", "-5")["correct_strict"]


def test_score_fields_for_empty_output():
    assert score_completion("", "7") == {
        "pred_strict": None, "pred_flexible": None, "correct_strict": False, "correct_flexible": False,
    }


def test_gold_from_solution_or_bare_number():
    assert extract_gold("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18") == "18"
    assert extract_gold("1,800") == "1800"
    assert extract_gold(" -3 ") == "-3"
    with pytest.raises(ValueError):
        extract_gold("#### many")


def test_majority_vote_ignores_none_and_breaks_ties_by_first_seen():
    assert majority_vote(["3", None, "4", "4", None, None]) == "4"
    assert majority_vote(["5", "6", "6", "5"]) == "5"
    assert majority_vote([None, None]) is None


# --- the field's reference evaluator, lm-evaluation-harness, re-implemented from its task
# definitions (gsm8k: strict-match / flexible-extract; gsm8k_cot: strict-match) so that
# every disagreement with mathtune is a known, deliberate one.

def lm_eval_strict(text):
    m = re.findall(r"#### (\-?[0-9\.\,]+)", text)
    return m[0] if m else "[invalid]"


def lm_eval_cot_strict(text):
    m = re.findall(r"The answer is (\-?[0-9\.\,]+).", text)
    return m[0] if m else "[invalid]"


def lm_eval_flexible(text):
    m = re.findall(r"(-?[$0-9.,]{2,})|(-?[0-9]+)", text)
    if not m:
        return "[invalid]"
    last = m[-1]
    return last[0] or last[1]


def lm_eval_exact_match(pred, gold_solution):
    def clean(s):
        for pattern in (",", r"\$", r"(?s).*#### ", r"\.$"):
            s = re.sub(pattern, "", s)
        return s.strip()
    return clean(pred) == clean(gold_solution)


@pytest.mark.full_gsm8k
def test_agrees_with_lm_eval_on_every_gold_solution(gsm8k_dir):
    """Fed the 1,319 gold solutions as completions, both extractors of both tools say correct."""
    rows = [json.loads(line) for line in (gsm8k_dir / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 1319
    for row in rows:
        ours = score_completion(row["answer"], extract_gold(row["answer"]))
        assert ours["correct_strict"] and ours["correct_flexible"]
        assert lm_eval_exact_match(lm_eval_strict(row["answer"]), row["answer"])
        assert lm_eval_exact_match(lm_eval_flexible(row["answer"]), row["answer"])


AGREEMENT_CASES = [
    ("So she has 5 left.\n#### 5", "#### 5"),
    ("3 + 4 = 7\n#### 7", "#### 8"),
    ("#### 1,200", "#### 1200"),
    ("No answer given.", "#### 3"),
    ("#### -12", "#### -12"),
]


@pytest.mark.parametrize("completion, gold", AGREEMENT_CASES)
def test_same_verdict_as_lm_eval_on_ordinary_outputs(completion, gold):
    ours = score_completion(completion, extract_gold(gold))
    assert ours["correct_strict"] == lm_eval_exact_match(lm_eval_strict(completion), gold)
    assert ours["correct_flexible"] == lm_eval_exact_match(lm_eval_flexible(completion), gold)


def test_deliberate_difference_unescaped_period_in_cot_pattern():
    text = "2 + 16 = 18. The answer is 18"
    assert lm_eval_cot_strict(text) == "1"  # the '.' eats the '8'
    assert extract_strict(text) == "18"


def test_deliberate_difference_numbers_not_strings():
    assert not lm_eval_exact_match(lm_eval_strict("#### 18.0"), "#### 18")
    assert score_completion("#### 18.0", "18")["correct_strict"]


def test_deliberate_difference_dollar_after_answer_is():
    text = "The answer is $18."
    assert lm_eval_cot_strict(text) == "[invalid]"
    assert extract_strict(text) == "18"


def test_deliberate_difference_dollar_after_hashes():
    assert lm_eval_strict("#### $40") == "[invalid]"
    assert score_completion("#### $40", "40")["correct_strict"]


def test_deliberate_difference_flexible_junk_runs():
    text = "The total is 42 ..."
    assert lm_eval_flexible(text) == "..."  # a run of dots counts as a 'number' there
    assert extract_flexible(text) == "42"


# The shape Qwen2.5-Coder-0.5B-Instruct gives under the chat prompt on most GSM8K problems:
# '####' misread as a markdown heading, the real answer stated last.
HEADING_FIRST = (
    "#### 1. **Eggs left**\n16 - 3 - 4 = 9 eggs.\n"
    "#### 2. **Revenue**\n9 * 2 = 18 dollars.\n\nThus she makes \\(\\boxed{18}\\) dollars."
)


def test_deliberate_difference_last_stated_answer_counts():
    text = "#### 10\nLet me work it out: 9 * 2 = 18.\nThe final answer is 18."
    assert lm_eval_strict(text) == "10"  # lm-eval takes the first '####'
    assert extract_strict(text) == "18"
    assert extract_strict(HEADING_FIRST) == "18"
    assert lm_eval_exact_match(lm_eval_strict(HEADING_FIRST), "#### 18") is False


def test_deliberate_difference_numbered_heading_is_not_an_answer():
    text = "#### 1. **Understanding the problem**\nShe has 9 eggs left."
    assert lm_eval_strict(text) == "1."
    assert extract_strict(text) is None
    assert extract_flexible(text) == "9"
    # An answer line that ends in a period, or a number with more digits, still counts.
    assert extract_strict("#### 18.") == "18"
    assert extract_strict("#### 10. \n") == "10"
    assert extract_strict("#### 1,8") is None


def test_long_digit_runs_score_without_error(tmp_path, capsys):
    """A looping model writes thousands of digits; Python's int() refuses more than 4300."""
    import json

    from mathtune import cli
    from mathtune.task.score import score_completion

    long_number = "9" * 5000
    scored = score_completion(f"so\n#### {long_number}", "18")
    assert scored["pred_strict"] == long_number and scored["correct_strict"] is False
    assert score_completion("1" * 1_000_000 + " then 18", "18")["correct_flexible"] is True
    rows = tmp_path / "c.jsonl"
    rows.write_text(json.dumps({"completion": f"#### {long_number}.000", "answer": "#### 18"}) + "\n")
    assert cli.main(["score", str(rows), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy_strict"] == 0.0


# --- reasoning models: the answer is read after the think block, never inside it -----------------

@pytest.mark.parametrize(
    "text, thinking_open, strict, flexible",
    [
        # Closed, then the answer: read after the closing tag only.
        ("<think>\nShe earns 9 * 2 = 16? No, 18. So #### 16 maybe\n</think>\n\n#### 18", False, "18", "18"),
        ("<think>\n#### 16\n</think>\n\nShe makes 18 dollars.", False, None, "18"),
        # Never closed: no answer at all, though a stated '#### 18' and a last number sit inside.
        ("<think>\nJanet sells 16 - 3 - 4 = 9 eggs. So #### 18\nWait, maybe 16-3=13", False, None, None),
        ("<think>\nJanet sells 9 eggs at $2: 9*2 = 18", False, None, None),
        # The prompt opened the block (R1-Distill, Qwen3 Thinking-2507): the completion starts inside it.
        ("9*2 = 18, so #### 18", True, None, None),
        ("9*2 = 18\n</think>\n\n#### 18", True, "18", "18"),
        ("9*2 = 18\n</think>\n\nThe answer is 17.", True, "17", "17"),
        # Qwen3's non-thinking reply: an empty block, then the answer.
        ("<think>\n\n</think>\n\n#### 18", False, "18", "18"),
        # A second block opened after the first closed and never closed: still thinking.
        ("<think>a</think> #### 18 <think> hmm 20", False, None, None),
        # No think block: as before.
        ("#### 18", False, "18", "18"),
    ],
)
def test_the_think_block_is_never_scored(text, thinking_open, strict, flexible):
    assert extract_strict(text, thinking_open=thinking_open) == strict
    assert extract_flexible(text, thinking_open=thinking_open) == flexible


def test_a_prompt_opens_a_think_block_only_when_it_ends_inside_one():
    from mathtune.task.score import opens_think

    assert opens_think("<｜User｜>q<｜Assistant｜><think>\n")
    assert opens_think("<|im_start|>assistant\n<think>\n")
    assert not opens_think("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not opens_think("<|im_start|>assistant\n")


def test_score_command_reads_no_think_block_and_counts_the_unclosed_as_truncated(tmp_path, capsys):
    """The four completions of a reasoning model, gold 18: closed then '#### 18' is right; an
    unclosed block is no answer, strict or flexible, and truncated."""
    from mathtune.cli import main

    lines = [
        {"completion": "<think>\nShe sells 9 eggs, 9*2=18.\n</think>\n\n#### 18", "answer": "18"},
        {"completion": "<think>\nJanet sells 16 - 3 - 4 = 9. So #### 18\nWait, maybe 16-3=13", "answer": "18"},
        {"completion": "<think>\nJanet sells 9 eggs at $2: 9*2 = 18", "answer": "18"},
        {"prompt": "<｜User｜>q<｜Assistant｜><think>\n", "completion": "9*2 = 18 so #### 18", "answer": "18"},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["score", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scored = [json.loads(line) for line in (tmp_path / "c.scored.jsonl").read_text().splitlines()]
    assert [(r["pred_strict"], r["pred_flexible"]) for r in scored] == [("18", "18")] + [(None, None)] * 3
    assert [r.get("truncated", False) for r in scored] == [False, True, True, True]
    assert summary["accuracy_strict"] == summary["accuracy_flexible"] == 0.25 and summary["unclosed_think"] == 3


def test_an_evaluation_record_of_an_unclosed_think_block_is_truncated_with_no_answer():
    """eval, the probe and self-consistency all score through build_record."""
    from mathtune.evaluation.records import build_record
    from mathtune.models.generate import Generation
    from mathtune.task.data import Problem

    problem = Problem(id="t-0", question="q", answer="9*2=18\n#### 18", gold="18")
    prompt = "<|im_start|>assistant\n<think>\n"
    record = build_record(problem, prompt, [Generation("9*2 = 18 so #### 18", 8, False)])
    assert (record["pred_strict"], record["pred_flexible"], record["truncated"]) == (None, None, True)
    assert record["error_category"] == "truncated"
    # Self-consistency: the unclosed samples cast no vote; the closed one decides.
    voted = build_record(problem, prompt, [Generation("#### 17", 3, True), Generation("x</think>\n#### 18", 5, False),
                                           Generation("#### 17 ... ", 3, True)])
    assert voted["pred_strict"] == "18" and voted["correct_strict"]
    assert [s["truncated"] for s in voted["samples"]] == [True, False, True]
