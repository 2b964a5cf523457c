"""The training methods: one entry each, holding what differs between them (the data, the
loop, what is saved beside the summary, whether the fused head and the plan apply); every
other step of train.run is the same for all. What the analysis and the report say of a method
is its entry in core.method_kinds, which a method registered here adds to.

A method is one `register_training_method(name, TrainingMethod(...), said=MethodKind(...))`;
its name is then a value train.method accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mathtune.config import TRAINING_METHODS, Config, add_kind_name
from mathtune.core.kinds import KindTable
from mathtune.core.method_kinds import METHOD_KIND_TABLE, MethodKind
from mathtune.task.sequences import example_from_text
from mathtune.train.accuracy import exact_match_callback
from mathtune.train.divergence import DivergenceCallback
from mathtune.train.trainer import MetricsFileCallback, build_datasets, build_trainer


@dataclass
class TrainingData:
    """The problems a run trains and validates on, the tokenizer, and the datasets built from them."""
    train_problems: list
    val_problems: list
    sources: list[dict]
    tokenizer: Any
    forms: dict = field(default_factory=dict)  # the training answers' forms, with counts (task.answers)
    identity: dict = field(default_factory=dict)  # the main source's train split exactly (task.data)
    answer_form: str = ""  # what the chat prompt asks for (task.training_set.training_answer_form)
    train_set: Any = None
    val_set: Any = None
    counts: dict = field(default_factory=dict)


def _supervised_sets(config: Config, data: TrainingData) -> tuple:
    return build_datasets(config, data.tokenizer, data.train_problems, data.val_problems)


def _prompt_sets(config: Config, data: TrainingData) -> tuple:
    from datasets import Dataset

    from mathtune.train.grpo import prompt_rows

    train_set = Dataset.from_list(prompt_rows(config, data.tokenizer, data.train_problems))
    return train_set, None, {"train_examples": len(train_set), "val_examples": 0,
                             "dropped_too_long": {"train": 0, "validation": 0}}


def _supervised_trainer(config: Config, run_dir: Path, model, data: TrainingData, peft_config, checkpoint):
    accuracy = (exact_match_callback(config, run_dir, data.tokenizer, data.val_problems, data.train_problems)
                if config.train.select_by == "exact_match" else None)
    return build_trainer(config, run_dir, model, data.tokenizer, data.train_set, data.val_set, peft_config,
                         eval_on_start=checkpoint is None, accuracy=accuracy)


def _grpo_trainer(config: Config, run_dir: Path, model, data: TrainingData, peft_config, checkpoint):
    from mathtune.train.grpo import FIELD_ORDER, build_grpo_trainer, step_fields

    callbacks = [DivergenceCallback(), MetricsFileCallback(run_dir / "train" / "metrics.jsonl", step_fields, FIELD_ORDER)]
    return build_grpo_trainer(config, run_dir, model, data.tokenizer, data.train_set, peft_config, callbacks)


def _own_samples(config: Config, run_dir: Path, model, data: TrainingData) -> dict:
    """RFT: the base model's strictly correct samples (gold where none was) become the training
    set; returns the sampling's counts."""
    from mathtune.train.rft import rft_training_pairs

    def fits(prompt: str, answer: str) -> bool:
        return len(example_from_text(prompt, answer, data.tokenizer, config.data.prompt)) <= config.data.max_length

    pairs, recipe_stats = rft_training_pairs(config, run_dir, model, data.tokenizer, data.train_problems, fits)
    data.train_set, data.val_set, data.counts = build_datasets(config, data.tokenizer, data.train_problems,
                                                               data.val_problems, train_pairs=pairs)
    return recipe_stats


@dataclass(frozen=True)
class TrainingMethod:
    """What differs between the training methods; every other step is the same for all."""
    datasets: Callable  # (config, data) -> (train set, validation set, counts)
    trainer: Callable  # (config, run_dir, model, data, peft_config, checkpoint) -> a TRL trainer
    packs: bool = True  # trains on packed rows (GRPO: unpacked, padded batches)
    # Before training, the model's own samples become the training set: (config, run_dir, model,
    # data) -> their counts, saved in train/summary.json under `saves` (RFT).
    samples_first: Callable | None = None
    saves: str | None = None
    fused_head: bool = True  # scores with mathtune's lean lm_head (GRPO: TRL's own loss)
    plannable: bool = True  # `mathtune plan` can count its tokens before it runs (no sampling from the model)


TRAINING_METHOD_TABLE: KindTable[TrainingMethod] = KindTable("method")


def register_training_method(name: str, method: TrainingMethod, said: MethodKind | None = None) -> TrainingMethod:
    """Add a training method: train.method then accepts its name, and the analysis and the report
    describe it by `said` (a built-in method's words are in core.method_kinds already)."""
    if said is not None:
        METHOD_KIND_TABLE.register(name, said)
    METHOD_KIND_TABLE.get(name)  # every method is described
    TRAINING_METHOD_TABLE.register(name, method)
    add_kind_name(TRAINING_METHODS, name)
    return method


register_training_method("sft", TrainingMethod(datasets=_supervised_sets, trainer=_supervised_trainer))
register_training_method("rft", TrainingMethod(datasets=_supervised_sets, trainer=_supervised_trainer,
                                               samples_first=_own_samples, saves="rft", plannable=False))
register_training_method("grpo", TrainingMethod(datasets=_prompt_sets, trainer=_grpo_trainer, packs=False,
                                                fused_head=False, plannable=False))
assert TRAINING_METHOD_TABLE.names() == tuple(TRAINING_METHODS), "every method named in config has its entry here"
