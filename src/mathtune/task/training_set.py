"""The problems a run trains and validates on, and the answer form its prompts ask for.

    data = training_set(config)      # .train, .val, .sources (counts per source), .forms
    form = training_answer_form(config)

The main source gives the seeded train/validation split (cut by data.train_limit); data.mix
sources add training problems. data.train_limit 0 trains on the mix alone: the main source
then gives only the validation problems, cut in proportion to the mix's examples. Training,
the plan and `plan --show-example` all build their sets here, so they cannot drift.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass

from mathtune.config import Config
from mathtune.task.answers import HASH_FORM, prompt_form
from mathtune.task.data import (GSM8K_FORMAT, HUB_DEFAULT, DataFormat, DataSource, Problem, resolve_data,
                               training_splits)
from mathtune.task.mix import mix_training_problems


@dataclass(frozen=True)
class TrainingSet:
    train: list[Problem]
    val: list[Problem]
    sources: list[dict]
    """Per source: source, split, weight, problems, examples (train/summary.json's data_sources)."""
    source: DataSource
    """The main source, resolved once."""
    answer_form: str = HASH_FORM
    """The answer form the chat prompt asks for in training and evaluation (training_answer_form)."""

    @functools.cached_property
    def identity(self) -> dict:
        """The main source's train split exactly (task.data.DataSource.identity), as the summary
        records it: hashed when training writes its summary, not by every check that builds the set."""
        return self.source.identity("train")

    @property
    def forms(self) -> dict[str, int]:
        """The answer forms of the training problems, with counts (task.answers)."""
        return dict(Counter(p.form for p in self.train).most_common())


def training_set(config: Config) -> TrainingSet:
    d = config.data
    mix_only = d.train_limit == 0
    source = resolve_data(d.source, DataFormat.of(d)).checked()  # resolved once: split and identity read it
    train, val = training_splits(source, val_fraction=d.val_fraction, seed=config.seed,
                                 train_limit=None if mix_only else d.train_limit)
    extra, mixed = mix_training_problems(config)  # data.mix: extra training sources, counted per source
    if mix_only:
        train = []
        val = val[: max(1, math.ceil(len(extra) * d.val_fraction / (1 - d.val_fraction)))]
    sources = [{"source": d.source, "split": "train (after the seeded split)", "weight": 1.0,
                "problems": len(train), "examples": len(train)}] + mixed
    forms = dict(Counter(p.form for p in train + extra).most_common())
    form = HASH_FORM if _gsm8k_itself(config) else prompt_form(forms)
    return TrainingSet(train + extra, val, sources, source, form)


def _gsm8k_itself(config: Config) -> bool:
    """GSM8K's own source (the hub id, or MATHTUNE_DATA's copy of it) with its own fields and no mix."""
    d = config.data
    return d.source == HUB_DEFAULT and DataFormat.of(d) == GSM8K_FORMAT and not d.mix


def training_answer_form(config: Config) -> str:
    """The answer form the chat prompt asks for in this run's training and evaluation: the
    training data's most common stated form (task.answers.prompt_form). GSM8K's own source
    (the hub id, or MATHTUNE_DATA's copy of it) with its own fields and no mix is '#### N'
    without reading it."""
    if _gsm8k_itself(config):
        return HASH_FORM
    return _form_of_data(config.model_dump_json(include={"seed": True, "data": True}))


@functools.lru_cache(maxsize=16)
def _form_of_data(settings: str) -> str:
    """Cached by the settings that decide the training set: every request of one run asks."""
    config = Config.model_validate_json(settings)
    return training_set(config).answer_form
