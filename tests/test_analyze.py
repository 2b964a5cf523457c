import json
from pathlib import Path

import pytest

from mathtune.analysis.analyze import build_analysis, run_analysis
from mathtune.analysis.contamination import ngram_overlap
from mathtune.analysis.training import TREND_THRESHOLD_PCT, read_training_curves, training_next_step, training_trend
from mathtune.core.errors import MathtuneError
from mathtune.report.explanations import seed_claim_text, training_advice
from mathtune.task.taxonomy import CATEGORIES
from mathtune.evaluation.resolve import settled
from mathtune.task.train_summary import TrainSummary
from synthetic_run import full_train_summary, write_run


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory, gsm8k_dir):
    return write_run(tmp_path_factory.mktemp("plateau"), gsm8k_dir, shape="plateaued")


@pytest.mark.parametrize("shape, verdict", [("improving", "still improving"), ("plateaued", "plateaued"),
                                            ("overfitting", "overfitting")])
def test_trend_verdict_follows_the_curves(tmp_path, gsm8k_dir, shape, verdict):
    run = write_run(tmp_path, gsm8k_dir, shape=shape)
    training = build_analysis(run).training
    assert training["trend"]["verdict"] == verdict
    # The recommendation names the verdict and quotes the numbers behind it.
    rec = training_advice(training["trend"], training["recommendation"], training.get("exact_match"))
    assert rec.lower().startswith(verdict)
    dec = training["trend"]["validation_decrease_pct"]
    assert f"validation loss {'fell' if dec > 0 else 'rose'} {abs(dec):.1f}% over the last 3 evaluations" in rec


def test_trend_rules_on_hand_made_curves():
    def curves(train, val):
        return {"train": {"step": list(range(1, len(train) + 1)), "loss": train},
                "validation": {"step": [i * 10 for i in range(1, len(val) + 1)], "loss": val}}

    flat = [1.0] * 20
    assert training_trend(curves(flat, [1.0, 1.0, 1.0]))["verdict"] == "plateaued"
    falling = [2.0 - 0.05 * i for i in range(20)]
    assert training_trend(curves(falling, [1.2, 1.3, 1.4]))["verdict"] == "overfitting"
    assert training_trend(curves(falling, [1.4, 1.3, 1.2]))["verdict"] == "still improving"
    # Without validation the training curve decides.
    assert training_trend(curves(falling, []))["verdict"] == "still improving"
    assert training_trend(curves(flat, []))["definition"]["threshold_pct"] == TREND_THRESHOLD_PCT


def _advice(trend, summary, curves, config) -> str:
    """The analysis' next step for a trend, in the report's words (summary: the train/summary.json
    fields a test sets, None for none)."""
    typed = TrainSummary(**full_train_summary(**summary)) if summary else None
    return training_advice(trend, training_next_step(trend, typed, curves, config))


def test_no_verdict_from_too_few_points():
    """Two validation points or two logged steps make no trend, and the text says what to run."""
    two = {"train": {"step": [1, 2], "loss": [2.0, 1.0], "epoch": [0.5, 1.0]},
           "validation": {"step": [0, 2], "loss": [2.0, 2.0], "epoch": [0, 1.0]}}
    trend = training_trend(two)
    assert trend["verdict"] == "not enough points" and trend["validation_points_used"] == 2
    rec = _advice(trend, {"global_step": 2}, two, None)
    assert rec.startswith("Not enough validation points for a verdict: 2 evaluations")
    assert "unlikely to help" not in rec and "train.eval_every_steps" in rec
    no_val = {"train": two["train"], "validation": {"step": [], "loss": [], "epoch": []}}
    assert training_trend(no_val)["verdict"] == "not enough points"
    # Both steps were logged: logging more often is not advice, training longer is.
    rec = _advice(training_trend(no_val), {}, no_val, None)
    assert "train.logging_steps" not in rec and "train longer" in rec
    sparse = {"train": {"step": [2, 4], "loss": [2.0, 1.0], "epoch": [0.5, 1.0]}, "validation": no_val["validation"]}
    assert "train.logging_steps, now 2" in _advice(training_trend(sparse), {}, sparse, None)


def test_advice_never_names_a_setting_already_in_effect():
    """A 1-step run that validated every step (at steps 0 and 1) was told to 'set
    train.eval_every_steps to 1 (this run took 1 steps)': it was 1. It needs more steps."""
    from conftest import tiny_train_config
    one = {"train": {"step": [1], "loss": [6.9], "epoch": [1.0]},
           "validation": {"step": [0, 1], "loss": [6.9, 6.8], "epoch": [0, 1.0]}}
    config = tiny_train_config(Path("model"), Path("data"), "train.eval_every_steps=1")
    rec = _advice(training_trend(one), {"global_step": 1}, one, config)
    assert "set train.eval_every_steps" not in rec and "1 steps" not in rec
    assert "This run took 1 step, validating every 1 step" in rec and "2 steps or more" in rec
    assert "train longer" in rec
    # Where validating more often would help, that is the advice, with the value now in effect.
    ten = {"train": {"step": list(range(1, 11)), "loss": [1.0] * 10, "epoch": [0.1] * 10},
           "validation": {"step": [0, 10], "loss": [2.0, 1.0], "epoch": [0, 1.0]}}
    config = tiny_train_config(Path("model"), Path("data"), "train.eval_every_steps=50")
    rec = _advice(training_trend(ten), {"global_step": 10}, ten, config)
    assert "set train.eval_every_steps to 2 or less (this run took 10 steps, now 50)" in rec


def test_eval_lines_merged_or_separate(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 2.0, "mean_token_accuracy": 0.5},
            {"step": 2, "loss": 1.5, "mean_token_accuracy": 0.6, "eval_loss": 1.7, "eval_mean_token_accuracy": 0.55},
            {"step": 3, "loss": 1.2, "mean_token_accuracy": 0.7},
            {"step": 3, "eval_loss": 1.4, "eval_mean_token_accuracy": 0.65},
            {"step": 3, "train_runtime": 12.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = read_training_curves(path)
    assert curves["train"]["step"] == [1, 2, 3] and curves["train"]["loss"] == [2.0, 1.5, 1.2]
    assert curves["validation"]["step"] == [2, 3] and curves["validation"]["loss"] == [1.7, 1.4]


def test_benchmark_is_paired_on_id(plateau_run):
    bench = build_analysis(plateau_run).benchmark
    base, tuned = bench["models"]["base"], bench["models"]["tuned"]
    assert base["n"] == tuned["n"] == 24
    paired = bench["paired"]
    s = paired["strict"]
    assert s["improved"] - s["regressed"] == tuned["strict"]["correct"] - base["strict"]["correct"]
    assert s["ci95_pp"][0] <= s["difference_pp"] <= s["ci95_pp"][1]
    assert 0 < s["mcnemar_p"] <= 1
    assert bench["protocol"].startswith("GSM8K test")


def test_shuffled_tuned_file_gives_the_same_paired_numbers(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir)
    before = build_analysis(run).benchmark["paired"]
    path = run / "eval" / "tuned.jsonl"
    path.write_text("".join(reversed(path.read_text().splitlines(keepends=True))))
    after = build_analysis(run).benchmark["paired"]
    for key in ("improved", "regressed", "difference_pp", "mcnemar_p"):
        assert before["strict"][key] == after["strict"][key]


def test_errors_every_wrong_answer_counted_once(plateau_run):
    analysis = build_analysis(plateau_run)
    for model in ("base", "tuned"):
        wrong = analysis.benchmark["models"][model]["n"] - analysis.benchmark["models"][model]["strict"]["correct"]
        assert sum(analysis.errors["counts"][model].values()) == wrong
        assert sum(r["n"] for r in analysis.errors["accuracy_by_steps"][model]) == 24
    examples = analysis.errors["examples"]
    assert set(examples) == set(CATEGORIES)
    assert all(len(v) <= 3 for v in examples.values())
    assert all(ex["completion"] for v in examples.values() for ex in v)


def test_contamination_finds_the_leaked_question(plateau_run):
    c = build_analysis(plateau_run).contamination
    assert c["available"] and c["n"] == 13
    assert c["test_questions_half_overlapping"] == 1
    assert sum(c["histogram_counts"]) == c["test_questions"]


def test_ngram_overlap_on_literal_strings():
    q = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    result = ngram_overlap([q], [q.upper(), "too short to have a thirteen gram"])
    assert result["test_questions_with_any_overlap"] == 1
    assert result["histogram_counts"][-1] == 1 and result["histogram_counts"][0] == 1


def test_unreachable_data_source_is_recorded_not_raised(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir)
    config = (run / "config.yaml").read_text().replace(str(tmp_path / "data"), str(tmp_path / "gone"))
    (run / "config.yaml").write_text(config)
    c = build_analysis(run).contamination
    assert c["available"] is False and "not reachable" in c["reason"]


def test_the_data_source_is_named_resolved_as_what_ran_names_it(tmp_path, gsm8k_dir):
    """Data given through a link (…/shared/gsm8k) reads as the folder it is, in the header as in
    "What ran": one path for the data in the whole report."""
    run = write_run(tmp_path, gsm8k_dir)
    (tmp_path / "linked").symlink_to(tmp_path / "data")
    config = (run / "config.yaml").read_text().replace(str(tmp_path / "data"), str(tmp_path / "linked"))
    (run / "config.yaml").write_text(config)
    assert build_analysis(run).run.data_source == str((tmp_path / "data").resolve())


def test_eval_only_folder(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir, with_train=False)
    analysis = build_analysis(run)
    assert analysis.training == {"available": False, "ran": False,
                                    "reason": "no training in this run (no train/metrics.jsonl)"}
    assert analysis.seed_claim["available"] is False
    assert analysis.benchmark["paired"]["available"]


def test_a_report_without_training_leaves_out_what_did_not_run(tmp_path, gsm8k_dir):
    """An evaluation or probe folder's report has no Training or Token accuracy section that
    would only say "not available"; a run that trained keeps both."""
    from mathtune.report.build import build_report

    run = write_run(tmp_path / "evaluated", gsm8k_dir, with_train=False)
    run_analysis(run)
    build_report(run)
    text = (run / "report.md").read_text()
    assert "## Training" not in text and "Token accuracy is not" not in text and "## Benchmark" in text
    trained_run = write_run(tmp_path / "trained", gsm8k_dir)
    run_analysis(trained_run)
    build_report(trained_run)
    trained = (trained_run / "report.md").read_text()
    assert "## Training" in trained and "## Token accuracy is not problem-solving accuracy" in trained


def test_seed_claim_puts_token_accuracy_next_to_exact_match(plateau_run):
    claim = build_analysis(plateau_run).seed_claim
    assert claim["token_accuracy_validation_end_pct"] > claim["gsm8k_exact_match_strict_pct"]
    assert "teacher-forced" in seed_claim_text(claim)
    assert f"{claim['gsm8k_exact_match_strict_pct']}%" in seed_claim_text(claim)


def test_run_analysis_writes_json_atomically(plateau_run):
    path = run_analysis(plateau_run)
    assert path == plateau_run / "analysis.json"
    assert json.loads(path.read_text())["schema_version"] == 1
    assert not list(plateau_run.glob(".analysis.json.*"))


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(MathtuneError, match="nothing to analyze"):
        build_analysis(tmp_path)
    with pytest.raises(MathtuneError, match="not found"):
        build_analysis(tmp_path / "missing")


def test_diverged_steps_and_missing_values_do_not_break_the_analysis(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir)
    with (run / "train" / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 101, "loss": NaN, "mean_token_accuracy": NaN}\n')
        fh.write('{"step": 102, "loss": 0.5}\n')
    (run / "train" / "summary.json").write_text(json.dumps(full_train_summary()))
    path = run_analysis(run)
    text = path.read_text()
    assert "NaN" not in text
    training = json.loads(text)["training"]
    # A NaN loss is a divergence: said with its step, and no curve or table of the broken run.
    assert not training["available"] and training["diverged"]["step"] == 101
    assert "curves" not in training
    from mathtune.report.build import build_report

    assert "diverged at step 101" in build_report(run)[-2].read_text()


def test_missing_values_do_not_break_the_analysis(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir)
    with (run / "train" / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 102, "loss": 0.5}\n')
    (run / "train" / "summary.json").write_text(json.dumps(full_train_summary()))
    training = json.loads(run_analysis(run).read_text())["training"]
    assert training["curves"]["train"]["step"][-1] == 102
    assert training["cost_usd"] is None and training["best_step"] is None
    from mathtune.report.build import build_report

    assert "n/a" in build_report(run)[-2].read_text()  # report.md shows the gaps as n/a


def test_eval_only_folder_names_its_model_and_data(tiny_model_dir, small_data_dir, tmp_path):
    """No config.yaml: the summaries still say what ran, and analysis.json carries it."""
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest

    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=3, max_new_tokens=8, batch_size=3)
    evaluate(settled(req, tmp_path, "base"), tmp_path, name="base")
    run = build_analysis(tmp_path).run
    assert run.base_model == str(tiny_model_dir)
    assert run.data_source.startswith(str((small_data_dir / "test.jsonl").resolve()) + " (sha256 ")
    (stage,) = run.provenance["stages"]
    assert stage["stage"] == "eval base" and stage["dtype"] == "float32" and stage["attention"] == "sdpa"
    assert stage["versions"]["mathtune"] and stage["batch_size"] == 3


def test_an_edited_analysis_is_kept_unless_overwrite(tmp_path, gsm8k_dir, capsys):
    from mathtune.analysis.analyze import CHECKSUM_KEY
    from mathtune.cli import main

    run = write_run(tmp_path, gsm8k_dir, n_problems=6)
    assert main(["report", str(run)]) == 0
    path = run / "analysis.json"
    written = path.read_text()
    assert main(["report", str(run)]) == 0 and path.read_text() == written  # its own file: rebuilt, the same
    edited = written.replace('"schema_version": 1', '"schema_version": 1, "note": "mine"')
    path.write_text(edited)
    assert main(["report", str(run)]) == 1 and path.read_text() == edited
    assert "changed after mathtune wrote it" in capsys.readouterr().err
    assert main(["report", str(run), "--overwrite"]) == 0 and path.read_text() == written
    # Without its checksum mathtune did not write it as it stands: kept, like an edited one.
    unsigned = json.loads(written)
    del unsigned[CHECKSUM_KEY]
    path.write_text(json.dumps(unsigned))
    assert main(["report", str(run)]) == 1 and json.loads(path.read_text()) == unsigned
    assert "changed after mathtune wrote it" in capsys.readouterr().err


def test_an_evaluation_still_running_is_not_a_model(tmp_path, gsm8k_dir):
    from mathtune.analysis.common import eval_record_files

    run = write_run(tmp_path, gsm8k_dir, n_problems=6)
    for name in ("base-verify.partial.jsonl", "base-verify.partial.rank1.jsonl", "base.scored.jsonl"):
        (run / "eval" / name).write_text('{"id": "x"}\n')
    assert list(eval_record_files(run)) == ["base", "tuned"]
