"""Answer extraction and exact-match scoring: pure functions over strings.

    mathtune score completions.jsonl [--out scored.jsonl]

Two extractors, named as in the field's reference evaluator (lm-evaluation-harness):

* strict   -- the model stated its final answer in an expected form: `#### N`,
              `The answer is N`, `The final answer is N` or `\\boxed{N}` (the last such statement).
* flexible -- the last number anywhere in the text.

Deliberate differences from lm-evaluation-harness's `strict-match` / `flexible-extract`
filters (each is covered by a test in tests/test_score.py):

1. Numbers are compared as numbers, not strings: `18.0`, `18.00`, `$18` and `18` are equal.
   lm-eval compares strings after deleting `,` `$` and one trailing `.`, so `18.0 != 18`.
2. `The answer is N` needs no character after N. lm-eval's gsm8k-cot pattern
   `The answer is (\\-?[0-9\\.\\,]+).` ends in an unescaped `.` that must consume one more
   character, so "The answer is 18" at the very end of a text is read as "1".
3. A number is digits with optional thousands groups and one decimal part. `1,800` is 1800;
   `1,8` is not a number 18 (it reads as 1 then 8); a sentence-final `.` is never part of it.
   lm-eval's flexible pattern `(-?[$0-9.,]{2,})|(-?[0-9]+)` also matches runs such as `...`,
   `,,` or `$.` and then fails the comparison on them.
4. Every prompt accepts all four strict forms (plus markdown bold, `$`, and a `:` after
   "answer is"); lm-eval's chat/plain task only accepts `#### N` with no `$`, its CoT task
   only `The answer is N.` with no `$`.
5. The strict answer is the last stated one; lm-eval takes the first. Small chat models asked
   for `#### N` often open with a markdown heading (`#### 1. **Understanding the problem**`)
   or a premature `#### 10` line, then work the problem and end with `\\boxed{22}`: their
   final answer is the last one they state. (Under the few-shot prompts the stop strings
   leave one statement, so first and last agree there.) The flexible answer is the last
   number, as in lm-eval.
6. A `####` heading followed by list numbering (`#### 1. Text` on one line) is not an answer;
   lm-eval reads it as 1.

Reasoning models (Qwen3, DeepSeek-R1 distills) think inside `<think>...</think>` before they
answer; `<think>` is an ordinary token in their vocabularies, so decoded text keeps the tags.
Both extractors read only the text after the last closing tag, as the serving engines'
reasoning parsers split a reply. A think block that never closes (the budget ran out while the
model was thinking) leaves no answer, strict or flexible, and the evaluation counts it as
truncated: a number the model was still weighing is not its answer. A prompt that itself opens
the block (R1-Distill's and Qwen3 Thinking-2507's generation prompts end in `<think>\n`) starts
its completion inside it: `thinking_open`.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal, InvalidOperation

# A number as people write it in GSM8K solutions: optional sign, optional $, digits with
# optional comma thousands groups, optional decimals. "1,8" deliberately does not match as one.
_NUM = r"-?\$?\s?-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUMBER_RE = re.compile(r"(?<![\d.])" + _NUM)

# Characters a model puts between "answer is" and the number: spaces, markdown bold,
# a colon, a dollar sign, LaTeX inline-math openers.
_GAP = r"[\s:*$\\(\[{]*"
STRICT_RES = [
    # The number must end there (no more digits) and not be list numbering: "#### 1. Text".
    re.compile(r"####\s*\**\s*(" + _NUM + r")(?!\d|,\d|\.\d|\.[ \t]+\S)"),
    re.compile(r"the\s+(?:final\s+)?answer\s+is" + _GAP + r"(?:\\text\{\s*)?(" + _NUM + ")", re.I),
    re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?\\?(" + _NUM + ")"),
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_MINUS_SIGNS = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})


def normalize_number(text: str | None) -> str | None:
    """'$1,800.00' -> '1800', '-5' -> '-5', '0.50' -> '0.5'; None when not a number."""
    if text is None:
        return None
    cleaned = text.translate(_MINUS_SIGNS).replace("$", "").replace(",", "").replace(" ", "")
    if cleaned.count("-") > 1:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    # Formatted from the Decimal itself: int() refuses more than 4300 digits (a looping model
    # writes such runs) and normalize() would round to 28 significant digits.
    digits = format(value, "f")
    if "." in digits:
        digits = digits.rstrip("0").rstrip(".")
    return "0" if digits in ("-0", "0") else digits


def _last_strict_match(text: str) -> str | None:
    best: tuple[int, str] | None = None
    for pattern in STRICT_RES:
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), m.group(1))
    return best[1] if best else None


def opens_think(prompt: str) -> bool:
    """Whether a prompt ends inside an open think block, so that its completion starts in the
    model's reasoning (R1-Distill's and Qwen3 Thinking-2507's generation prompts end '<think>\\n';
    Qwen3's non-thinking prompt ends with the closed, empty block)."""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def answer_text(completion: str, *, thinking_open: bool = False) -> str | None:
    """The part of a completion an answer is read from: everything after the last `</think>`,
    or the whole text when it has no think block; None when a think block never closes
    (thinking_open: the prompt opened one)."""
    close = completion.rfind(THINK_CLOSE)
    if close != -1:
        rest = completion[close + len(THINK_CLOSE):]
        return None if THINK_OPEN in rest else rest
    return None if thinking_open or THINK_OPEN in completion else completion


def think_unclosed(completion: str, *, thinking_open: bool = False) -> bool:
    """A think block that never closes: no answer, counted as truncated."""
    return answer_text(completion, thinking_open=thinking_open) is None


def extract_strict(completion: str, *, thinking_open: bool = False) -> str | None:
    """The last explicitly stated final answer, normalized; None when the model stated none
    (outside any think block)."""
    text = answer_text(completion or "", thinking_open=thinking_open)
    if not text:
        return None
    return normalize_number(_last_strict_match(text.translate(_MINUS_SIGNS)))


def extract_flexible(completion: str, *, thinking_open: bool = False) -> str | None:
    """The last number in the text (outside any think block), normalized; None when there is
    no number at all."""
    text = answer_text(completion or "", thinking_open=thinking_open)
    if not text:
        return None
    matches = NUMBER_RE.findall(text.translate(_MINUS_SIGNS))
    return normalize_number(matches[-1]) if matches else None


def extract_gold(answer: str) -> str:
    """Gold number from a GSM8K solution ('... #### 18') or a bare number ('18', '1,800')."""
    text = answer.strip()
    if "####" in text:
        text = text.rsplit("####", 1)[1].strip()
    gold = normalize_number(text)
    if gold is None:
        raise ValueError(f"gold answer is not a number: {text[:40]!r}")
    return gold


def numbers_equal(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    return Decimal(pred) == Decimal(gold)


def score_completion(completion: str, gold: str, *, thinking_open: bool = False) -> dict:
    """The four fields `mathtune score` adds to every record (README: Scoring)."""
    pred_strict = extract_strict(completion, thinking_open=thinking_open)
    pred_flexible = extract_flexible(completion, thinking_open=thinking_open)
    return {
        "pred_strict": pred_strict,
        "pred_flexible": pred_flexible,
        "correct_strict": numbers_equal(pred_strict, gold),
        "correct_flexible": numbers_equal(pred_flexible, gold),
    }


def majority_vote(preds: list[str | None]) -> str | None:
    """Most common non-null answer; ties go to the answer seen first (deterministic)."""
    counts = Counter(p for p in preds if p is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(p for p in preds if p is not None and counts[p] == top)
