"""The results of the general benchmarks on one model (OUT/extra/NAME.summary.json), as the
stages after them read them.

    write_extra_summary(path, summary)      # evaluation.regression.run_extra_tasks
    summary = read_extra_summary(path)      # a missing or unknown field: one line
    summary.tasks["mmlu"].accuracy_pct, summary.lm_eval_version

Read by `mathtune eval` (printed), the pipeline (a finished spec is kept) and the analysis (base
and tuned paired on the same documents). The fields are in the order the file holds its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mathtune.core.record_json import read_record, write_record


@dataclass(kw_only=True)
class ExtraIdentity:
    """What decides the results (evaluation.regression.ExtraSpec.identity)."""

    tasks: list[str]
    data: dict[str, str]  # task -> local data folder
    subjects: list[str] | None  # MMLU subjects; None: every one in the folder
    limit: int | None  # documents per task (per MMLU subject)


@dataclass(kw_only=True)
class ExtraTaskResult:
    """One task's accuracy (core.stats.wilson_share) and what measured it."""

    correct: int
    n: int
    accuracy_pct: float | None
    ci95_pct: list[float | None]
    metric: str  # lm-eval's metric
    subtasks: list[str]  # lm-eval's task names (one per MMLU subject)
    versions: dict[str, str | int | float | None]  # lm-eval's version of each subtask
    n_shot: list[str]
    data: str  # the local folder, or the hub


@dataclass(kw_only=True)
class ExtraSummary:
    name: str  # the model's evaluation name (base, tuned, ...)
    spec: ExtraIdentity
    lm_eval_version: str | None
    tasks: dict[str, ExtraTaskResult]


def write_extra_summary(path: Path, summary: ExtraSummary) -> None:
    write_record(path, summary)


def read_extra_summary(path: Path) -> ExtraSummary:
    """The results in an extra/NAME.summary.json; a file that is not one (cut short, another
    version's, missing a field) is a one-line MathtuneError naming it."""
    return read_record(ExtraSummary, path)
