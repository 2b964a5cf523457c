"""Gold answers as data sets write them: the final number, and the form that states it.

    gold, form = read_gold("... So she has 18 dollars. The answer is: 18.")   # ('18', 'The answer is: N')

A gold answer is a solution that states its final number in a form the strict scorer accepts
('#### N', 'The answer is N' with or without a colon, 'The final answer is N', '\\boxed{N}'), or
a bare number. GSM8K's solutions end in '#### N', MetaMathQA's in 'The answer is: N', the
MATH-style sets' in '\\boxed{N}'. The solution is trained as written; the form it uses is what
the chat prompt then asks for (prompt_form), in training and in evaluation alike.

The forms are read with the scorer's own patterns (task.score.STRICT_RES), so what counts as a
stated answer in the data is what counts as one in a model's completion.
"""

from __future__ import annotations

from collections import Counter

from mathtune.task.score import STRICT_RES, extract_gold, normalize_number

HASH_FORM = "#### N"
BOXED_FORM = "\\boxed{N}"
STATED_FORMS = (HASH_FORM, "The answer is: N", "The answer is N", "The final answer is: N",
                "The final answer is N", BOXED_FORM)
BARE_FORM = "bare number"
"""A bare number as the whole answer: trained as '#### N' (there is no solution to train)."""
NONE_STATED = "no stated answer"
"""A solution whose final number comes from a field of its own (fields.final) and states none."""


def _form_of(pattern_index: int, matched: str) -> str:
    if pattern_index == 0:
        return HASH_FORM
    if pattern_index == 2:
        return BOXED_FORM
    head = matched.lower().split("is", 1)
    final = "final" in head[0]
    colon = ":" in head[1] if len(head) > 1 else False
    return f"The {'final ' if final else ''}answer is{':' if colon else ''} N"


def stated_answer(text: str) -> tuple[str | None, str | None]:
    """(the number, its form) of the last answer the text states in a strict form, as the
    scorer reads a completion; (None, None) when it states none."""
    best: tuple[int, int, str, str] | None = None
    for index, pattern in enumerate(STRICT_RES):
        for m in pattern.finditer(text):
            if best is None or m.start() > best[0]:
                best = (m.start(), index, m.group(0), m.group(1))
    if best is None:
        return None, None
    return normalize_number(best[3]), _form_of(best[1], best[2])


def read_gold(answer: str) -> tuple[str, str]:
    """(the normalized gold number, the answer's form) of a gold answer; ValueError when the
    answer neither states a number in a strict form nor is a bare number. A solution with
    '####' keeps GSM8K's own reading: the text after the last '####' (as lm-evaluation-harness
    reads GSM8K's gold)."""
    text = answer.strip()
    if "####" in text:
        return extract_gold(text), HASH_FORM
    bare = normalize_number(text)
    if bare is not None:
        return bare, BARE_FORM
    number, form = stated_answer(text)
    if number is None or form is None:
        raise ValueError("no stated final answer")
    return number, form


def prompt_form(forms: Counter | dict) -> str:
    """The answer form the chat prompt asks for: the training data's most common stated form
    (a bare number trains as '#### N'); '#### N' when the data states none."""
    stated = Counter({(HASH_FORM if f == BARE_FORM else f): n for f, n in forms.items() if f != NONE_STATED})
    if not stated:
        return HASH_FORM
    top = max(stated.values())
    return next(f for f in STATED_FORMS if stated.get(f) == top)


def form_pattern(form: str) -> str:
    """How a prompt writes a form: '#### N' -> '#### <number>'."""
    return form.replace("N", "<number>") if form in STATED_FORMS else HASH_FORM.replace("N", "<number>")
