"""Analysis: every figure the report shows, computed from the run folder's files alone.

    mathtune report RUN_DIR        (rebuilds analysis.json, then the report)

Reads config.yaml, plan.json, train/metrics.jsonl, train/summary.json, eval/*.jsonl,
eval/*.summary.json, probe/ and extra/; writes RUN_DIR/analysis.json. Never runs a model. The
numbers the report prints are stored here already rounded, so a reader finds each one again
verbatim. Missing parts (no train/ in an eval-only folder, no tuned model) are recorded as not
available with the reason instead of failing. Each part comes from a module of its own:
training, benchmark (and errors), contamination, recipe, followup_measures; this one puts them
together, with the plan against what happened and the recommendations.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from mathtune.analysis.benchmark import analyze_benchmark, analyze_errors
from mathtune.analysis.common import UNNAMED_DATA, load_run_config, pct
from mathtune.analysis.contamination import analyze_contamination
from mathtune.analysis.followup_measures import probe_analysis, regression_analysis, self_check, self_consistency
from mathtune.analysis.recipe import analyze_recipe
from mathtune.analysis.training import analyze_training
from mathtune.core.analysis_record import Analysis, AnalysisRun, write_analysis
from mathtune.core.errors import MathtuneError
from mathtune.core.record_json import to_json
from mathtune.core.provenance import run_provenance
from mathtune.core.terminal import round_seconds
from mathtune.task.plan_record import read_plan
from mathtune.task.taxonomy import CATEGORIES

SCHEMA_VERSION = 1



def seed_claim(training: dict, benchmark: dict) -> dict[str, Any]:
    if not training.get("available"):
        return {"available": False, "ran": training.get("ran", True),
                "reason": training.get("reason") if training.get("diverged") else "no training in this run"}
    tuned = benchmark.get("models", {}).get("tuned") if benchmark.get("available") else None
    if tuned is None:
        return {"available": False, "reason": "no tuned-model evaluation in this run"}
    token_train = training["token_accuracy"]["train"]["end_pct"]
    token_val = training["token_accuracy"]["validation"]["end_pct"]
    exact = tuned["strict"]["accuracy_pct"]
    data_name = tuned.get("data_name") or UNNAMED_DATA
    return {
        "available": True,
        "token_accuracy_train_end_pct": token_train,
        "token_accuracy_validation_end_pct": token_val,
        "gsm8k_exact_match_strict_pct": exact,
        "data_name": data_name,
        "protocol": tuned.get("protocol"),
        # The token accuracy the report's explanation quotes: validation's where there was validation.
        "token_accuracy_quoted": "validation" if token_val is not None else "train",
    }


def build_analysis(run_dir: Path) -> Analysis:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MathtuneError(f"run folder not found: {run_dir}")
    config = load_run_config(run_dir)
    training = analyze_training(run_dir, config)
    benchmark, records_by_model = analyze_benchmark(run_dir)
    recipe = analyze_recipe(run_dir, config)
    if (not training["available"] and not training.get("diverged") and not benchmark["available"]
            and not recipe.get("grpo", {}).get("available")):
        raise MathtuneError(f"{run_dir} holds neither train/metrics.jsonl nor eval/*.jsonl: nothing to analyze")
    errors = analyze_errors(records_by_model) if records_by_model else {"available": False, "reason": benchmark.get("reason")}
    if records_by_model:
        errors["available"] = True
    provenance = run_provenance(run_dir)
    analysis = Analysis(
        schema_version=SCHEMA_VERSION,
        run=AnalysisRun(
            name=config.name if config else run_dir.name,
            # An evaluation-only folder has no config; its summaries still say what ran.
            base_model=config.model.name_or_path if config else provenance["model"],
            # Resolved, as "What ran" names it: one path for the data in the whole report.
            data_source=resolved_source(config.data.source) if config else provenance["data"],
            # eval.source: the data evaluated, when it is not the training source
            eval_source=resolved_source(config.eval.source) if config and config.eval.source else None,
            report_formats=list(config.report.formats) if config else ["md", "html"],
            provenance=provenance,
        ),
        config=config.model_dump(mode="json") if config else None,
        training=training,
        benchmark=benchmark,
        errors=errors,
        recipe=recipe,
        contamination=analyze_contamination(config, records_by_model),
        # The follow-ups, each from its own module; empty ("available": false) unless the run asked.
        self_consistency=self_consistency(run_dir, records_by_model),
        probe=probe_analysis(run_dir, records_by_model),
        self_check=self_check(records_by_model),
        regression=regression_analysis(run_dir),
        seed_claim=seed_claim(training, benchmark),
        plan=plan_vs_actual(run_dir, training, benchmark),
        recommendations=[],
    )
    analysis.recommendations = recommendations(analysis)
    return analysis


def resolved_source(source: str) -> str:
    """A local data folder or file with its links resolved (…/shared/gsm8k given through a link
    reads as the folder it is); a hub id as given."""
    path = Path(os.path.expanduser(source))
    return str(path.resolve()) if path.exists() else source


def plan_vs_actual(run_dir: Path, training: dict, benchmark: dict) -> dict:
    """The plan of RUN_DIR/plan.json next to what the run recorded, figure by figure."""
    path = Path(run_dir) / "plan.json"
    if not path.is_file():
        return {"available": False, "reason": "no plan.json (the run was started before plans were kept, or "
                                              "its method has no plan)"}
    plan = read_plan(path)
    evals = benchmark.get("models", {}) if benchmark.get("available") else {}
    eval_s = sum(m.get("wall_time_s") or 0 for m in evals.values()) if evals else None
    rows = [
        {"figure": "optimizer steps", "planned": plan.optimizer_steps,
         "actual": training.get("global_step") if training.get("available") else None},
        {"figure": "training time incl. validation (s)", "planned": round_seconds(plan.time_s.train + plan.time_s.validation),
         "actual": training.get("wall_time_s") if training.get("available") else None},
        {"figure": "evaluation time, base and tuned (s)", "planned": plan.time_s.evaluation,
         "actual": round(eval_s, 1) if eval_s is not None else None},
        {"figure": "peak training memory (GiB)", "planned": plan.peak_memory_gib,
         "actual": training.get("peak_memory_gib") if training.get("available") else None},
        {"figure": "training cost (USD)", "planned": plan.cost_usd,
         "actual": training.get("cost_usd") if training.get("available") else None},
    ]
    for row in rows:
        row["missed_by"] = plan_miss(row["planned"], row["actual"])
    ev, bound = plan.evaluation, plan.time_s.evaluation_bound
    expected = (f"; evaluation time expected for answers as long as {ev.answer_tokens_from}, at most {bound} s "
                f"if every answer runs to max_new_tokens {ev.max_new_tokens}")
    return {"available": True, "device": plan.device, "basis": plan.time_basis + expected, "rows": rows}


def plan_miss(planned, actual) -> dict | None:
    """By how much a planned figure missed what happened: on plan (within 0.5%), or the
    actual figure's ratio to the plan and its excess in whole percent; None where either is
    missing or the plan was 0."""
    if planned is None or actual is None or not planned:
        return None
    ratio = actual / planned
    return {"on_plan": round(ratio, 2) == 1, "pct": round((ratio - 1) * 100), "ratio": round(ratio, 2)}


def recommendations(analysis: Analysis) -> list[dict]:
    """Next steps, each an advice code with the numbers it follows from (report.explanations
    words each)."""
    out: list[dict] = []
    training, benchmark, errors = analysis.training, analysis.benchmark, analysis.errors
    if training.get("available"):
        out.append({"advice": "training"})  # its code and numbers: training.recommendation
    if training.get("diverged"):
        out.append({"advice": "diverged", **training["diverged"]})
    out += analysis.recipe.get("recommendations", [])
    paired = benchmark.get("paired", {}) if benchmark.get("available") else {}
    if paired.get("available"):
        out.append({"advice": "paired"})
    if errors.get("available"):
        model = "tuned" if "tuned" in errors["counts"] else next(iter(errors["counts"]))
        counts = errors["counts"][model]
        wrong = sum(counts.values())
        if wrong:
            top = max(CATEGORIES, key=lambda c: (counts[c], -CATEGORIES.index(c)))
            out.append({"advice": "top error", "model": model, "category": top, "count": counts[top],
                        "wrong": wrong, "share_pct": pct(counts[top] / wrong)})
    contamination = analysis.contamination
    if contamination.get("available") and contamination["test_questions_half_overlapping"]:
        out.append({"advice": "contamination"})
    return out


CHECKSUM_KEY = "sha256_of_the_rest"


def _json_text(analysis: dict) -> str:
    return json.dumps(analysis, indent=2, ensure_ascii=False) + "\n"


def check_not_hand_edited(run_dir: Path) -> None:
    """Refuse to replace an analysis.json that someone changed after mathtune wrote it: it
    carries the sha256 of its own text without that one key, and an edit breaks the match."""
    path = Path(run_dir) / "analysis.json"
    if not path.is_file():
        return
    try:
        analysis = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # writes are atomic, but a power cut after the rename can still cut a file short
        raise MathtuneError(f"{path} is not whole JSON (cut short, or edited by hand); the report is rebuilt from "
                            "the run's own files: move it away, or pass --overwrite") from None
    stored = analysis.pop(CHECKSUM_KEY, None) if isinstance(analysis, dict) else None
    if stored is None or hashlib.sha256(_json_text(analysis).encode()).hexdigest() != stored:
        raise MathtuneError(f"{path} was changed after mathtune wrote it (edited by hand, or by another tool); "
                            "the report is rebuilt from the run's own files: move your copy away, or pass --overwrite")


def run_analysis(run_dir: Path, *, overwrite: bool = False) -> Path:
    """Compute analysis.json from the run folder's files and write it atomically; an
    analysis.json edited since mathtune wrote it is kept unless overwrite is set."""
    run_dir = Path(run_dir)
    if not overwrite:
        check_not_hand_edited(run_dir)
    analysis = build_analysis(run_dir)
    analysis.sha256_of_the_rest = hashlib.sha256(_json_text(to_json(analysis)).encode()).hexdigest()
    path = run_dir / "analysis.json"
    write_analysis(path, analysis)
    return path
