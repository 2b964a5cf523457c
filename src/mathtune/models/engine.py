"""The evaluation decoder: a shared-prefix KV cache and a batch that is refilled as rows finish.

    for index, generations in generate_stream(model, tokenizer, prompts, Decoding(max_new_tokens, stops),
                                              Batching(batch_size=32)):
        ...   # prompts come back as they finish, not in order

Written by hand because `model.generate` does neither of the two things that make a GSM8K
benchmark fast:
- Few-shot prompts share ~800 tokens of exemplars (the chat prompt shares its template and
  instruction). `generate` prefills them again for every problem; here the longest common
  token prefix of all prompts is run through the model once, and its keys and values are
  copied into every row.
- A static batch decodes until its longest row stops, so short answers wait on long ones.
  Here a finished row leaves the batch at once, and new problems are prefilled into the free
  places; cache columns no row attends to any more are dropped.

Two ways to hold the batch, the same prefill and bookkeeping (_Session) around both:
- _decode_dynamic: a DynamicCache; finished rows are removed, new rows appended (the CPU default).
- _decode_static: fixed slots (static_cache.Slots), a finished row's slot refilled in place, the
  step one CUDA graph on a GPU (the GPU default; uses_static_cache, MATHTUNE_STATIC_CACHE).

Each row keeps its own position ids and attention mask, so a row sees exactly the tokens of
its own prompt, in their own positions: in float32 the tokens equal those of plain
batch-1 `generate` (tests/test_engine.py). Decoding knobs are those of generate.py: greedy
argmax, or plain sampling at a temperature (no top-p/top-k), from float32 logits.
Models whose cache is not a plain per-layer key/value list (sliding-window or other special
layers) are not handled; `supports` says so and the caller falls back to `generate`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Iterator

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from mathtune.models.generate import (CPU_BATCH_SIZE, Decoding, Generation, finish_row, special_token_texts,
                                      stop_token_ids)
from mathtune.models.static_cache import ATTENTION, Slots, static_cache_by_default

# The fixed slots' cache holds a row's prompt and answer plus this fraction of them again.
STATIC_HEADROOM = 4
# Stop strings are short; the last few tokens hold any that the newest token completes.
_STOP_TAIL_TOKENS = 8
# Prompt tokens run through the model in one prefill forward (bounds its activations).
PREFILL_TOKENS = {"cuda": 32768, "cpu": 4096}


@dataclass(frozen=True)
class Batching:
    """How the engine holds its batch. In float32, greedy, none of it changes a token
    (tests/test_engine.py); it decides how fast they come."""

    batch_size: int = 8
    """Prompts decoded at once (rows = batch_size x samples)."""
    prefill_size: int | None = None
    """Free places that start a refill, so that a refill costs one forward for several problems
    (default: a quarter of batch_size, at least 1)."""
    prefill_tokens: int | None = None
    """Prompt tokens one prefill forward takes at most (default: PREFILL_TOKENS for the device)."""
    share_prefix: bool = True
    """The prompts' common prefix run once, its keys and values copied into every row."""
    static_cache: bool | None = None
    """Fixed slots and, on a GPU, a CUDA graph per step (default: uses_static_cache)."""


def auto_batch_size(model, max_row_tokens: int, samples: int = 1) -> int:
    """Problems to decode at once: a fixed number on a CPU; on a GPU as many as half the free
    memory holds, counting each row's KV cache at its longest (prompt + max_new_tokens) and
    its float32 logits. Too many still halves on out-of-memory (evaluate.decode_problems)."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        return max(1, CPU_BATCH_SIZE // samples)  # CPU_BATCH_SIZE counts rows, and a problem has `samples` rows
    cfg = model.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    elem = next(model.parameters()).element_size()
    per_row = 2 * cfg.num_hidden_layers * kv_heads * head_dim * elem * max_row_tokens + 3 * 4 * cfg.vocab_size
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(0.5 * free // per_row) // samples)


def supports(model) -> bool:
    """True when the model's KV cache is a list of plain dynamic layers we can re-arrange."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config the cache cannot read: leave it to generate
        return False
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass
class _Row:
    prompt_index: int
    sample: int
    tokens: list[int] = field(default_factory=list)
    stopped_by_token: bool = False
    stopped_by_string: bool = False
    done: bool = False


class _Batch:
    """The rows being decoded: their KV cache, attention mask, next position and last token."""

    def __init__(self, cache, mask: torch.Tensor, next_pos: torch.Tensor, rows: list[_Row]):
        self.cache, self.mask, self.next_pos, self.rows = cache, mask, next_pos, rows

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, other: "_Batch") -> None:
        """Append other's rows. The shorter cache gets zero columns on the left, masked out:
        a row's keys carry their rotary positions already, so where a column sits in the cache
        does not matter, only whether the row's mask lets it be seen."""
        if not self.rows:
            self.cache, self.mask, self.next_pos, self.rows = other.cache, other.mask, other.next_pos, other.rows
            return
        a_len, b_len = self.mask.shape[1], other.mask.shape[1]
        width = max(a_len, b_len)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width), _pad_left(theirs.keys, width)], dim=0)
            mine.values = torch.cat([_pad_left(mine.values, width), _pad_left(theirs.values, width)], dim=0)
        self.mask = torch.cat([_pad_left(self.mask, width, dim=1), _pad_left(other.mask, width, dim=1)], dim=0)
        self.next_pos = torch.cat([self.next_pos, other.next_pos])
        self.rows = self.rows + other.rows

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at these indices, then drop cache columns no remaining row sees."""
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            return
        self.cache.batch_select_indices(index)
        self.mask = self.mask.index_select(0, index)
        self.next_pos = self.next_pos.index_select(0, index)
        seen = self.mask.any(dim=0)
        unseen = int((~seen).sum())
        # Dropping columns copies the cache; do it when it removes a real share of it.
        if unseen >= max(16, self.mask.shape[1] // 8):
            columns = seen.nonzero().squeeze(1)
            for layer in self.cache.layers:
                layer.keys = layer.keys.index_select(2, columns)
                layer.values = layer.values.index_select(2, columns)
            self.mask = self.mask.index_select(1, columns)


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def common_prefix_length(token_lists: list[list[int]]) -> int:
    """Tokens shared by the start of every list, leaving each list at least one of its own
    (the last prompt token must be run to get the first new token's logits)."""
    if not token_lists:
        return 0
    first = token_lists[0]
    n = min(len(t) for t in token_lists) - 1
    for tokens in token_lists[1:]:
        i = 0
        while i < n and tokens[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


def _cache_keyword(model) -> str:
    """transformers 5.2x renamed forward's `past_key_values` to `cache` (the old name warns)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _pick(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Greedy argmax, or a draw from softmax(logits / T); logits are float32."""
    if temperature > 0:
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)
    return logits.argmax(dim=-1)


def uses_static_cache(model, static_cache: bool | None = None) -> bool:
    """Whether generate_stream decodes with fixed slots (static_cache.Slots): as asked, else
    static_cache_by_default (MATHTUNE_STATIC_CACHE=1/0, else on a GPU). Needs an attention
    whose masks the slots write (sdpa, eager)."""
    if static_cache is None:
        static_cache = static_cache_by_default(next(model.parameters()).device.type == "cuda")
    return bool(static_cache) and getattr(model.config, "_attn_implementation", None) in ATTENTION


def static_capacity(longest_prompt: int, max_new_tokens: int) -> int:
    """Cache columns of the fixed slots: a row's prompt and answer, and headroom so that the
    columns are compacted once every headroom steps, not on every step."""
    need = longest_prompt + max_new_tokens
    return need + max(16, need // STATIC_HEADROOM)


class _Session:
    """What both decoders share: the tokenized prompts, the shared prefix's keys and values,
    the prefill of new rows, and each row's stop checks and results."""

    def __init__(self, model, tokenizer, ids: list[list[int]], decoding: Decoding, *, share_prefix: bool,
                 prefill_tokens: int):
        self.model, self.tokenizer, self.ids = model, tokenizer, ids
        self.max_new_tokens, self.stop_strings = decoding.max_new_tokens, decoding.stop_strings
        self.samples, self.temperature, self.prefill_tokens = decoding.samples, decoding.temperature, prefill_tokens
        self.device = next(model.parameters()).device
        stops = stop_token_ids(tokenizer, model, self.stop_strings)
        self.stop_set = set(stops)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
        # Turn-end markers are special tokens, matched by id (decoded text never holds them).
        specials = special_token_texts(tokenizer)
        self.text_stops = tuple(s for s in self.stop_strings if s and s not in specials)
        self.cache_kw = _cache_keyword(model)
        # A stop string can only be completed by a token whose text holds the string's last
        # character; only after such a token is the row's tail decoded (per token id, cached).
        self.last_chars = {s[-1] for s in self.text_stops}
        self.may_complete: dict[int, bool] = {}
        self.pending_done: dict[int, dict[int, Generation]] = {}

        # --- the shared prefix, run once ---
        self.prefix_len = common_prefix_length(ids) if share_prefix and len(ids) > 1 else 0
        self.prefix_kv = None
        if self.prefix_len > 0:
            cache = DynamicCache(config=model.config)
            model(input_ids=torch.tensor([ids[0][:self.prefix_len]], device=self.device), **{self.cache_kw: cache},
                  use_cache=True, logits_to_keep=1)
            self.prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]

    def take(self, queue: list[int], free: int) -> int:
        """How many of the queue's next prompts one prefill forward takes (the queue is longest first)."""
        return max(1, min(free, self.prefill_tokens // max(1, len(self.ids[queue[0]]) - self.prefix_len)))

    def prefill_next(self, queue: list[int], free: int):
        """Prefill the queue's next prompts (as many as `take` allows within `free` places) and
        remove them from the queue; returns their batch, their first tokens and how many it took."""
        take = self.take(queue, free)
        new, logits = self.prefill(queue[:take])
        del queue[:take]
        return new, _pick(logits, self.temperature), take

    def prefill(self, group: list[int]) -> tuple["_Batch", torch.Tensor]:
        """New rows for these prompts (each repeated `samples` times) and their first-token logits."""
        device, prefix_len, samples = self.device, self.prefix_len, self.samples
        suffixes = [self.ids[i][prefix_len:] for i in group]
        width = max(len(s) for s in suffixes)
        k = len(group)
        inp = torch.full((k, width), self.pad_id, dtype=torch.long)
        smask = torch.zeros((k, width), dtype=torch.long)
        for r, s in enumerate(suffixes):  # left padding: every row's last column is its last token
            inp[r, width - len(s):] = torch.tensor(s)
            smask[r, width - len(s):] = 1
        inp, smask = inp.to(device), smask.to(device)
        pos = (prefix_len + smask.cumsum(1) - 1).clamp(min=prefix_len)
        cache = DynamicCache(config=self.model.config)
        mask = smask
        if self.prefix_kv is not None:
            for layer_idx, (keys, values) in enumerate(self.prefix_kv):
                cache.update(keys.expand(k, -1, -1, -1).contiguous(), values.expand(k, -1, -1, -1).contiguous(),
                             layer_idx)
            mask = torch.cat([torch.ones((k, prefix_len), dtype=torch.long, device=device), smask], dim=1)
        out = self.model(input_ids=inp, attention_mask=mask, position_ids=pos, **{self.cache_kw: cache},
                         use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :].float()
        next_pos = pos[:, -1] + 1
        if samples > 1:
            cache.batch_repeat_interleave(samples)
            mask = mask.repeat_interleave(samples, dim=0)
            next_pos = next_pos.repeat_interleave(samples)
            logits = logits.repeat_interleave(samples, dim=0)
        rows = [_Row(i, s) for i in group for s in range(samples)]
        return _Batch(cache, mask, next_pos, rows), logits

    def finished(self, row: _Row) -> bool:
        return row.stopped_by_token or row.stopped_by_string or len(row.tokens) >= self.max_new_tokens

    def push(self, row: _Row, token: int) -> None:
        if token in self.stop_set:
            row.stopped_by_token = True
            return
        row.tokens.append(token)
        if not self.text_stops:
            return
        if token not in self.may_complete:
            text = self.tokenizer.decode([token], skip_special_tokens=True)
            self.may_complete[token] = any(c in text for c in self.last_chars) or "\ufffd" in text
        if self.may_complete[token]:
            tail = self.tokenizer.decode(row.tokens[-_STOP_TAIL_TOKENS:], skip_special_tokens=True)
            row.stopped_by_string = any(s in tail for s in self.text_stops)

    def result(self, row: _Row) -> Generation:
        return finish_row(self.tokenizer, row.tokens, row.stopped_by_token, self.stop_strings, self.max_new_tokens)

    def record(self, rows: list[_Row], tokens: list[int]) -> Iterator[tuple[int, list[Generation]]]:
        """Give each running row its chosen token; yield the prompts whose rows all finished."""
        for row, token in zip(rows, tokens):
            if row.done:
                continue
            self.push(row, token)
            if self.finished(row):
                row.done = True
                done = self.pending_done.setdefault(row.prompt_index, {})
                done[row.sample] = self.result(row)
                if len(done) == self.samples:
                    yield row.prompt_index, [done[s] for s in range(self.samples)]
                    del self.pending_done[row.prompt_index]


@torch.inference_mode()
def generate_stream(model, tokenizer, prompts: list[str], decoding: Decoding, batching: Batching = Batching(), *,
                    prompt_ids: list[list[int]] | None = None) -> Iterator[tuple[int, list[Generation]]]:
    """Yield (prompt index, its `samples` generations) as each prompt finishes. prompt_ids: the
    prompts already tokenized (with decoding.add_special_tokens), so that the caller's
    tokenization is not done twice."""
    device = next(model.parameters()).device
    ids = prompt_ids if prompt_ids is not None else [
        tokenizer(p, add_special_tokens=decoding.add_special_tokens)["input_ids"] for p in prompts]
    session = _Session(model, tokenizer, ids, decoding, share_prefix=batching.share_prefix,
                       prefill_tokens=batching.prefill_tokens or PREFILL_TOKENS.get(device.type, PREFILL_TOKENS["cpu"]))
    batch_size = batching.batch_size
    prefill_size = batching.prefill_size or max(1, batch_size // 4)
    queue = list(range(len(prompts)))  # the caller orders them (longest first)
    if not queue:
        return
    if uses_static_cache(model, batching.static_cache):
        yield from _decode_static(session, queue, batch_size, prefill_size)
    else:
        yield from _decode_dynamic(session, queue, batch_size, prefill_size)


def _decode_dynamic(session: _Session, queue: list[int], batch_size: int,
                    prefill_size: int) -> Iterator[tuple[int, list[Generation]]]:
    """The batch as a DynamicCache: finished rows are removed, new rows appended."""
    model, device, temperature = session.model, session.device, session.temperature
    batch = _Batch(None, None, None, [])
    next_tokens = torch.empty(0, dtype=torch.long, device=device)
    while True:
        # Finished rows stay (decoded, their tokens ignored) until enough have piled up to be
        # worth the copy of the cache that removing them costs, or their places are refilled.
        running = [i for i, row in enumerate(batch.rows) if not row.done]
        free = batch_size - len({batch.rows[i].prompt_index for i in running})
        refill = bool(queue) and (free >= prefill_size or not running)
        finished_rows = len(batch) - len(running)
        if finished_rows and (refill or not running or finished_rows >= max(1, len(batch) // 4)):
            batch.keep(running)
            next_tokens = next_tokens[running] if running else next_tokens[:0]
        if refill:
            while queue and free > 0:
                new, first, took = session.prefill_next(queue, free)
                free -= took
                batch.add(new)
                next_tokens = torch.cat([next_tokens, first])
                yield from session.record(new.rows, first.tolist())
        if not any(not row.done for row in batch.rows):
            if queue:
                continue
            return
        # One decoding step for every row in the batch.
        mask = torch.cat([batch.mask, torch.ones((len(batch), 1), dtype=batch.mask.dtype, device=device)], dim=1)
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=batch.next_pos[:, None],
                    **{session.cache_kw: batch.cache}, use_cache=True)
        batch.mask = mask
        batch.next_pos = batch.next_pos + 1
        next_tokens = _pick(out.logits[:, -1, :].float(), temperature)
        yield from session.record(batch.rows, next_tokens.tolist())


def _decode_static(session: _Session, queue: list[int], batch_size: int,
                   prefill_size: int) -> Iterator[tuple[int, list[Generation]]]:
    """The batch as fixed slots (static_cache.Slots): a finished row's slot is refilled in place."""
    samples, temperature = session.samples, session.temperature
    n_slots = min(batch_size, len(queue)) * samples
    longest = max(len(session.ids[i]) for i in queue)
    slots = Slots(session.model, n_slots, static_capacity(longest, session.max_new_tokens),
                  greedy=temperature == 0, cache_keyword=session.cache_kw)
    rows: list[_Row | None] = [None] * n_slots
    while True:
        free_slots = [i for i, row in enumerate(rows) if row is None or row.done]
        live = len(rows) - len(free_slots)
        free = len(free_slots) // samples  # in prompts: a prompt's samples take a slot each
        if queue and (free >= prefill_size or not live):
            while queue and free > 0:
                new, first, took = session.prefill_next(queue, free)
                free -= took
                places, free_slots = free_slots[:len(new.rows)], free_slots[len(new.rows):]
                slots.place(places, [(layer.keys, layer.values) for layer in new.cache.layers], new.mask,
                            new.next_pos, first)
                for place, row in zip(places, new.rows):
                    rows[place] = row
                yield from session.record(new.rows, first.tolist())
        occupied = [(i, row) for i, row in enumerate(rows) if row is not None and not row.done]
        if not occupied:
            if queue:
                continue
            return
        if slots.t >= slots.capacity:
            slots.compact([i for i, _ in occupied])
        # One decoding step for every slot (free slots too: a graph's shapes never change).
        out = slots.step()
        if temperature > 0:
            out = _pick(out.float(), temperature)
            slots.tokens.copy_(out)
        tokens = out.tolist()
        yield from session.record([row for _, row in occupied], [tokens[i] for i, _ in occupied])
