"""The records stages hand to each other: written as the files always were (key order, indentation,
keys left out), read back the same, and a file missing a field or holding an unknown one is a
one-line error naming the file and the field."""

from __future__ import annotations

import json

import pytest

from mathtune.core.analysis_record import Analysis, read_analysis, write_analysis
from mathtune.core.errors import MathtuneError
from mathtune.evaluation.extra_summary import ExtraTaskResult, read_extra_summary, write_extra_summary
from mathtune.evaluation.summary import EvalSummary, read_eval_summary, write_eval_summary
from mathtune.task.plan_record import Plan, read_plan, write_plan_record
from mathtune.task.probe_summary import read_probe_summary, write_probe_summary
from mathtune.task.train_summary import ExactMatch, TrainSummary, read_train_summary, write_train_summary

SESSION = {"started": "2026-12-07T13:44:01+00:00", "problems": 2, "generated_tokens": 40, "wall_time_s": 3.5}
EVAL = {"n": 2, "accuracy_strict": 0.5, "accuracy_flexible": 0.5, "ci95_strict": [0.09, 0.91],
        "ci95_flexible": [0.09, 0.91], "correct_strict": 1, "correct_flexible": 1, "generated_tokens": 40,
        "truncated": 0, "sessions": [SESSION], "wall_time_s": 3.5, "timed_problems": 2, "untimed_problems": 0,
        "problems_per_s": 0.57, "tokens_per_s": 11.4, "batch_size": 8, "device": "cpu", "dtype": "float32",
        "attention": "sdpa", "protocol": "GSM8K test, 2 problems", "model": "m", "adapter": "adapter",
        "data": "gsm8k", "split": "test", "limit": 2, "prompt": "chat", "samples": 1, "temperature": 0.0,
        "max_new_tokens": 64, "seed": 42, "val_fraction": 0.1, "prompt_date": "2026-12-07",
        "adapter_sha256": "ab12", "dtype_requested": "float32", "data_name": "GSM8K",
        "data_identity": {"kind": "hub", "name": "GSM8K"}, "world_size": 1, "decoder": "dynamic_cache",
        "fast_paths": {"decoder": {"kind": "decoder", "check": None}}, "quantization_record": None,
        "adapter_settings": {"variant": "LoRA", "r": 8}, "adapter_merged": True,
        "platform": {"python": "3.11.7", "torch": None}}
TRAIN = {"method": "sft", "model": "m", "global_step": 8, "max_steps": 8, "epochs_completed": 2.0,
         "select_by": "exact_match", "best_step": 8, "best_eval_loss": 0.35,
         "best_val_exact_match": {"correct": 1, "n": 2}, "best_checkpoint": "train/checkpoints/checkpoint-8",
         "stopped_early": False, "early_stopping_patience": 5, "train_examples": 16, "val_examples": 2,
         "dropped_too_long": {"train": 0, "validation": 0}, "data_sources": [{"source": "d", "examples": 16}],
         "answer_forms": {"hash": 16}, "prompt_answer_form": "hash", "wall_time_s": 467.63, "tokens_seen": 4388,
         "tokens_seen_kind": "input tokens", "tokens_per_s": 9.38, "peak_memory_bytes": 7100977152,
         "peak_memory_kind": "cpu_max_rss", "trainable_params": 4, "base_params": 6, "total_params": 10,
         "device": "cpu", "world_size": 1, "dtype": "float32", "dtype_requested": "float32",
         "attention": "sdpa", "quantization_record": None, "batch_size": 2, "trust_remote_code": False,
         "data_identity": {"kind": "local"}, "gpu_hourly_usd": 2.0, "cost_usd": None,
         "cost_note": "not applicable on CPU", "resumed_from_step": None,
         "versions": {"python": "3.11.7"}, "adapter_settings": {"variant": "LoRA", "trained_dtype": "float32"},
         "lm_head": "lean", "fast_paths": {}}
GRPO_TRAIN = TRAIN | {"method": "grpo", "lm_head": None}  # no loss head of its own: the key is there, null
CASES = [(EVAL, read_eval_summary, write_eval_summary), (TRAIN, read_train_summary, write_train_summary),
         (GRPO_TRAIN, read_train_summary, write_train_summary)]


def _as_written(obj: dict) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("given, read, write", CASES)
def test_a_record_is_written_byte_for_byte_as_read(tmp_path, given, read, write):
    path, again = tmp_path / "summary.json", tmp_path / "again.json"
    path.write_text(_as_written(given))
    write(again, read(path))
    assert again.read_text() == path.read_text()


def test_nested_parts_are_records_and_absent_keys_stay_absent(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(_as_written(EVAL))
    summary = read_eval_summary(path)
    assert isinstance(summary, EvalSummary) and summary.sessions[0].wall_time_s == 3.5
    assert summary.resumed_from is None and summary.thinking is None
    path.write_text(_as_written(TRAIN))
    train = read_train_summary(path)
    assert isinstance(train, TrainSummary) and train.best_val_exact_match == ExactMatch(correct=1, n=2)
    write_train_summary(path, train)
    assert "rate_note" not in json.loads(path.read_text()) and "rft" not in json.loads(path.read_text())


@pytest.mark.parametrize("given, read, write", CASES)
def test_a_missing_or_unknown_field_is_one_line_naming_the_file(tmp_path, given, read, write):
    refuses_a_missing_or_unknown_field(tmp_path, given, read, "model")


def refuses_a_missing_or_unknown_field(tmp_path, given: dict, read, field: str) -> None:
    """A file without `field`, and one with a key the record does not know: one line naming the file."""
    path = tmp_path / "old.json"
    path.write_text(_as_written({k: v for k, v in given.items() if k != field}))
    with pytest.raises(MathtuneError, match=rf"old\.json: missing field '{field}'") as err:
        read(path)
    assert "\n" not in str(err.value)
    path.write_text(_as_written({**given, "renamed_key": 1}))
    with pytest.raises(MathtuneError, match=r"old\.json: unknown field 'renamed_key'") as err:
        read(path)
    assert "\n" not in str(err.value)


def test_a_nested_part_missing_a_field_names_where(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(_as_written({**EVAL, "sessions": [{k: v for k, v in SESSION.items() if k != "started"}]}))
    with pytest.raises(MathtuneError, match=r"s\.json: sessions: missing field 'started' of DecodingSession"):
        read_eval_summary(path)


SPLIT = {"examples": 16, "tokens": 1800, "mean": 112.5, "p99": 180, "max": 190, "dropped_over_max_length": 0}
PLAN = {"name": "demo", "device": "cpu", "world_size": 1,
        "prompts": {"train": "chat", "eval": "chat", "thinking": "auto"},
        "data": {"train": SPLIT, "validation": {**SPLIT, "examples": 2}, "test_problems": 8, "max_length": 512},
        "train_tokens_per_epoch": 1800, "optimizer_steps": 8, "steps_per_epoch": 4, "validation_passes": 3,
        "trainable_params": 4, "base_params": 6, "total_params": 10, "params_definition": "total = base + adapter",
        "shape": {"layers": 2, "tied": True},
        "flops": {"train": 1e12, "validation": 1e10, "evaluation": 2e11, "formula": "6NT", "train_adapter": 1e9,
                  "adapter_share_pct": 0.1},
        "time_s": {"train": 60.0, "validation": 2.0, "evaluation": 30.0, "total": 92.0, "evaluation_bound": 40.0},
        "evaluation": {"prompt_tokens_mean": 120.5, "samples": 1, "dtype_bytes": 4, "decode_formula": "weights once",
                       "model": "m", "prompt": "chat", "max_new_tokens": 64, "answer_tokens_mean": 50.0,
                       "answer_tokens_from": "the data's gold solutions"},
        "rates": {"source": "shipped", "train_flops_per_s": 1e10, "decode_flops_per_s": 1e10, "weight_bytes_per_s": 1e9},
        "accuracy_problems": None, "time_extrapolated": False, "time_basis": "measured", "rates_from": "cpu",
        "cost_usd": None, "cost_basis": "not applicable on a CPU", "memory_warning": None, "peak_memory_gib": 0.5,
        "peak_memory_parts_bytes": {"weights": 100, "runtime": 5}, "peak_memory_basis": "an estimate",
        "full_precision": None, "quantization": "none",
        "paths": {"attention": "sdpa", "lm_head": "lean", "decoder": "dynamic_cache"}, "adapter": "LoRA r 8, alpha 16",
        "disk_bytes": {"adapter": 10, "total": 20}}
PROBE = {"problems": 4, "kinds": ["numbers"], "variants": 6, "variants_per_problem": 2, "seed": 42, "rules_version": 3,
         "by_kind": {"numbers": {"kept": 3, "variants": 6, "skipped": {"no_numbers": 1},
                                 "skip_reasons": {"no_numbers": "no numbers"}}}, "source": "gsm8k"}
EXTRA = {"name": "base", "spec": {"tasks": ["mmlu"], "data": {"mmlu": "/d"}, "subjects": None, "limit": 12},
         "lm_eval_version": "0.4.13",
         "tasks": {"mmlu": {"correct": 5, "n": 12, "accuracy_pct": 41.7, "ci95_pct": [19.3, 68.0], "metric": "acc",
                            "subtasks": ["mathtune_mmlu_anatomy"], "versions": {"mathtune_mmlu_anatomy": 1.0},
                            "n_shot": ["0"], "data": "/d"}}}
NEW_CASES = [(PLAN, read_plan, write_plan_record, "optimizer_steps"),
             (PROBE, read_probe_summary, write_probe_summary, "seed"),
             (EXTRA, read_extra_summary, write_extra_summary, "lm_eval_version")]


@pytest.mark.parametrize("given, read, write, field", NEW_CASES)
def test_plan_probe_and_extra_records_are_written_as_read(tmp_path, given, read, write, field):
    path, again = tmp_path / "record.json", tmp_path / "again.json"
    path.write_text(_as_written(given))
    write(again, read(path))
    assert again.read_text() == path.read_text()


@pytest.mark.parametrize("given, read, write, field", NEW_CASES)
def test_plan_probe_and_extra_records_refuse_a_missing_or_unknown_field(tmp_path, given, read, write, field):
    refuses_a_missing_or_unknown_field(tmp_path, given, read, field)


def test_nested_parts_of_the_plan_and_the_extra_results_are_records(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(_as_written(PLAN))
    plan = read_plan(path)
    assert isinstance(plan, Plan) and plan.data.validation.examples == 2 and plan.time_s.validation_decoding is None
    plan.example = {"thinking": "on"}
    write_plan_record(path, plan)
    assert list(json.loads(path.read_text()))[-1] == "example" and "validation_decoding" not in path.read_text()
    broken = {**PLAN, "time_s": {k: v for k, v in PLAN["time_s"].items() if k != "total"}}
    path.write_text(_as_written(broken))
    with pytest.raises(MathtuneError, match=r"plan\.json: time_s: missing field 'total' of PlanTimes"):
        read_plan(path)
    path = tmp_path / "base.summary.json"
    path.write_text(_as_written(EXTRA))
    extra = read_extra_summary(path)
    assert isinstance(extra.tasks["mmlu"], ExtraTaskResult) and extra.spec.limit == 12
    path = tmp_path / "summary.json"
    path.write_text(_as_written({k: v for k, v in PROBE.items() if k != "rules_version"}))
    assert read_probe_summary(path).rules_version is None  # variants made before the rules were versioned


ANALYSIS = {"schema_version": 1,
            "run": {"name": "demo", "base_model": "m", "data_source": "/data", "eval_source": None,
                    "report_formats": ["md", "html"], "provenance": {"stages": []}},
            "config": {"name": "demo"}, "training": {"available": False, "ran": False, "reason": "no training"},
            "benchmark": {"available": True, "models": {"base": {"n": 2}}}, "errors": {"available": False},
            "recipe": {"method": "sft", "recommendations": []}, "contamination": {"available": False},
            "self_consistency": {"available": False}, "probe": {"available": False}, "self_check": {"available": False},
            "regression": {"available": False}, "seed_claim": {"available": False}, "plan": {"available": False},
            "recommendations": [{"advice": "paired"}], "sha256_of_the_rest": "ab12"}


def test_the_analysis_is_written_as_read_and_refuses_another_versions_file(tmp_path):
    path, again = tmp_path / "analysis.json", tmp_path / "again.json"
    path.write_text(_as_written(ANALYSIS))
    analysis = read_analysis(path)
    assert isinstance(analysis, Analysis) and analysis.run.name == "demo" and analysis.benchmark["available"]
    write_analysis(again, analysis)
    assert again.read_text() == path.read_text()
    path.write_text(_as_written({k: v for k, v in ANALYSIS.items() if k != "regression"}))
    with pytest.raises(MathtuneError, match=r"analysis\.json: missing field 'regression'") as err:
        read_analysis(path)
    assert "\n" not in str(err.value)
    path.write_text(_as_written({**ANALYSIS, "run": {**ANALYSIS["run"], "owner": "x"}}))
    with pytest.raises(MathtuneError, match=r"analysis\.json: run: unknown field 'owner' in AnalysisRun"):
        read_analysis(path)
