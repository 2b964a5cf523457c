"""Rejection-sampling fine-tuning (RFT): the training examples of `train.method: rft`.

    train: {method: rft, rft: {samples: 4, keep: 1, temperature: 0.7, max_new_tokens: 512}}

1. The base model samples `rft.samples` solutions per training problem (seeded, at
   `rft.temperature`) through the decoder and scorer of `mathtune eval`; every sample is
   kept with its score in RUN_DIR/train/rft_samples.jsonl (one line per problem), which
   resumes like an evaluation and is reused by a rerun of the same settings.
2. Per problem, the strictly correct samples that stopped on their own and fit
   data.max_length are kept, deduplicated, at most `rft.keep`; a problem with none keeps
   its gold solution instead.
3. LoRA SFT trains on those (train.run), validated on the gold solutions of the same
   validation split as the sft method, with the same early stopping.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.core.terminal import say
from mathtune.core.runfiles import read_jsonl_until_torn
from mathtune.evaluation.evaluate import evaluate
from mathtune.evaluation.resolve import resolve_request
from mathtune.evaluation.records import EvalPaths, finished_summary
from mathtune.evaluation.summary import EvalSummary
from mathtune.evaluation.request import EvalRequest
from mathtune.models.load import decoding
from mathtune.task.data import Problem
from mathtune.task.prompts import training_pair
from mathtune.task.training_set import training_answer_form
from mathtune.train.trainer import training_fewshot

SAMPLES_NAME = "rft_samples"


def sample_paths(run_dir: Path) -> EvalPaths:
    """train/rft_samples.jsonl and its summary (and partial files while sampling runs)."""
    return EvalPaths.in_folder(Path(run_dir) / "train", SAMPLES_NAME)


def sampling_request(config: Config) -> EvalRequest:
    """The evaluation request whose records are the samples: the training split (after the
    seeded split and data.train_limit, the same problems SFT trains on) under the training
    prompt."""
    rft = config.train.rft
    return replace(EvalRequest.from_config(config), split="train", limit=config.data.train_limit,
                   prompt=config.data.prompt, samples=rft.samples, temperature=rft.temperature,
                   max_new_tokens=rft.max_new_tokens, batch_size="auto")


def _normalized(text: str) -> str:
    return " ".join(text.split())


def scored_samples(record: dict) -> list[dict]:
    """The samples of one eval record: under 'samples' when there are several, else the
    record itself."""
    return record["samples"] if "samples" in record else [record]


def select_solutions(record: dict, keep: int, fits: Callable[[str], bool] = lambda _: True) -> tuple[list[str], int]:
    """Up to `keep` distinct completions of one problem that are strictly correct, not cut
    by the token budget, and fit the training length, in sample order; and how many
    distinct strictly correct ones were left out for their length."""
    chosen, seen, too_long = [], set(), 0
    for sample in scored_samples(record):
        if not sample["correct_strict"] or sample.get("truncated"):
            continue
        key = _normalized(sample["completion"])
        if not key or key in seen:
            continue
        seen.add(key)
        if not fits(sample["completion"]):
            too_long += 1
        elif len(chosen) < keep:
            chosen.append(sample["completion"])
    return chosen, too_long


def rft_training_pairs(config: Config, run_dir: Path, model, tokenizer, problems: list[Problem],
                       fits: Callable[[str, str], bool]) -> tuple[list[tuple[str, str]], dict]:
    """(prompt, answer) text pairs for SFT (task.prompts.training_pair: for a chat prompt the
    answer carries the template's turn end), and the counts the run records. `fits(prompt,
    answer)` says whether an example fits data.max_length. Samples the base model first
    unless train/rft_samples.jsonl already holds these settings' samples."""
    request = sampling_request(config)
    paths = sample_paths(run_dir)
    summary, reused = _sample(request, run_dir, model, tokenizer, paths)
    records = {r["id"]: r for r in read_jsonl_until_torn(paths.records)}

    fewshot = training_fewshot(config)  # plain5: the evaluation's exemplars
    pairs: list[tuple[str, str]] = []
    with_correct = from_model = correct_samples = too_long = 0
    for problem in problems:
        record = records.get(problem.id)
        if record is None:
            raise MathtuneError(f"{paths.records} has no samples for {problem.id}; delete it to sample again")
        correct = sum(bool(s["correct_strict"]) for s in scored_samples(record))
        correct_samples += correct
        with_correct += correct > 0
        # The prompt SFT would train on (the evaluation's, plain5's exemplars included), the model's
        # own solutions in place of the gold one.
        def pair(solution: str | None) -> tuple[str, str]:
            return training_pair(problem, tokenizer, config.data.prompt, date=config.data.prompt_date, solution=solution,
                                 fewshot=fewshot, thinking=config.model.thinking,
                                 answer_form=training_answer_form(config))

        chosen, left_out = select_solutions(record, config.train.rft.keep, lambda c: fits(*pair(c)))
        from_model += len(chosen)
        too_long += left_out
        pairs += [pair(c) for c in chosen] or [pair(None)]
    kept = len(pairs)
    stats = {
        "problems": len(problems),
        "samples_per_problem": request.samples,
        "temperature": request.temperature,
        "max_new_tokens": request.max_new_tokens,
        "keep_per_problem": config.train.rft.keep,
        "sampled_solutions": len(problems) * request.samples,
        "strictly_correct_samples": correct_samples,
        "problems_with_correct_sample": with_correct,
        "correct_samples_too_long": too_long,
        "max_length": config.data.max_length,
        "solutions_kept": kept,
        "kept_from_model": from_model,
        "kept_from_gold": kept - from_model,
        "share_from_model": from_model / kept if kept else None,
        "sample_accuracy_strict": correct_samples / (len(problems) * request.samples) if problems else None,
        "sampling_generated_tokens": summary.generated_tokens,
        "sampling_wall_time_s": summary.wall_time_s,
        "sampling_reused": reused,
        "samples_file": "train/rft_samples.jsonl",
    }
    say(
        f"rft: {with_correct} of {len(problems)} problems have a strictly correct sample; kept {kept} solutions, "
        f"{from_model} from the model and {kept - from_model} gold"
    )
    return pairs, stats


def _sample(request: EvalRequest, run_dir: Path, model, tokenizer, paths: EvalPaths) -> tuple[EvalSummary, bool]:
    """Run (or resume, or reuse) the sampling: its summary, and whether finished samples were
    reused. The model is put in eval mode and, where a GPU is present, on it, with an attention
    the decoder supports."""
    request = resolve_request(request, paths)
    done = finished_summary(paths, request)
    if done is not None:
        say(f"rft: reusing the samples in {paths.records}")
        return done, True
    with decoding(model):
        # The samples file is this run's own, redrawn when the sampling settings change.
        return evaluate(request, run_dir, model=model, tokenizer=tokenizer, paths=paths, name=SAMPLES_NAME,
                        overwrite=True), False
