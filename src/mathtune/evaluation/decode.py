"""Decoding a benchmark's problems: the engine where the model allows it, batched `generate`
where not, and chat-verify's two turns.

    batch_size, decoder = decode_problems(model, tokenizer, problems, prompts, request, stops, on_done)
    records = decode_and_score(model, tokenizer, problems, builder, request)   # in memory, no files

Problems come longest prompt first; on_done(problem, generations) is called as each finishes.
"""

from __future__ import annotations

import torch

from mathtune.evaluation.records import build_record
from mathtune.evaluation.request import EvalRequest
from mathtune.models.generate import Generation, generate_batch, pick_batch_size
from mathtune.task.data import Problem
from mathtune.task.prompts import PromptBuilder, render_verify_turn

def decode_problems(model, tokenizer, problems: list[Problem], prompts: dict[str, str], request: EvalRequest,
                    stop_strings: tuple[str, ...], on_done) -> tuple[int, str]:
    """Generate for every problem (given longest prompt first), calling on_done(problem,
    generations) as each finishes;
    returns the batch size used and which decoder ran. The engine (shared prefix, refilled batch) where the
    model's cache allows it, else batched `generate`. Out of GPU memory, the batch halves
    and the unfinished problems go on."""
    from mathtune.models import engine

    texts = [prompts[p.id] for p in problems]
    kwargs = dict(max_new_tokens=request.max_new_tokens, stop_strings=stop_strings,
                  add_special_tokens=request.prompt not in ("chat", "chat-verify"), samples=request.samples,
                  temperature=request.temperature)
    if not problems:
        return (request.batch_size if request.batch_size != "auto" else 1), "none (all resumed)"
    if not engine.supports(model):
        return _decode_with_generate(model, tokenizer, problems, texts, request, kwargs, on_done), "transformers generate"

    size = request.batch_size
    if size == "auto":
        longest = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"])  # problems come longest first
        size = engine.auto_batch_size(model, longest + request.max_new_tokens, request.samples)
    remaining = list(range(len(problems)))
    while remaining:
        finished: set[int] = set()
        try:
            for i, generations in engine.generate_stream(model, tokenizer, [texts[j] for j in remaining],
                                                         batch_size=size, **kwargs):
                on_done(problems[remaining[i]], generations)
                finished.add(i)
            remaining = []
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            remaining = [j for i, j in enumerate(remaining) if i not in finished]
    return size, "mathtune engine (shared prefix, refilled batch)"


def _decode_with_generate(model, tokenizer, problems, texts, request, kwargs, on_done) -> int:
    cursor = 0

    def run_batch(batch_size: int) -> None:
        nonlocal cursor
        chunk = slice(cursor, cursor + batch_size)
        for problem, generations in zip(problems[chunk], generate_batch(model, tokenizer, texts[chunk], **kwargs)):
            on_done(problem, generations)
        cursor += len(problems[chunk])

    batch_size = pick_batch_size(request.batch_size, run_batch)
    while cursor < len(problems):
        run_batch(batch_size)
    return batch_size


# chat-verify decodes this many problems' first turns, then their second turns, then the
# next problems: a kill loses at most one chunk's first turns, and the batch stays full.
VERIFY_CHUNK = 32


def decode_two_turns(model, tokenizer, problems: list[Problem], prompts: dict[str, str], request: EvalRequest,
                     stop_strings: tuple[str, ...], on_done) -> tuple[int, str]:
    """chat-verify: each problem's first answer, then, in the same conversation, the model's
    check of it; on_done(problem, [final], first) once both turns are done."""
    size, decoder = decode_problems(model, tokenizer, [], prompts, request, stop_strings, on_done)
    for start in range(0, len(problems), VERIFY_CHUNK):
        part = problems[start:start + VERIFY_CHUNK]
        first: dict[str, Generation] = {}
        decode_problems(model, tokenizer, part, prompts, request, stop_strings,
                        lambda p, g: first.__setitem__(p.id, g[0]))
        second = {p.id: render_verify_turn(p.question, first[p.id].completion, tokenizer) for p in part}
        part = sorted(part, key=lambda p: -len(second[p.id]))  # longest first, as decode_problems expects
        size, decoder = decode_problems(model, tokenizer, part, second, request, stop_strings,
                                        lambda p, g: on_done(p, g, first[p.id]))
    return size, decoder


def longest_first(problems: list[Problem], prompts: dict[str, str], tokenizer) -> list[Problem]:
    """Longest prompts first: similar lengths are prefilled together (little padding), and an
    out-of-memory error shows up at the start, not halfway through. Processes take every
    world_size-th problem of that order, so each gets a similar mix of lengths."""
    lengths = {p.id: len(tokenizer(prompts[p.id], add_special_tokens=False)["input_ids"]) for p in problems}
    return sorted(problems, key=lambda p: -lengths[p.id])


def decode_and_score(model, tokenizer, problems: list[Problem], builder: PromptBuilder,
                     request: EvalRequest) -> list[dict]:
    """Every problem decoded and scored in memory, as the records `mathtune eval` writes, in
    problem order; no file is written. For a model still in training, whose validation exact
    match is measured between its steps."""
    prompts = {p.id: builder.render(p.question, tokenizer) for p in problems}
    records: dict[str, dict] = {}

    def keep(problem: Problem, generations: list[Generation], first_turn: Generation | None = None) -> None:
        records[problem.id] = build_record(problem, prompts[problem.id], generations, first_turn)

    decode = decode_two_turns if request.prompt == "chat-verify" else decode_problems
    decode(model, tokenizer, longest_first(problems, prompts, tokenizer), prompts, request, builder.stop_strings, keep)
    return [records[p.id] for p in problems]
