"""Training-data mixes: extra training sources beside the main one.

    mix_training_problems(config) -> (problems to add to the training set, counts per source)

Each `data.mix` entry is a hub id, a local folder or one local JSONL file, with its own field
mapping and a weight: round(weight x its problems) examples are taken, each problem whole
times first, then a seeded sample of the rest (weight 0 takes none, so a mix of weight 0
trains exactly as no mix). The main source keeps the seeded train/validation split, the
validation set and the test set; `data.train_limit` cuts the main source only.

Written here because TRL trains on one dataset, and `datasets.interleave_datasets` samples by
probability, which would not give the exact, recorded counts per source.
"""

from __future__ import annotations

import random
from dataclasses import replace

from mathtune.config import Config, MixSource
from mathtune.task.data import DataFormat, Problem, load_source_split


def _take(problems: list[Problem], weight: float, rng: random.Random) -> list[Problem]:
    n = round(weight * len(problems))
    whole, rest = divmod(n, len(problems)) if problems else (0, 0)
    picked = sorted(rng.sample(range(len(problems)), rest))
    return [p for _ in range(whole) for p in problems] + [problems[i] for i in picked]


def load_mix_source(entry: MixSource, index: int) -> list[Problem]:
    """The problems of one mix entry, named 'mixI:ID' so they never collide with the main
    source's ids. A mix source is read the way a test set is (DataFormat.of(entry) names its split
    as the one to read): one file whole, FOLDER/SPLIT.jsonl, or the hub's split."""
    problems = load_source_split(entry.source, "test", DataFormat.of(entry))
    return [replace(p, id=f"mix{index}:{p.id}") for p in problems]


def mix_training_problems(config: Config) -> tuple[list[Problem], list[dict]]:
    added, counts = [], []
    for i, entry in enumerate(config.data.mix):
        problems = load_mix_source(entry, i)
        taken = _take(problems, entry.weight, random.Random(f"{config.seed}:mix{i}"))
        added += taken
        counts.append({"source": entry.source, "split": entry.split, "weight": entry.weight,
                       "problems": len(problems), "examples": len(taken)})
    return added, counts
