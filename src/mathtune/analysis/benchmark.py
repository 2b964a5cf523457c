"""The benchmark part of the analysis: each model's exact match with Wilson intervals, base
against tuned paired on the same problems, and the error taxonomy with examples.

    analyze_benchmark(run_dir)        -> (the "benchmark" part of analysis.json, records by model)
    analyze_errors(records_by_model)  -> the "errors" part
    paired_comparison(base, tuned)    -> the paired difference, bootstrap interval and McNemar test
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mathtune.analysis.common import UNNAMED_DATA, eval_record_files, pct, rounded
from mathtune.core.runfiles import read_eval_records
from mathtune.core.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CI_LEVEL, mcnemar_exact, p_value_text,
                                 paired_bootstrap_difference, paired_counts, wilson_interval, wilson_share)
from mathtune.evaluation.summary import EvalSummary, eval_summary_if_any
from mathtune.task.score import opens_think, think_unclosed
from mathtune.task.taxonomy import CATEGORIES, PRECEDENCE, RULES, arithmetic_slips, classify_error, count_reasoning_steps
from mathtune.task.variants import PROBE_SUFFIX

CI_LEVEL_PCT = round(CI_LEVEL * 100)
EXAMPLES_PER_CATEGORY = 3

EXAMPLE_MAX_CHARS = 1500

MAX_STEP_BUCKET = 8
"""Problems with 8 or more reasoning steps share one bucket ('8+'): there are few of them."""


def _category(record: dict) -> str | None:
    # The per-problem file is the record of what was claimed; recompute only when it is silent.
    if "error_category" in record and (record["error_category"] is not None or record.get("correct_strict")):
        return record["error_category"]
    return classify_error(record)


def model_accuracy(records: list[dict], summary: EvalSummary | None) -> dict[str, Any]:
    n = len(records)
    out: dict[str, Any] = {"n": n}
    for kind in ("strict", "flexible"):
        correct = sum(1 for r in records if r.get(f"correct_{kind}"))
        lo, hi = wilson_interval(correct, n)
        out[kind] = {
            "correct": correct,
            "accuracy_pct": pct(correct / n) if n else None,
            "ci95_pct": [pct(lo), pct(hi)],
        }
    out["truncated"] = sum(1 for r in records if r.get("truncated"))
    # Of those, the ones that ran out inside a think block, which have no answer (task.score).
    out["truncated_in_think"] = sum(1 for r in records if r.get("truncated") and think_unclosed(
        r.get("completion") or "", thinking_open=opens_think(r.get("final_turn_prompt") or r.get("prompt") or "")))
    for key in ("model", "adapter", "prompt", "max_new_tokens", "samples", "temperature", "device", "dtype", "protocol",
                "data_name"):
        out[key] = getattr(summary, key) if summary else None
    out["wall_time_s"] = rounded(summary.wall_time_s if summary else None, 1)
    out["problems_per_s"] = rounded(summary.problems_per_s if summary else None, 2)
    out["tokens_per_s"] = rounded(summary.tokens_per_s if summary else None, 1)
    reused = summary.reused_from if summary else None  # evaluation.base_cache: the same evaluation, made by another run
    out["reused_from"] = ({"cache": reused.cache, "key": reused.key, "made_in": reused.made_in, "made": reused.made}
                          if reused else None)
    return out


def paired_comparison(base: list[dict], tuned: list[dict]) -> dict[str, Any]:
    by_id = {r["id"]: r for r in base if r.get("id") is not None}
    common = [(by_id[r["id"]], r) for r in tuned if r.get("id") in by_id]
    result: dict[str, Any] = {
        "n_paired": len(common),
        "joined_on": "id",
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "ci_level_pct": CI_LEVEL_PCT,
    }
    if not common:
        return {**result, "available": False, "reason": "base and tuned share no problem id"}
    for kind in ("strict", "flexible"):
        a = [bool(b.get(f"correct_{kind}")) for b, _ in common]
        b = [bool(t.get(f"correct_{kind}")) for _, t in common]
        diff, lo, hi = paired_bootstrap_difference(a, b)
        counts = paired_counts(a, b)
        p = mcnemar_exact(counts["improved"], counts["regressed"])
        result[kind] = {
            "difference_pp": rounded(diff * 100),
            "ci95_pp": [rounded(lo * 100), rounded(hi * 100)],
            "mcnemar_p": float(f"{p:.3g}"),
            "mcnemar_p_display": p_value_text(p),
            **counts,
        }
    lo, hi = result["strict"]["ci95_pp"]
    result["available"] = True
    # On strict accuracy; report.explanations.paired_verdict_text puts it in words.
    result["verdict"] = "better" if lo > 0 else "worse" if hi < 0 else "no reliable difference"
    return result


def accuracy_by_steps(records: list[dict]) -> list[dict[str, Any]]:
    buckets: dict[int, list[bool]] = {}
    for r in records:
        steps = min(count_reasoning_steps(r.get("answer") or ""), MAX_STEP_BUCKET)
        buckets.setdefault(steps, []).append(bool(r.get("correct_strict")))
    rows = []
    for steps in sorted(buckets):
        outcomes = buckets[steps]
        rows.append({"steps": f"{steps}+" if steps == MAX_STEP_BUCKET else str(steps),
                     **wilson_share(sum(outcomes), len(outcomes))})
    return rows


def _example(record: dict, model: str, category: str) -> dict[str, Any]:
    completion = record.get("completion") or ""
    if len(completion) > EXAMPLE_MAX_CHARS:
        completion = completion[:EXAMPLE_MAX_CHARS] + " [...]"
    evidence = ""
    if category == "arithmetic_slip":
        evidence = "; ".join(arithmetic_slips(record.get("completion") or "")[:3])
    return {
        "model": model,
        "id": record.get("id"),
        "question": record.get("question"),
        "gold": record.get("gold"),
        "pred_strict": record.get("pred_strict"),
        "pred_flexible": record.get("pred_flexible"),
        "steps": count_reasoning_steps(record.get("answer") or ""),
        "completion": completion,
        "evidence": evidence,
    }


def analyze_errors(records_by_model: dict[str, list[dict]]) -> dict[str, Any]:
    counts, examples, by_steps = {}, {c: [] for c in CATEGORIES}, {}
    for model, records in records_by_model.items():
        per_cat = {c: 0 for c in CATEGORIES}
        for r in records:
            cat = _category(r)
            if cat in per_cat:
                per_cat[cat] += 1
        counts[model] = per_cat
        by_steps[model] = accuracy_by_steps(records)
    # Examples: the tuned model's wrong answers first (it is the model being judged), then the
    # base model's, in file order, so the choice is deterministic and reproducible.
    for model in sorted(records_by_model, key=lambda m: (m != "tuned", m != "base", m)):
        for r in records_by_model[model]:
            cat = _category(r)
            if cat in examples and len(examples[cat]) < EXAMPLES_PER_CATEGORY:
                examples[cat].append(_example(r, model, cat))
    return {
        "categories": list(CATEGORIES),
        "precedence": list(PRECEDENCE),
        "rules": dict(RULES),  # written from the constants classify_error uses
        "counts": counts,
        "accuracy_by_steps": by_steps,
        "step_bucket_max": MAX_STEP_BUCKET,
        "examples": examples,
    }


def analyze_benchmark(run_dir: Path) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    files = eval_record_files(run_dir)
    if not files:
        return {"available": False, "reason": "no evaluation in this run (no eval/*.jsonl)"}, {}
    records_by_model, models = {}, {}
    for name, path in files.items():
        records = read_eval_records(path)
        summary = eval_summary_if_any(path.with_name(f"{name}.summary.json"))
        records_by_model[name] = records
        if name.endswith(PROBE_SUFFIX):  # variants with changed numbers: the probe's section, not the benchmark
            continue
        models[name] = model_accuracy(records, summary)
    if not models:
        return {"available": False, "reason": "no benchmark records in this run (eval/ holds only probe variants)"}, \
            records_by_model
    protocols = {m["protocol"] for m in models.values() if m.get("protocol")}
    names = sorted({m.get("data_name") or UNNAMED_DATA for m in models.values()})
    out: dict[str, Any] = {
        "available": True,
        # 'GSM8K' only when the evaluation recorded GSM8K's own data (see task.data.DataSource.identity).
        "data_name": " / ".join(names),
        "ci_level_pct": CI_LEVEL_PCT,
        "interval": "Wilson score interval",
        "protocol": " | ".join(sorted(protocols)) if protocols else "not recorded",
        "same_protocol": len(protocols) <= 1,
        "models": models,
    }
    if "base" in records_by_model and "tuned" in records_by_model:
        out["paired"] = paired_comparison(records_by_model["base"], records_by_model["tuned"])
    else:
        out["paired"] = {"available": False, "reason": "needs both eval/base.jsonl and eval/tuned.jsonl"}
    return out, records_by_model
