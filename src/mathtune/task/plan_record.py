"""A run's plan (RUN_DIR/plan.json): what `mathtune plan` works out before a run, as the stages
after it read it.

    write_plan_record(run_dir / "plan.json", plan)   # the pipeline, before training
    plan = read_plan(path)                            # a missing or unknown field: one line

Made by plan.make_plan; read by the pipeline (the disk check, the rates a finished run reached)
and by the analysis (the plan next to what happened), which may not import the plan's own
module. The fields are in the order the file holds its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.core.record_json import absent, read_record, write_record


@dataclass(kw_only=True)
class PlanPrompts:
    """What the model is asked, as every summary of the run states it."""

    train: str
    eval: str
    thinking: str


@dataclass(kw_only=True)
class SplitPlan:
    """One split's tokenized examples: their lengths and what data.max_length drops."""

    examples: int
    tokens: int
    mean: float | None
    p99: int | None
    max: int | None
    dropped_over_max_length: int


@dataclass(kw_only=True)
class PlanData:
    train: SplitPlan
    validation: SplitPlan
    test_problems: int
    max_length: int


@dataclass(kw_only=True)
class PlanFlops:
    train: float
    validation: float
    evaluation: float
    formula: str
    train_adapter: float  # the adapter's own share of train
    adapter_share_pct: float | None
    validation_decoding: float | None = absent()  # with train.select_by exact_match


@dataclass(kw_only=True)
class PlanTimes:
    """Planned seconds (core.terminal.round_seconds)."""

    train: float
    validation: float
    evaluation: float
    total: float
    evaluation_bound: float  # every answer running to max_new_tokens
    validation_decoding: float | None = absent()  # with train.select_by exact_match


@dataclass(kw_only=True)
class PlanEvaluation:
    """The base and tuned evaluations as the plan costs them."""

    prompt_tokens_mean: float
    samples: int
    dtype_bytes: int
    decode_formula: str
    model: str
    prompt: str
    max_new_tokens: int
    answer_tokens_mean: float
    answer_tokens_from: str


@dataclass(kw_only=True)
class PlanRates:
    """The rates the plan's times come from."""

    source: Any
    train_flops_per_s: float
    decode_flops_per_s: float
    weight_bytes_per_s: float


@dataclass(kw_only=True)
class FullPrecision:
    """A quantized base's figures as if it were not quantized."""

    dtype: str
    peak_memory_gib: float
    weights_gib: float


@dataclass(kw_only=True)
class Plan:
    """What a run will do and cost, before it runs."""

    name: str  # the report's title and the run folder's default name
    device: str
    world_size: int
    prompts: PlanPrompts
    data: PlanData
    train_tokens_per_epoch: int
    optimizer_steps: int
    steps_per_epoch: int
    validation_passes: int
    trainable_params: int
    base_params: int
    total_params: int
    params_definition: str
    shape: dict[str, Any]  # the model's shapes, read from its config
    flops: PlanFlops
    time_s: PlanTimes
    evaluation: PlanEvaluation
    rates: PlanRates
    accuracy_problems: int | None  # with train.select_by exact_match
    time_extrapolated: bool
    time_basis: str
    rates_from: str
    cost_usd: float | None  # None on a CPU
    cost_basis: str
    memory_warning: dict[str, Any] | None  # plan.memory_fit: None when the plan fits
    peak_memory_gib: float
    peak_memory_parts_bytes: dict[str, int]
    peak_memory_basis: str
    full_precision: FullPrecision | None  # None: a base that is not quantized
    quantization: str
    paths: dict[str, str]  # models.selfcheck.planned_paths
    adapter: str
    disk_bytes: dict[str, Any]  # plan.disk_estimate
    example: dict[str, Any] | None = absent()  # `mathtune plan --show-example --json` only


def write_plan_record(path: Path, plan: Plan) -> None:
    write_record(path, plan)


def read_plan(path: Path) -> Plan:
    """The plan in a plan.json; a file that is not one (cut short, another version's, missing a
    field) is a one-line MathtuneError naming it."""
    return read_record(Plan, path)
