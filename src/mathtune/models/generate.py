"""Batched generation for benchmarking: left padding, per-row stop strings, truncation flags.

The steps, smallest first:
  encode_batch     prompts -> left-padded input_ids / attention_mask
  generate_batch   one model.generate call -> one Generation per prompt (x samples)
  cut_at_stop      a row's text, cut at its own first stop string
  finish_row       a row's tokens -> its Generation (the engine ends its rows here too)
  pick_batch_size  'auto' -> the largest batch that fits (GPU), CPU_BATCH_SIZE on a CPU
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig

# Problems decoded at once on a CPU. One decoding step of Qwen2.5-0.5B (fp32, 2 cores) with
# 1,100 cached tokens a row: batch 8 263 ms (30 tokens/s), 16 370 ms (43), 32 518 ms (62),
# 64 1,124 ms (57); the weights are read once a step whatever the batch, until the rows'
# keys and values outweigh them.
CPU_BATCH_SIZE = 32
GPU_START_BATCH_SIZE = 256
# Turn-end markers are matched as token ids (stop_token_ids), not as strings.
_SPECIAL_STOPS = ("<|im_end|>", "<|endoftext|>", "</s>")


@dataclass(frozen=True)
class Generation:
    completion: str
    """Model text, cut at the first stop string, special tokens removed."""
    num_generated_tokens: int
    """Tokens the model produced for this row, up to and including the one that stopped it."""
    truncated: bool
    """True when the row hit max_new_tokens without reaching a stop token or stop string."""


@dataclass(frozen=True)
class Decoding:
    """How every prompt is decoded, by `generate` and by the engine alike: what decides its tokens."""

    max_new_tokens: int
    stop_strings: tuple[str, ...]
    add_special_tokens: bool = False
    """Whether the tokenizer adds its special tokens to the prompt (the few-shot formats; a chat
    template has them already)."""
    samples: int = 1
    """Completions per prompt."""
    temperature: float = 0.0
    """0 is greedy argmax; above 0 a draw from softmax(logits / temperature)."""


def special_token_texts(tokenizer) -> set[str]:
    """Every special or added token of the tokenizer, as text: a stop string among them is a
    token, matched by id (decoded text never holds it)."""
    return set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))


def stop_token_ids(tokenizer, model, stop_strings: tuple[str, ...] = ()) -> list[int]:
    """Every turn-end token we know of: base Qwen models end with <|endoftext|>, chat
    models with <|im_end|>; a base model only told about one runs on to max_new_tokens. Stop
    strings that are special tokens of this tokenizer (a template's turn end) stop by id. A
    name is a stop token only where it is a special (or added) token, or in the generation
    config: in Qwen's vocabulary `</s>` is ordinary text (id 128247), which a model may write."""
    ids: set[int] = set()
    specials = special_token_texts(tokenizer)
    for token in ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>") + tuple(stop_strings):
        if token not in specials:
            continue
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(t) for t in source)
    return sorted(ids)


def encode_batch(tokenizer, prompts: list[str], add_special_tokens: bool, device) -> dict[str, torch.Tensor]:
    # Decoder-only models continue from the last position, so padding must be on the left.
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def cut_at_stop(text: str, stop_strings: tuple[str, ...]) -> tuple[str, bool]:
    """`generate` stops a row at a stop string but keeps the string (and the batch goes on
    for the other rows), so each row is cut at its own first stop string here."""
    cut = len(text)
    for stop in stop_strings:
        pos = text.find(stop)
        if pos != -1:
            cut = min(cut, pos)
    return text[:cut], cut < len(text)


def finish_row(tokenizer, tokens: list[int], stopped_by_token: bool, stop_strings: tuple[str, ...],
               max_new_tokens: int) -> Generation:
    """How every decoder ends a row. tokens: what the row produced before its stop token (the
    stop token itself left out). The text is cut at its first stop string; the count includes
    the stop token; the row is truncated when it ran to max_new_tokens with neither a stop
    token nor a stop string."""
    text, hit_stop_string = cut_at_stop(tokenizer.decode(tokens, skip_special_tokens=True), stop_strings)
    n_tokens = len(tokens) + (1 if stopped_by_token else 0)
    truncated = not stopped_by_token and not hit_stop_string and len(tokens) >= max_new_tokens
    return Generation(text, min(n_tokens, max_new_tokens), truncated)


@torch.inference_mode()
def generate_batch(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop_strings: tuple[str, ...],
    add_special_tokens: bool = False,
    samples: int = 1,
    temperature: float = 0.0,
) -> list[list[Generation]]:
    """One list of `samples` generations per prompt, in prompt order."""
    device = next(model.parameters()).device
    enc = encode_batch(tokenizer, prompts, add_special_tokens, device)
    prompt_len = enc["input_ids"].shape[1]
    stops = stop_token_ids(tokenizer, model, stop_strings)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    sampling = samples > 1 or temperature > 0
    # Every decoding knob set explicitly: `generate` fills any field left None from the
    # model's own generation_config.json, and Qwen's instruct models ship do_sample, top_p 0.8,
    # top_k 20 and a repetition penalty that must not leak into a benchmark that says "greedy"
    # (or into sampling at a stated temperature). The warpers only act when sampling.
    warpers = dict(temperature=temperature, top_p=1.0, top_k=0, min_p=0.0, typical_p=1.0) if sampling else {}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        num_beams=1,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        num_return_sequences=samples,
        eos_token_id=stops,
        pad_token_id=pad_id,
        stop_strings=[s for s in stop_strings if s not in _SPECIAL_STOPS] or None,
        **warpers,
    )
    out = model.generate(
        **enc,
        generation_config=config,
        tokenizer=tokenizer,
    )  # out: [B * samples, prompt_len + T]
    new_tokens = out[:, prompt_len:].tolist()  # [B * samples, T]
    stop_set = set(stops) | {pad_id}
    results: list[list[Generation]] = []
    for row_index, row in enumerate(new_tokens):
        end = next((i for i, tok in enumerate(row) if tok in stop_set), None)
        kept = row if end is None else row[:end]
        if row_index % samples == 0:
            results.append([])
        results[-1].append(finish_row(tokenizer, kept, end is not None, stop_strings, max_new_tokens))
    return results


def pick_batch_size(requested: int | str, try_batch) -> int:
    """'auto': on a GPU, the largest batch (from 256, shrinking on out-of-memory) for which
    `try_batch(batch_size)` runs; on a CPU a fixed CPU_BATCH_SIZE. `try_batch` is called with the
    longest prompts, so a size that fits them fits the rest."""
    if requested != "auto":
        return int(requested)
    if not torch.cuda.is_available():
        return CPU_BATCH_SIZE
    from accelerate.utils import find_executable_batch_size

    @find_executable_batch_size(starting_batch_size=GPU_START_BATCH_SIZE, reduce_batch_size_fn=None)
    def probe(batch_size: int) -> int:
        try_batch(batch_size)
        return batch_size

    return probe()
