"""A synthetic run folder for the analysis, report and compare tests.

Real GSM8K problems (read from the shared copy beside the repo, never stored in the repo)
with made-up completions and made-up training curves, shaped to hit each error category
and each training verdict.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from mathtune.config import Config, config_to_yaml
from mathtune.core.analysis_record import Analysis, AnalysisRun
from mathtune.evaluation.summary import EvalSummary
from mathtune.task.train_summary import TrainSummary
from mathtune.task.prompts import clean_solution
from mathtune.task.score import extract_gold, score_completion
from mathtune.core.stats import wilson_interval
from mathtune.task.taxonomy import classify_error, gold_chain_values

PROTOCOL = "GSM8K test, zero-shot chat prompt, greedy, max_new_tokens 64, strict = '#### N'"
SCRIPT_COMPLETION = "<script>alert('x')</script> I think it is 7. #### 7"


def read_problems(gsm8k_dir: Path, split: str, n: int) -> list[dict]:
    lines = (gsm8k_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    problems = []
    for i, line in enumerate(lines):
        obj = json.loads(line)
        problems.append({"id": f"{split}-{i}", "question": obj["question"], "answer": obj["answer"],
                         "gold": extract_gold(obj["answer"])})
    return problems


def wrong_completion(problem: dict, kind: int) -> tuple[str, bool]:
    """(completion, truncated) for a wrong answer of a given flavour."""
    gold = int(float(problem["gold"]))
    chain = gold_chain_values(problem["answer"])
    if kind == 0:  # format failure: the right number, no '####'
        return f"So the result is {gold} in total.", False
    if kind == 1:  # truncated mid-chain
        return "Let me think step by step. First we add the numbers and then", True
    if kind == 2:  # arithmetic slip
        return f"7 * 8 = 54, so the answer is wrong. #### {gold + 1001}", False
    if kind == 3 and len(chain) >= 2:  # stopped one step early
        return f"That gives {chain[0]}. #### {chain[0]}", False
    if kind == 4:
        return SCRIPT_COMPLETION, False
    return f"I read it differently. #### {gold + 100003}", False


def eval_records(problems: list[dict], correct_ids: set[str], wrong_kind_offset: int) -> list[dict]:
    records = []
    for i, p in enumerate(problems):
        if p["id"] in correct_ids:
            completion, truncated = clean_solution(p["answer"]), False
        else:
            completion, truncated = wrong_completion(p, (i + wrong_kind_offset) % 6)
        rec = {**p, "prompt": "Q: " + p["question"], "completion": completion,
               **score_completion(completion, p["gold"]), "num_generated_tokens": len(completion.split()),
               "truncated": truncated}
        rec["error_category"] = classify_error(rec)
        records.append(rec)
    return records


def with_every_field(record_type, given: dict) -> dict:
    """A record's JSON with the keys `given` leaves out present and null (a record file holds
    every field its type requires; what a test does not set reads as not recorded)."""
    required = [f.name for f in dataclasses.fields(record_type)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    return {**dict.fromkeys(required), **given}


def full_eval_summary(**given) -> dict:
    """An eval/NAME.summary.json with the given keys, the others null."""
    return with_every_field(EvalSummary, given)


def full_train_summary(**given) -> dict:
    """A train/summary.json with the given keys, the others null."""
    return with_every_field(TrainSummary, given)


def analysis_with(**parts) -> Analysis:
    """An analysis holding the given parts, every other part not available."""
    empty = {f.name: {"available": False} for f in dataclasses.fields(Analysis)
             if f.name not in ("schema_version", "run", "config", "recommendations", "sha256_of_the_rest")}
    run = AnalysisRun(name="synthetic", base_model="m", data_source="d", eval_source=None,
                      report_formats=["md"], provenance={})
    return Analysis(schema_version=1, run=run, config=None, recommendations=[], **{**empty, **parts})


def eval_summary(records: list[dict], model: str, adapter: str | None) -> dict:
    n = len(records)
    cs = sum(r["correct_strict"] for r in records)
    cf = sum(r["correct_flexible"] for r in records)
    return full_eval_summary(**{"n": n, "accuracy_strict": cs / n, "accuracy_flexible": cf / n, "ci95_strict": list(wilson_interval(cs, n)),
            "ci95_flexible": list(wilson_interval(cf, n)), "correct_strict": cs,
            "correct_flexible": cf, "generated_tokens": 1234, "truncated": sum(r["truncated"] for r in records),
            "wall_time_s": 61.25, "problems_per_s": n / 61.25, "tokens_per_s": 20.1, "model": model,
            "adapter": adapter, "prompt": "chat", "max_new_tokens": 64, "samples": 1, "temperature": 0.0,
            "device": "cpu", "dtype": "float32", "protocol": PROTOCOL})


def loss_curve(step: int, shape: str) -> tuple[float, float | None]:
    """(train loss, eval loss) for a curve that is still improving, plateaued, or overfitting."""
    if shape == "improving":
        train = 2.0 - 0.012 * step
        return train, train + 0.1
    if shape == "plateaued":
        train = 0.5 + 1.5 * math.exp(-step / 10)
        return train, train + 0.1
    train = 0.5 + 1.5 * math.exp(-step / 15) - 0.001 * step  # overfitting
    return train, 0.8 + 0.0001 * (step - 40) ** 2


def write_run(root: Path, gsm8k_dir: Path, *, shape: str = "plateaued", with_train: bool = True,
              name: str = "synthetic", lr: float = 2e-4, n_problems: int = 24) -> Path:
    """A complete run folder; the data folder beside it makes the contamination check work."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    test = read_problems(gsm8k_dir, "test", n_problems)
    train_lines = (gsm8k_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()[:50]
    # One test question leaks into training, so the overlap check has something to find.
    train_lines.append(json.dumps({"question": test[0]["question"], "answer": test[0]["answer"]}))
    (data / "train.jsonl").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (data / "test.jsonl").write_text("".join(json.dumps({"question": p["question"], "answer": p["answer"]}) + "\n"
                                             for p in test), encoding="utf-8")

    run = root / name
    (run / "eval").mkdir(parents=True, exist_ok=True)
    config = Config.model_validate({"name": name, "data": {"source": str(data)}, "train": {"learning_rate": lr},
                                    "eval": {"max_new_tokens": 64}})
    (run / "config.yaml").write_text(config_to_yaml(config), encoding="utf-8")

    if with_train:
        (run / "train").mkdir()
        lines = []
        for step in range(1, 101):
            train, val = loss_curve(step, shape)
            wiggle = 0.01 * math.sin(step)  # logged losses are noisy
            lines.append({"step": step, "epoch": round(step / 33.3, 3), "loss": train + wiggle,
                          "mean_token_accuracy": 0.6 + 0.3 * (1 - math.exp(-step / 30)), "learning_rate": 2e-4})
            if step % 10 == 0:  # eval lines as separate objects with the same step
                lines.append({"step": step, "epoch": round(step / 33.3, 3), "eval_loss": val,
                              "eval_mean_token_accuracy": 0.58 + 0.3 * (1 - math.exp(-step / 30))})
        (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        best = min((loss_curve(s, shape)[1], s) for s in range(10, 101, 10))
        (run / "train" / "summary.json").write_text(json.dumps(full_train_summary(**{
            "wall_time_s": 3725.5, "tokens_seen": 512000, "tokens_per_s": 137.43, "peak_memory_bytes": 3 * 2**30,
            "trainable_params": 4358144, "base_params": 1543714304, "total_params": 1548072448, "best_step": best[1], "best_eval_loss": best[0],
            "stopped_early": shape == "overfitting", "early_stopping_patience": 5, "global_step": 100,
            "device": "NVIDIA H100", "cost_usd": 2.07, "cost_note": "1.03 GPU-hours at $2.0/h", "gpu_hourly_usd": 2.0,
        })), encoding="utf-8")

    base_correct = {p["id"] for p in test[: n_problems // 3]}
    tuned_correct = {p["id"] for p in test[1 : n_problems // 2 + 1]}
    for model, correct, offset, adapter in (("base", base_correct, 0, None), ("tuned", tuned_correct, 3, "adapter")):
        records = eval_records(test, correct, offset)
        (run / "eval" / f"{model}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        (run / "eval" / f"{model}.summary.json").write_text(
            json.dumps(eval_summary(records, "Qwen/Qwen2-1.5B", adapter)), encoding="utf-8")
    return run
