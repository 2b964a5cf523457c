"""The summary of one evaluation (eval/NAME.summary.json), as the stages after it read it.

    summary = read_eval_summary(paths.summary)
    summary.accuracy_strict, summary.ci95_strict, summary.model, summary.sessions[0].wall_time_s
    write_eval_summary(paths.summary, summary)

Built by evaluation.records.summarize and completed by evaluation.evaluate.write_final; the
fields are in the order the file holds its keys. A field made with absent() is a key only some
summaries hold (a request setting at its default is left out, as in every summary written
before that setting existed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.core.record_json import absent, read_record, to_json, write_record


@dataclass(kw_only=True)
class DecodingSession:
    """One decoding session of an evaluation (a resumed evaluation has several)."""

    started: str  # ISO time the session began (UTC, seconds)
    problems: int  # problems whose records this session wrote
    generated_tokens: int
    wall_time_s: float  # the session's slowest process's last record


@dataclass(kw_only=True)
class ReusedFrom:
    """Where a base evaluation reused from the cache of base evaluations came from."""

    cache: str  # the cache folder
    key: str  # the hash of what decides the records
    made_in: str | None  # the run folder that made them
    made: str | None  # when they were kept ("YYYY-MM-DD HH:MM UTC")
    what_decides_it: dict[str, Any]  # the inputs hashed into the key


@dataclass(kw_only=True)
class EvalSummary:
    """Accuracy, timing, what ran and what was asked for, of one finished evaluation."""

    # Accuracy (evaluation.metrics.accuracy_figures)
    n: int
    accuracy_strict: float
    accuracy_flexible: float
    ci95_strict: list[float]  # Wilson 95% interval
    ci95_flexible: list[float]
    correct_strict: int
    correct_flexible: int
    generated_tokens: int
    truncated: int  # records that ran out (max_new_tokens, or a think block never closed)
    # Timing (evaluation.records.session_timing): the timed work only
    sessions: list[DecodingSession]
    wall_time_s: float
    timed_problems: int
    untimed_problems: int  # records without a timing mark (made before timing was kept)
    problems_per_s: float | None
    tokens_per_s: float | None
    # What ran
    batch_size: int | str
    device: str
    dtype: str  # the weights' dtype as loaded
    attention: str | None
    protocol: str  # the benchmark in words
    # What was asked for (evaluation.request.EvalRequest.summary_identity)
    model: str
    adapter: str | None  # relative to the evaluation's home folder where it lies inside it
    data: str
    split: str
    limit: int | None
    prompt: str
    samples: int
    temperature: float
    max_new_tokens: int
    seed: int
    val_fraction: float
    trust_remote_code: bool | None = absent()  # absent: False
    data_format: dict[str, Any] | None = absent()  # absent: GSM8K's own fields
    quantization: str | None = absent()  # absent: "none"
    prompt_date: str | None = absent()
    thinking: str | None = absent()  # absent: "auto"
    answer_form: str | None = absent()  # absent: the hash form
    adapter_sha256: str | None = absent()  # with an adapter
    dtype_requested: str
    data_name: str
    data_identity: dict[str, Any]  # task.data.DataSource.identity: the data's kind, name, split, path or hub id, hash
    # Completed by evaluation.evaluate.write_final
    world_size: int | None = absent()
    decoder: str | None = absent()
    fast_paths: dict[str, Any] | None = absent()  # models.first_use.eval_paths: each path's check record
    quantization_record: dict[str, Any] | None = None  # None: full precision
    adapter_settings: dict[str, Any] | None = absent()  # core.provenance.describe_adapter, with an adapter
    adapter_merged: bool | None = absent()  # with an adapter: merged into the base
    resumed_from: int | None = absent()  # problems an earlier, interrupted session wrote
    rate_note: str | None = absent()  # how the rates add up over several sessions
    platform: dict[str, str | None] | None = absent()  # core.provenance.library_versions
    # The cache of base evaluations (evaluation.base_cache)
    made_in: str | None = absent()  # in the cache's copy: the run folder that made it
    made: str | None = absent()  # in the cache's copy, and a run's copy of it: when it was kept
    reused_from: ReusedFrom | None = absent()  # a run's copy of a cached base evaluation


def eval_summary_json(summary: EvalSummary) -> dict[str, Any]:
    """The summary as its file holds it (also what `mathtune eval --json` prints)."""
    return to_json(summary)


def write_eval_summary(path: Path, summary: EvalSummary) -> None:
    write_record(path, summary)


def read_eval_summary(path: Path) -> EvalSummary:
    """The summary in an eval/NAME.summary.json; a file that is not one (cut short, another
    version's, missing a field) is a one-line MathtuneError naming it."""
    return read_record(EvalSummary, path)


def eval_summary_if_any(path: Path) -> EvalSummary | None:
    """The summary in a file, None where there is none (an evaluation not finished)."""
    return read_eval_summary(path) if Path(path).is_file() else None
