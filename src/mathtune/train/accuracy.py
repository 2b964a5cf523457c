"""Validation exact match during training: what `train.select_by: exact_match` selects by.

    callback = exact_match_callback(config, run_dir, tokenizer, val_problems, train_problems)
    trainer = build_trainer(..., accuracy=callback)

At every validation point (step 0 and every train.eval_every_steps), the model being trained,
its adapter unmerged and nothing reloaded from disk, decodes a fixed, seeded subset of the
validation split (train.accuracy_problems; the test split is never read) greedily, with the run's
evaluation prompt and max_new_tokens, through the decoder and scorer of `mathtune eval`. Its
strict exact match joins the validation point's metrics as `eval_exact_match`, which the
Trainer then uses to keep the best adapter and to stop early. Each point's per-problem answers
go to train/val_exact_match.jsonl (one line per point), so the analysis can pair two points on
the same problems.

Written here because TRL's trainers score validation by loss alone; their generation-based
evaluation (users' requests TRL 862, 1222) is not built in.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from mathtune.config import Config
from mathtune.evaluation.decode import decode_and_score
from mathtune.evaluation.request import EvalRequest
from mathtune.models.load import decoding
from mathtune.task.data import Problem
from mathtune.task.prompts import PromptBuilder, make_prompt_builder

ANSWERS_FILE = "val_exact_match.jsonl"  # in RUN_DIR/train/


def accuracy_subset(problems: list[Problem], n: int, seed: int) -> list[Problem]:
    """n validation problems drawn with the seed (all of them when there are no more), in their
    split order: the same problems at every validation point and in every run of the seed."""
    if len(problems) <= n:
        return list(problems)
    chosen = set(random.Random(f"{seed}:accuracy").sample(range(len(problems)), n))
    return [p for i, p in enumerate(problems) if i in chosen]


def accuracy_request(config: Config) -> EvalRequest:
    """The run's evaluation settings, greedy, on validation problems."""
    return replace(EvalRequest.from_config(config), split="validation", limit=None, samples=1, temperature=0.0,
                   batch_size="auto")


class ValidationExactMatch(TrainerCallback):
    """Adds the strict exact match on its problems to every validation point's metrics, and
    writes each point's per-problem answers."""

    def __init__(self, problems: list[Problem], builder: PromptBuilder, request: EvalRequest, tokenizer,
                 answers_path: Path, score: Callable | None = None):
        self.problems, self.builder, self.request, self.tokenizer = problems, builder, request, tokenizer
        self.answers_path = answers_path
        # score(model, tokenizer, problems, builder, request) -> records; tests pass a scripted one
        self.score = score or decode_and_score

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        start = time.perf_counter()
        with decoding(model):
            records = self.score(model, self.tokenizer, self.problems, self.builder, self.request)
        seconds = time.perf_counter() - start
        correct = sum(bool(r["correct_strict"]) for r in records)
        metrics.update({"eval_exact_match": correct / len(records), "eval_exact_match_correct": correct,
                        "eval_exact_match_problems": len(records), "eval_decode_s": round(seconds, 3)})
        if state.is_world_process_zero:
            answers = [{"id": r["id"], "pred_strict": r["pred_strict"], "correct_strict": bool(r["correct_strict"]),
                        "truncated": bool(r["truncated"])} for r in records]
            with self.answers_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, "answers": answers}) + "\n")


def exact_match_callback(config: Config, run_dir: Path, tokenizer, val_problems: list[Problem],
                         train_problems: list[Problem], score: Callable | None = None) -> ValidationExactMatch:
    """The callback for this run: its subset of the validation problems, and the evaluation's
    prompt (a kind with exemplars from the train split draws them from the training problems)."""
    request = accuracy_request(config)
    builder = make_prompt_builder(request.prompt, train=train_problems,
                                  seed=config.seed, date=request.prompt_date, thinking=request.thinking,
                                  answer_form=request.answer_form)
    problems = accuracy_subset(val_problems, config.train.accuracy_problems, config.seed)
    return ValidationExactMatch(problems, builder, request, tokenizer, Path(run_dir) / "train" / ANSWERS_FILE, score)
