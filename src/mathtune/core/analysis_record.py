"""A run's analysis (RUN_DIR/analysis.json), as the report reads it.

    write_analysis(run_dir / "analysis.json", analysis)   # analysis.analyze.run_analysis
    analysis = read_analysis(path)                         # report.build; a missing or unknown field: one line
    analysis.training["available"], analysis.run.name

Built by analysis.analyze.build_analysis, each part by a module of its own (training, benchmark,
errors, recipe, contamination, the follow-ups, the plan against what happened). It lives in the
core because the report, which renders it, imports nothing else. The top level and the run's
description are records; each part stays the mapping its module builds, whose keys differ with
what the run holds (a part that is not available holds its reason). The fields are in the order
the file holds its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.core.record_json import absent, read_record, write_record


@dataclass(kw_only=True)
class AnalysisRun:
    """What the run is: its name, base model, data and the report's formats."""

    name: str
    base_model: str | None
    data_source: str | None  # resolved: one path for the data in the whole report
    eval_source: str | None  # the data evaluated, when it is not the training source
    report_formats: list[str]
    provenance: dict[str, Any]  # core.provenance.run_provenance: what ran, stage by stage


@dataclass(kw_only=True)
class Analysis:
    """Every figure the report shows, computed from the run folder's files alone."""

    schema_version: int
    run: AnalysisRun
    config: dict[str, Any] | None  # the run's config.yaml; None in an evaluation-only folder
    training: dict[str, Any]
    benchmark: dict[str, Any]
    errors: dict[str, Any]
    recipe: dict[str, Any]
    contamination: dict[str, Any]
    self_consistency: dict[str, Any]
    probe: dict[str, Any]
    self_check: dict[str, Any]
    regression: dict[str, Any]
    seed_claim: dict[str, Any]
    plan: dict[str, Any]  # the plan against what happened
    recommendations: list[dict[str, Any]]  # advice codes with their numbers (analysis.analyze.recommendations)
    sha256_of_the_rest: str | None = absent()  # the file's text without this key, as mathtune wrote it


def write_analysis(path: Path, analysis: Analysis) -> None:
    write_record(path, analysis)


def read_analysis(path: Path) -> Analysis:
    """The analysis in an analysis.json; a file that is not one (cut short, another version's,
    missing a field) is a one-line MathtuneError naming it."""
    return read_record(Analysis, path)
