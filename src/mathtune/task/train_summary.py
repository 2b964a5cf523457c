"""The summary of a run's training (RUN_DIR/train/summary.json), as the stages after it read it.

    write_train_summary(run_dir / "train" / "summary.json", summary)   # train.run
    summary = read_train_summary(path)                                  # a missing or unknown field: one line

Written by train.run (make_summary, completed when the adapter is saved). It lives below the
training stage because the stages that read it (the evaluation of a run's adapter, the analysis,
which never imports the training code) sit beside or below it. The fields are in the order the
file holds its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.core.record_json import absent, read_record, write_record


@dataclass(kw_only=True)
class ExactMatch:
    """Strictly correct greedy answers on the validation problems at one step."""

    correct: int
    n: int


@dataclass(kw_only=True)
class TrainSummary:
    """What a finished training ran, reached and cost."""

    method: str  # train.method: sft, rft or grpo
    model: str
    global_step: int
    max_steps: int
    epochs_completed: float
    select_by: str  # train.select_by: eval_loss or exact_match
    best_step: int | None  # None: the adapter of the last step
    best_eval_loss: float | None
    best_val_exact_match: ExactMatch | None  # with select_by exact_match
    best_checkpoint: str | None  # relative to the run folder
    stopped_early: bool
    early_stopping_patience: int | None
    train_examples: int
    val_examples: int
    dropped_too_long: dict[str, int]  # examples over data.max_length, per split
    data_sources: list[dict[str, Any]] | None  # task.training_set: per source its split, weight, counts
    answer_forms: dict[str, int] | None  # the training answers' forms, with counts (task.answers)
    prompt_answer_form: str | None  # the answer form the run's prompts ask for
    wall_time_s: float
    tokens_seen: int
    tokens_seen_kind: str
    tokens_per_s: float | None
    peak_memory_bytes: int | None
    peak_memory_kind: str | None
    trainable_params: int
    base_params: int
    total_params: int  # the base model's and the adapter's, as the plan counts them
    device: str
    world_size: int
    dtype: str  # the base weights' dtype as they ran
    dtype_requested: str
    attention: str | None
    quantization_record: dict[str, Any] | None  # None: full precision
    batch_size: int
    trust_remote_code: bool
    data_identity: dict[str, Any]  # task.data.DataSource.identity of the training split
    gpu_hourly_usd: float
    cost_usd: float | None  # None off a GPU
    cost_note: str
    resumed_from_step: int | None
    rate_note: str | None = absent()  # a resumed run: how wall time and rates add up
    versions: dict[str, str | None]  # core.provenance.library_versions
    adapter_settings: dict[str, Any] | None = None  # core.provenance.describe_adapter, with trained_dtype
    lm_head: str | None = None  # the loss head that ran (train.lm_head); null for a method without one (GRPO)
    fast_paths: dict[str, Any] | None = None  # models.first_use: each path's check record
    rft: dict[str, Any] | None = absent()  # RFT's sampling counts (train.rft)


def write_train_summary(path: Path, summary: TrainSummary) -> None:
    write_record(path, summary)


def read_train_summary(path: Path) -> TrainSummary:
    """The summary in a train/summary.json; one that is not one (cut short, another version's,
    missing a field) is a one-line MathtuneError naming it."""
    return read_record(TrainSummary, path)
