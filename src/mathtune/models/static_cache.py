"""A KV cache of fixed batch slots, refilled in place, whose decoding step is one CUDA graph.

    slots = Slots(model, n_slots, capacity, greedy=True)
    slots.place(free_slot_indices, prefilled_kv, prefilled_mask, next_pos, first_tokens)
    tokens = slots.step()          # every slot one token further; greedy: the chosen tokens [slots]

Why: on a GPU a decoding step of a 1.5B model at batch 1,319 is ~6-10 ms of arithmetic, and a
plain transformers forward launches hundreds of kernels from Python, each after shape checks
and a growing cache's reallocation. With every tensor the step touches allocated once (the
cache, the mask, the tokens, the positions and the column index), the step can be recorded
once as a CUDA graph and replayed: one launch per step, no Python in between.

The layout (gpt-fast's, with a shared column index instead of one per row):
- per layer, keys and values of shape [slots, kv_heads, capacity, head_dim];
- every step, all slots write their new token's keys and values at one shared column `t`;
- each slot's row of the boolean mask [slots, capacity] says which columns are its own, and its
  rotary position comes from its own entry of `pos`, so where a column sits does not matter
  (keys carry their positions already), only whether the row's mask shows it;
- a refilled slot gets its new prompt's keys and values in the columns just left of `t`;
- when `t` reaches the capacity, every slot's own columns are moved to the left (compact).

On a CPU the same step function runs uncaptured (tests/test_engine.py compares its tokens with
the dynamic engine's and with batch-1 `generate`); the capture runs only where CUDA is there.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from mathtune.models.attention import NAME as SEGMENT_ATTENTION
from mathtune.models.attention import VARLEN as VARLEN_ATTENTION

# Attention implementations whose masks this module writes: sdpa (and training's two packed
# attentions, per-example and varlen, which are sdpa outside packed rows) takes a boolean mask,
# eager an additive one.
ATTENTION = ("sdpa", "eager", SEGMENT_ATTENTION, VARLEN_ATTENTION)
# The user's switch between the two evaluation decoders (README): 1 the fixed slots, 0 the
# dynamic cache; unset, each device its default.
SETTING = "MATHTUNE_STATIC_CACHE"
# Steps run eagerly before the graph is captured: cuBLAS and the kernels load on first use, and
# a capture must not be the first run of any of them.
WARMUP_STEPS = 2


def asked_static_cache() -> bool | None:
    """What MATHTUNE_STATIC_CACHE asks for: True (1, the fixed slots), False (0, the dynamic
    cache), None (unset or another value: the device decides). The one place it is read: the
    engine's default, the decoder's first-use check and the plan all come here."""
    value = os.environ.get(SETTING)
    return value == "1" if value in ("0", "1") else None


def static_cache_by_default(on_gpu: bool) -> bool:
    """Whether the evaluation decodes with the fixed slots when its caller does not say: as
    MATHTUNE_STATIC_CACHE asks, else on a GPU. On a CPU the dynamic cache stays the default:
    with no kernel launches to save, attending over every column of the fixed capacity costs
    more than it saves (BENCHMARKS.md)."""
    asked = asked_static_cache()
    return on_gpu if asked is None else asked


class SlotLayer(CacheLayerMixin):
    """One layer's keys and values, [slots, kv_heads, capacity, head_dim]; a decoding step's
    keys go to the column the slots share (transformers calls update from inside attention)."""

    is_compileable = True

    def __init__(self, slots: "Slots", shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.owner = slots
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.device = device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # allocated in __init__: a captured graph needs the addresses before the first step

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        # key_states: [slots, kv_heads, 1, head_dim], written at column t of every slot
        self.keys.index_copy_(2, self.owner.column, key_states)
        self.values.index_copy_(2, self.owner.column, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[2], 0  # the mask covers every column; the step passes its own

    def get_seq_length(self) -> int:
        return self.owner.t

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class Slots:
    """The decoding batch: fixed slots, each holding one row (or nothing), and their cache."""

    def __init__(self, model, slots: int, capacity: int, *, greedy: bool, cache_keyword: str = "cache"):
        cfg = model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        weights = next(model.parameters())
        device, dtype = weights.device, weights.dtype
        self.model, self.greedy, self.cache_keyword = model, greedy, cache_keyword
        self.capacity = capacity
        self.layers = [SlotLayer(self, (slots, kv_heads, capacity, head_dim), dtype, device)
                       for _ in range(cfg.num_hidden_layers)]
        self.cache = Cache(layers=self.layers)
        self.mask = torch.zeros((slots, capacity), dtype=torch.bool, device=device)  # which columns are a slot's own
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)  # each slot's next input token
        self.pos = torch.zeros(slots, dtype=torch.long, device=device)  # and its position
        self.column = torch.zeros(1, dtype=torch.long, device=device)  # t: where this step's keys go
        self.t = 0  # the host's copy of t
        self.mask_types = sorted(set(getattr(cfg, "layer_types", None) or ["full_attention"]))
        self.additive = getattr(model.config, "_attn_implementation", "sdpa") == "eager"
        self.min_value = torch.finfo(dtype).min
        self.run: Callable[[], torch.Tensor] | None = None
        self.captured = False  # whether the step runs as a CUDA graph
        self.steps = 0

    def __len__(self) -> int:
        return self.mask.shape[0]

    # ----------------------------------------------------------------------------- refill

    def place(self, slots: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor,
              next_pos: torch.Tensor, first: torch.Tensor) -> None:
        """Put prefilled rows into these slots: kv per layer [k, kv_heads, L, head_dim], their
        mask [k, L] (0 where a row is padded), next position [k] and first token [k]. Their
        columns are the L just left of t (t moves right first if fewer than L are there)."""
        width = mask.shape[1]
        if width > self.capacity:
            raise ValueError(f"a prompt of {width} tokens does not fit a cache of {self.capacity} columns")
        if self.t < width:
            self.set_column(width)  # the columns it skips are no slot's own
        index = torch.tensor(slots, device=self.mask.device)
        start = self.t - width
        for layer, (keys, values) in zip(self.layers, kv):
            layer.keys[index, :, start:self.t] = keys
            layer.values[index, :, start:self.t] = values
        own = torch.zeros((len(slots), self.capacity), dtype=torch.bool, device=self.mask.device)
        own[:, start:self.t] = mask.bool()
        self.mask[index] = own
        self.pos[index] = next_pos
        self.tokens[index] = first

    def set_column(self, t: int) -> None:
        self.t = t
        self.column.fill_(t)

    def compact(self, live: list[int]) -> None:
        """Move each live slot's own columns to the left, in order, so that they end just left of
        the new t (the largest count of any slot); the other slots keep no columns."""
        mask = torch.zeros_like(self.mask)
        if live:
            index = torch.tensor(live, device=self.mask.device)
            mask[index] = self.mask[index]
        width = int(mask.sum(dim=1).max())
        if width >= self.capacity:
            raise RuntimeError("cache full: a row holds every column (capacity below prompt + max_new_tokens)")
        # Hidden columns first, then the row's own in their order: its last `width` columns hold them all.
        order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, self.capacity - width:]  # [slots, width]
        for layer in self.layers:
            _, heads, _, dim = layer.keys.shape
            gather = order[:, None, :, None].expand(-1, heads, -1, dim)
            layer.keys[:, :, :width] = layer.keys.gather(2, gather)
            layer.values[:, :, :width] = layer.values.gather(2, gather)
        self.mask[:, :width] = mask.gather(1, order)
        self.mask[:, width:] = False
        self.set_column(width)

    # ----------------------------------------------------------------------------- the step

    def forward_step(self) -> torch.Tensor:
        """One decoding step for every slot, only on tensors allocated once (capturable):
        returns the chosen tokens [slots] when greedy, else the last position's logits
        [slots, vocab] in the model's dtype."""
        self.mask.index_fill_(1, self.column, True)  # each slot sees its own new token
        visible = self.mask[:, None, None, :]  # [slots, 1, 1, capacity], the same for every head
        if self.additive:
            visible = torch.zeros(visible.shape, dtype=self.layers[0].keys.dtype,
                                  device=visible.device).masked_fill_(~visible, self.min_value)
        out = self.model(input_ids=self.tokens[:, None], position_ids=self.pos[:, None],
                         attention_mask={kind: visible for kind in self.mask_types},
                         **{self.cache_keyword: self.cache}, use_cache=True)
        logits = out.logits[:, -1, :]  # [slots, vocab]: q_len is 1, the logits are the last position's
        self.pos.add_(1)
        self.column.add_(1)
        if self.greedy:
            self.tokens.copy_(logits.argmax(dim=-1))
            return self.tokens
        return logits

    def step(self) -> torch.Tensor:
        """The step, as a CUDA graph on a GPU after WARMUP_STEPS eager ones, eager on a CPU.
        Sampling callers write their chosen tokens into self.tokens before the next step."""
        if self.t >= self.capacity:
            raise RuntimeError("no free column: compact first")
        if self.run is None:
            if self.mask.device.type != "cuda":
                self.run = self.forward_step
            elif torch.cuda.is_available() and self.steps >= WARMUP_STEPS:
                try:
                    self.run = capture_step(self.forward_step)
                    self.captured = True
                except Exception as err:  # the same step, uncaptured: slower, never wrong
                    warnings.warn(f"decoding without a CUDA graph: capturing the step failed ({err!r})")
                    self.run = self.forward_step
        result = (self.run or self.forward_step)()
        self.t += 1
        self.steps += 1
        return result


def capture_step(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """Record step() as a CUDA graph and return a function that replays it (one launch).

    The recording runs no kernel, so the returned function is called for the step itself.
    step's inputs and outputs must live in tensors that never move (Slots allocates them
    once); the graph's own temporaries live in its private memory pool."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # waits for the work before it, records on a side stream of its own
        out = step()

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay
