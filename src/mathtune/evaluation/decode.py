"""Decoding a benchmark's problems: the engine where the model allows it, batched `generate`
where not, and chat-verify's two turns.

    token_ids = prompt_token_ids(problems, prompts, tokenizer, request)   # once, for ordering and decoding
    problems = longest_first(problems, token_ids)
    batch_size, decoder = decode_problems(model, tokenizer, problems, prompts, request, stops, on_done, token_ids)
    records = decode_and_score(model, tokenizer, problems, builder, request)   # in memory, no files

Problems come longest prompt first; on_done(problem, generations) is called as each finishes.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from mathtune.evaluation.records import build_record
from mathtune.evaluation.request import EvalRequest
from mathtune.models import engine
from mathtune.models.decoders import DECODER_TABLE
from mathtune.models.engine import Batching
from mathtune.models.first_use import decoder_of
from mathtune.models.generate import Decoding, Generation, generate_batch, pick_batch_size
from mathtune.task.data import Problem
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.prompts import PromptBuilder, render_verify_turn
from mathtune.task.sequences import adds_special_tokens, prompt_ids


def prompt_token_ids(problems: list[Problem], prompts: dict[str, str], tokenizer,
                     request: EvalRequest) -> dict[str, list[int]]:
    """Each problem's prompt as the decoder reads it, the ids training puts before the answer
    (task.sequences). Tokenized once, here, for both the order and the decoder (8-shot prompts
    of 1,319 problems take over a second to tokenize on a CPU)."""
    return {p.id: prompt_ids(prompts[p.id], tokenizer, request.prompt) for p in problems}


def decode_problems(model, tokenizer, problems: list[Problem], prompts: dict[str, str], request: EvalRequest,
                    stop_strings: tuple[str, ...], on_done,
                    token_ids: dict[str, list[int]] | None = None) -> tuple[int, str]:
    """Generate for every problem (given longest prompt first), calling on_done(problem,
    generations) as each finishes;
    returns the batch size used and which decoder ran. The engine (shared prefix, refilled batch) where the
    model's cache allows it, else batched `generate`. Out of GPU memory, the batch halves
    and the unfinished problems go on. token_ids: the prompts already tokenized
    (prompt_token_ids), else the engine tokenizes them."""
    texts = [prompts[p.id] for p in problems]
    decoding = Decoding(max_new_tokens=request.max_new_tokens, stop_strings=stop_strings,
                        add_special_tokens=adds_special_tokens(request.prompt), samples=request.samples,
                        temperature=request.temperature)
    if not problems:
        return (request.batch_size if request.batch_size != "auto" else 1), "none (all resumed)"
    decoder = decoder_of(model)  # auto's pick, or its fallback where its check failed on this device
    if not DECODER_TABLE.get(decoder).engine:
        return _decode_with_generate(model, tokenizer, problems, texts, request, decoding, on_done), decoder

    ids = ([token_ids[p.id] for p in problems] if token_ids is not None else
           [tokenizer(t, add_special_tokens=decoding.add_special_tokens)["input_ids"] for t in texts])
    static = DECODER_TABLE.get(decoder).static_cache
    size = request.batch_size
    if size == "auto":
        row_tokens = len(ids[0]) + request.max_new_tokens  # problems come longest first
        if static:  # every slot holds the whole capacity
            row_tokens = engine.static_capacity(len(ids[0]), request.max_new_tokens)
        size = engine.auto_batch_size(model, row_tokens, request.samples)
    remaining = list(range(len(problems)))
    while remaining:
        finished: set[int] = set()
        try:
            for i, generations in engine.generate_stream(model, tokenizer, [texts[j] for j in remaining], decoding,
                                                         Batching(batch_size=size, static_cache=static),
                                                         prompt_ids=[ids[j] for j in remaining]):
                on_done(problems[remaining[i]], generations)
                finished.add(i)
            remaining = []
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            remaining = [j for i, j in enumerate(remaining) if i not in finished]
    return size, decoder


def _decode_with_generate(model, tokenizer, problems, texts, request, decoding: Decoding, on_done) -> int:
    cursor = 0

    def run_batch(batch_size: int) -> None:
        nonlocal cursor
        chunk = slice(cursor, cursor + batch_size)
        for problem, generations in zip(problems[chunk], generate_batch(model, tokenizer, texts[chunk],
                                                                        **asdict(decoding))):
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
                     stop_strings: tuple[str, ...], on_done,
                     token_ids: dict[str, list[int]] | None = None) -> tuple[int, str]:
    """chat-verify: each problem's first answer, then, in the same conversation, the model's
    check of it; on_done(problem, [final], first, second_prompt) once both turns are done."""
    size, decoder = decode_problems(model, tokenizer, [], prompts, request, stop_strings, on_done)
    for start in range(0, len(problems), VERIFY_CHUNK):
        part = problems[start:start + VERIFY_CHUNK]
        first: dict[str, Generation] = {}
        decode_problems(model, tokenizer, part, prompts, request, stop_strings,
                        lambda p, g: first.__setitem__(p.id, g[0]), token_ids)
        second = {p.id: render_verify_turn(p.question, first[p.id].completion, tokenizer, request.prompt_date,
                                         request.thinking, request.answer_form)
                  for p in part}
        part = sorted(part, key=lambda p: -len(second[p.id]))  # longest first, as decode_problems expects
        size, decoder = decode_problems(model, tokenizer, part, second, request, stop_strings,
                                        lambda p, g: on_done(p, g, first[p.id], second[p.id]))
    return size, decoder


def longest_first(problems: list[Problem], token_ids: dict[str, list[int]]) -> list[Problem]:
    """Longest prompts first: similar lengths are prefilled together (little padding), and an
    out-of-memory error shows up at the start, not halfway through. Processes take every
    world_size-th problem of that order, so each gets a similar mix of lengths."""
    return sorted(problems, key=lambda p: -len(token_ids[p.id]))


def decode_and_score(model, tokenizer, problems: list[Problem], builder: PromptBuilder,
                     request: EvalRequest) -> list[dict]:
    """Every problem decoded and scored in memory, as the records `mathtune eval` writes, in
    problem order; no file is written. For a model still in training, whose validation exact
    match is measured between its steps."""
    prompts = {p.id: builder.render(p.question, tokenizer) for p in problems}
    records: dict[str, dict] = {}

    def keep(problem: Problem, generations: list[Generation], first_turn: Generation | None = None,
             final_prompt: str | None = None) -> None:
        records[problem.id] = build_record(problem, prompts[problem.id], generations, first_turn, final_prompt)

    token_ids = prompt_token_ids(problems, prompts, tokenizer, request)
    decode = decode_two_turns if PROMPT_KIND_TABLE.get(request.prompt).second_turn else decode_problems
    decode(model, tokenizer, longest_first(problems, token_ids), prompts, request, builder.stops_for(tokenizer), keep,
           token_ids)
    return [records[p.id] for p in problems]
