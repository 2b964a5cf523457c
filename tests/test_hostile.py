"""Model output is untrusted text: every kind of hostile completion scores and classifies
safely, in bounded time, and is never executed. Random text from hypothesis too."""

import builtins
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathtune.task.score import score_completion
from mathtune.task.taxonomy import arithmetic_slips, classify_error

GOLD_SOLUTION = "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"
HOSTILE = {
    "long digits": "9" * 100_000,
    "huge exponent": "The answer is 1e999999",
    "tower": "10**10**10 = 5\n#### 10**10**10",
    "code": "__import__('os').system('touch /tmp/mathtune-pwned') #### 7",
    "deep brackets": "(" * 10_000 + "1" + ")" * 10_000 + " = 1\n#### 1",
    "deep brackets in an equation": "(" * 10_000 + "1+1" + ")" * 10_000 + " = 2",
    "script": "<script>alert(1)</script> #### 7",
    "control and invalid unicode": "\x00\x01\x1b[31m\ud800\udfff #### 7",
    "one megabyte": ("2 + 2 = 5. " * 100_000) + "#### 7",
    "huge products": "99999999999999999999 * 99999999999999999999 * 99999999999999999999 = 1\n" * 100,
}


def _judge(text: str) -> tuple[dict, str | None]:
    scored = score_completion(text, "7")
    record = {"completion": text, "answer": GOLD_SOLUTION, "gold": "7", "truncated": False, **scored}
    return scored, classify_error(record)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Scoring must never evaluate or run what a model wrote."""
    def refuse(*args, **kwargs):
        raise AssertionError("model text reached eval/exec/system")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    monkeypatch.setattr(os, "system", refuse)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_completion_is_scored_safely(name, nothing_runs):
    start = time.monotonic()
    scored, category = _judge(HOSTILE[name])
    assert time.monotonic() - start < 10  # a bound against hangs, not a speed figure
    assert scored["correct_strict"] in (True, False) and scored["correct_flexible"] in (True, False)
    assert category is None or isinstance(category, str)
    assert not os.path.exists("/tmp/mathtune-pwned")


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_random_text_never_raises(text):
    _judge(text)
    arithmetic_slips(text)


ARITHMETIC = st.text(alphabet="0123456789+-*/%().,=$ \n#eE", max_size=300)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(ARITHMETIC, ARITHMETIC)
def test_random_arithmetic_soup_never_raises(before, after):
    _judge(before + "\n#### " + after)
    arithmetic_slips(before)


def test_a_run_of_hostile_completions_analyses_and_reports_safely(tmp_path, gsm8k_dir):
    """Every hostile completion as a record of a run: the analysis and both reports are built
    in bounded time, the text is shown escaped, and nothing it says runs (the marker file of
    the code sample never appears; the imports of a report build need exec, so the fixture
    that forbids it guards the scoring tests above)."""
    import json

    from synthetic_run import write_run

    from mathtune.pipeline import rebuild_report
    from mathtune.task.taxonomy import classify_error as classify

    run = write_run(tmp_path, gsm8k_dir, n_problems=len(HOSTILE))
    for model in ("base", "tuned"):
        path = run / "eval" / f"{model}.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines()]
        for record, text in zip(records, HOSTILE.values()):
            record.update(completion=text, **score_completion(text, record["gold"]), truncated=False)
            record["error_category"] = classify(record)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    start = time.monotonic()
    rebuild_report(run)
    assert time.monotonic() - start < 120  # a bound against hangs, not a speed figure
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower() and not os.path.exists("/tmp/mathtune-pwned")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page or "alert(1)" not in page
