"""The summary of a probe's variants (OUT/probe/summary.json), as the stages after it read it.

    write_probe_summary(folder / "summary.json", summary)   # task.variants.write_variants
    summary = read_probe_summary(path)                       # a missing or unknown field: one line

Written beside the variants by task.variants.write_variants; read by the pipeline (variants
made with other settings are refused) and by the analysis (the probe's generator counts). The
fields are in the order the file holds its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.core.record_json import absent, read_record, write_record


@dataclass(kw_only=True)
class ProbeSummary:
    """What the variants were made from and with, and per kind what was kept and skipped."""

    problems: int  # the original problems drawn from
    kinds: list[str]  # what a variant changes (task.variants.KINDS)
    variants: int  # rows written
    variants_per_problem: int
    seed: int
    rules_version: int | None = absent()  # absent: variants made before the rules were versioned
    # Per kind: kept, variants, skipped and skip_reasons, and the rules' counts where the kind has them
    by_kind: dict[str, dict[str, Any]]
    source: str  # the data the problems came from


def write_probe_summary(path: Path, summary: ProbeSummary) -> None:
    write_record(path, summary)


def read_probe_summary(path: Path) -> ProbeSummary:
    """The summary in a probe/summary.json; a file that is not one (cut short, another
    version's, missing a field) is a one-line MathtuneError naming it."""
    return read_record(ProbeSummary, path)


def probe_summary_if_any(path: Path) -> ProbeSummary | None:
    """The summary in a file, None where there is none (no probe in this run)."""
    return read_probe_summary(path) if Path(path).is_file() else None
