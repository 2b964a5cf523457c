"""`mathtune score` on lm-evaluation-harness `--log_samples` files.

The fixture tests/data/lmeval_samples_gsm8k.jsonl is four real lines of the samples file that
lm-eval 0.4.13 wrote for Qwen2.5-Coder-0.5B-Instruct (fp32, CPU) on the first 16 GSM8K test
problems under a local copy of its 5-shot gsm8k task (2026-11-27): problems 3 and 12, each
once per filter (strict-match, flexible-extract). Only the few-shot part of the prompt in
`arguments` was cut; the generations, targets, extractions and metrics are as written.
Problem 3 is right under both tools; on problem 12 the model states no `#### N` and ends on
34.5 (gold 13).
"""

import json
from pathlib import Path

import pytest

from mathtune import cli
from mathtune.core.stats import wilson_interval

FIXTURE = Path(__file__).parent / "data" / "lmeval_samples_gsm8k.jsonl"

# lm-eval's gsm8k exact_match settings (tasks/gsm8k/gsm8k.yaml).
IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
PATTERNS = {"strict-match": ("#### (\\-?[0-9\\.\\,]+)", 0), "flexible-extract": ("(-?[$0-9.,]{2,})|(-?[0-9]+)", -1)}


def fixture_lines() -> list[dict]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def run_score(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(["score", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 1
    assert err.startswith("mathtune: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err


def test_real_samples_file_is_parsed_into_scored_records(tmp_path, capsys):
    out = tmp_path / "scored.jsonl"
    rc, stdout, _ = run_score(capsys, FIXTURE, "--out", out)
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [3, 12]  # one record per problem, not per filter line
    raw = {line["doc_id"]: line["resps"][0][0] for line in fixture_lines()}
    for r in records:
        assert r["completion"] == raw[r["id"]]
        assert r["question"].startswith(("James decides", "Carlos is planting"))
    first, second = records
    assert (first["gold"], first["pred_strict"], first["pred_flexible"]) == ("540", "540", "540")
    assert first["correct_strict"] and first["correct_flexible"]
    assert (second["gold"], second["pred_strict"], second["pred_flexible"]) == ("13", None, "34.5")
    assert not second["correct_strict"] and not second["correct_flexible"]
    # lm-eval's own extraction and verdict for every filter are kept beside mathtune's.
    assert first["lm_eval"] == {"strict-match": {"extracted": "540", "exact_match": 1.0},
                                "flexible-extract": {"extracted": "540", "exact_match": 1.0}}
    assert second["lm_eval"]["strict-match"] == {"extracted": "[invalid]", "exact_match": 0.0}
    assert second["lm_eval"]["flexible-extract"] == {"extracted": "34.5", "exact_match": 0.0}
    assert json.loads(stdout)["out"] == str(out)


def test_accuracy_and_lm_eval_figures_from_real_file(tmp_path, capsys):
    rc, stdout, _ = run_score(capsys, FIXTURE, "--out", tmp_path / "s.jsonl")
    assert rc == 0 and stdout.count("\n") == 1
    summary = json.loads(stdout)
    assert summary["format"] == "lm-eval samples"
    assert summary["n"] == 2
    assert summary["accuracy_strict"] == summary["accuracy_flexible"] == 0.5
    assert summary["ci95_strict"] == summary["ci95_flexible"] == pytest.approx(list(wilson_interval(1, 2)))
    assert summary["lm_eval"] == {
        "strict-match": {"n": 2, "compared_with": "strict", "exact_match": 0.5,
                         "exact_match_differ": 0, "exact_match_differ_ids": []},
        "flexible-extract": {"n": 2, "compared_with": "flexible", "exact_match": 0.5,
                             "exact_match_differ": 0, "exact_match_differ_ids": []},
    }


def lm_eval_verdicts(completion: str, target: str) -> dict[str, tuple[str, float]]:
    """What lm-eval itself extracts and scores for a completion, with its own filter and
    metric code and the gsm8k task's settings."""
    extraction = pytest.importorskip("lm_eval.filters.extraction")
    from lm_eval.api.metrics import exact_match_hf_evaluate

    verdicts = {}
    for name, (pattern, group) in PATTERNS.items():
        extracted = extraction.RegexFilter(regex_pattern=pattern, group_select=group).apply([[completion]], [{}])[0][0]
        score = exact_match_hf_evaluate([extracted], [target], regexes_to_ignore=IGNORE, ignore_case=True)
        verdicts[name] = (extracted, float(score["exact_match"]))
    return verdicts


# Two completions on which the tools judge differently (deliberate differences 1 and 4 of
# mathtune's scorer), with what lm-eval's gsm8k filters extract and score for them;
# test_crafted_verdicts_are_lm_evals_own checks these against lm-eval's code where it is installed.
CRAFTED = {
    100: "He runs 9 sprints of 60 meters.\nThe answer is $540.",  # strict form lm-eval's gsm8k lacks
    101: "He runs 9 sprints of 60 meters.\n#### 540.00",  # number, not string, comparison
}
CRAFTED_VERDICTS = {
    100: {"strict-match": ("[invalid]", 0.0), "flexible-extract": ("$540.", 1.0)},
    101: {"strict-match": ("540.00", 0.0), "flexible-extract": ("540.00", 0.0)},
}


def test_crafted_verdicts_are_lm_evals_own():
    target = fixture_lines()[0]["target"]
    assert {doc_id: lm_eval_verdicts(text, target) for doc_id, text in CRAFTED.items()} == CRAFTED_VERDICTS


def test_disagreement_count_between_the_tools(tmp_path, capsys):
    """Two more problems built from problem 3's real lines, with the crafted completions."""
    lines = fixture_lines()
    crafted, verdicts = CRAFTED, CRAFTED_VERDICTS
    extra = []
    for template in lines[:4:2]:  # problem 3 under strict-match, then under flexible-extract
        assert template["doc_id"] == 3
        for doc_id, text in crafted.items():
            extracted, value = verdicts[doc_id][template["filter"]]
            extra.append({**template, "doc_id": doc_id, "resps": [[text]], "filtered_resps": [extracted],
                          "exact_match": value})
    path = tmp_path / "samples_gsm8k_local.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines + extra))
    rc, stdout, _ = run_score(capsys, path)
    assert rc == 0
    summary = json.loads(stdout)
    assert summary["n"] == 4
    assert summary["accuracy_strict"] == summary["accuracy_flexible"] == 0.75  # problems 3, 100, 101
    strict, flexible = summary["lm_eval"]["strict-match"], summary["lm_eval"]["flexible-extract"]
    assert strict["exact_match"] == 0.25 and flexible["exact_match"] == 0.5
    assert strict["exact_match_differ"] == 2 and strict["exact_match_differ_ids"] == [100, 101]
    assert flexible["exact_match_differ"] == 1 and flexible["exact_match_differ_ids"] == [101]
    assert Path(summary["out"]) == tmp_path / "samples_gsm8k_local.scored.jsonl"  # score's usual default


def test_completions_files_are_scored_as_before(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"completion": "#### 18", "answer": "#### 18"}) + "\n")
    rc, stdout, _ = run_score(capsys, path)
    assert rc == 0
    summary = json.loads(stdout)
    assert summary["accuracy_strict"] == 1.0 and "lm_eval" not in summary


def test_missing_file_is_one_line(tmp_path, capsys):
    rc, _, err = run_score(capsys, tmp_path / "nope.jsonl")
    assert_one_line_error(rc, err, "file not found", "nope.jsonl")


def test_line_that_is_not_json_is_one_line(tmp_path, capsys):
    path = tmp_path / "samples.jsonl"
    path.write_text(FIXTURE.read_text(encoding="utf-8").splitlines()[0] + "\n{not json\n")
    rc, _, err = run_score(capsys, path)
    assert_one_line_error(rc, err, f"{path}:2", "malformed JSON")


def test_file_of_neither_format_is_one_line(tmp_path, capsys):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"question": "q", "output": "#### 3"}) + "\n")
    rc, _, err = run_score(capsys, path)
    assert_one_line_error(rc, err, f"{path}:1", "neither", "--log_samples")


def test_later_line_of_another_format_is_one_line(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    path.write_text(FIXTURE.read_text(encoding="utf-8").splitlines()[0] + "\n"
                    + json.dumps({"completion": "#### 3", "answer": "3"}) + "\n")
    rc, _, err = run_score(capsys, path)
    assert_one_line_error(rc, err, f"{path}:2", "not an lm-evaluation-harness sample line")


def test_two_runs_appended_to_one_file_is_one_line(tmp_path, capsys):
    """lm-eval opens the samples file for appending: a rerun with the same date id doubles it."""
    path = tmp_path / "twice.jsonl"
    text = FIXTURE.read_text(encoding="utf-8")
    path.write_text(text + text)
    rc, _, err = run_score(capsys, path)
    assert_one_line_error(rc, err, f"{path}:5", "appears twice", "strict-match")


def test_several_generations_per_problem_is_one_line(tmp_path, capsys):
    line = fixture_lines()[0]
    line["resps"] = [["#### 540", "#### 541"]]
    path = tmp_path / "repeats.jsonl"
    path.write_text(json.dumps(line) + "\n")
    rc, _, err = run_score(capsys, path)
    assert_one_line_error(rc, err, f"{path}:1", "2 generations")
