"""Attention for packed training batches that does not compute across example boundaries.

    attn_implementation = training_attention(requested, packing, dtype)
    # "mathtune_varlen" on a GPU with torch's varlen flash attention (bf16/fp16),
    # "mathtune_segments" elsewhere (a CPU, an older torch, float32)

A padding-free packed batch is one long row of several examples. transformers' sdpa path
gives that row a dense block-diagonal mask, so every layer computes all (sum of lengths)^2
query/key pairs and throws most of them away. TRL's collator already passes each example's
boundaries, built once per batch on the host: `cu_seq_lens_q` (int32 cumulative offsets, moved
to the device with the batch) and `max_length_q` (a Python int).

- mathtune_varlen: one call per layer to `torch.nn.attention.varlen.varlen_attn` (torch 2.10+,
  flash attention on packed `(tokens, heads, dim)` tensors) with those offsets: no host read,
  no loop over examples. Written against the kernel's signature as this torch has it: the
  causal switch is `window_size=(-1, 0)` on torch 2.12+ and `is_causal=True` before; grouped KV
  heads go in as they are where the kernel takes `enable_gqa`, and are repeated where it does not.
- mathtune_segments: one causal sdpa call per example, which costs the sum of the squared
  lengths. Written by hand because PyTorch offers this otherwise only through flex_attention
  (compiled on first use, and a C++ or Triton compiler at run time) and flash-attn (a CUDA-only
  extension package), and neither is always there.

Without boundaries (unpacked, padded batches; generation) both are plain sdpa with the mask.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

NAME = "mathtune_segments"
VARLEN = "mathtune_varlen"
_registered: set[str] = set()


def _boundaries(cu_seq_lens: torch.Tensor) -> list[int]:
    # Every layer of one forward gets the same tensor; read it to the host once.
    cached = getattr(_boundaries, "cache", None)
    if cached is not None and cached[0] is cu_seq_lens:
        return cached[1]
    bounds = cu_seq_lens.tolist()
    _boundaries.cache = (cu_seq_lens, bounds)
    return bounds


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      cu_seq_lens_q=None, **kwargs):
    """Same inputs and output layout ([batch, length, heads, head_dim]) as transformers' sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (cu_seq_lens_q is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
              and not kwargs.get("output_attentions", False))
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    gqa = query.shape[1] != key.shape[1]
    bounds = _boundaries(cu_seq_lens_q)
    pieces = [
        F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True,
                                       dropout_p=dropout, scale=scaling, enable_gqa=gqa)
        for s, e in zip(bounds[:-1], bounds[1:]) if e > s
    ]
    out = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    if out.shape[2] < query.shape[2]:  # padding after the last example (pad_to_multiple_of)
        out = torch.cat([out, out.new_zeros(*out.shape[:2], query.shape[2] - out.shape[2], out.shape[3])], dim=2)
    return out.transpose(1, 2).contiguous(), None


# ------------------------------------------------------------------------------ varlen


@dataclass(frozen=True)
class VarlenKernel:
    """A varlen attention function and how this torch's signature spells what we need."""

    fn: Callable
    causal: dict  # {"window_size": (-1, 0)} (torch 2.12+) or {"is_causal": True} (2.10, 2.11)
    native_gqa: bool  # takes enable_gqa: KV heads need not be repeated
    takes_scale: bool

    @classmethod
    def of(cls, fn: Callable) -> "VarlenKernel":
        params = inspect.signature(fn).parameters
        # varlen_attn compares window_size == (-1, 0) to decide causality: it must be a tuple.
        causal = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
        return cls(fn, causal, "enable_gqa" in params, "scale" in params)


def torch_varlen_kernel() -> VarlenKernel | None:
    """torch's varlen flash attention where this torch has it, else None."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return VarlenKernel.of(varlen_attn)


def reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q: int, max_k: int, *, scale=None,
                          window_size: tuple[int, int] = (-1, -1), enable_gqa: bool = False, **_):
    """varlen_attn's contract (torch 2.12+ signature) in plain torch, one sdpa call per sequence:
    the stand-in where the flash kernel cannot run (a CPU), so that the wiring around it is tested.
    query: [T, Hq, D]; key, value: [T, Hkv, D]; cu_seq_q, cu_seq_k: [N+1] int32 -> [T, Hq, D]"""
    if not enable_gqa and query.shape[1] != key.shape[1]:
        raise ValueError("query and key/value heads differ; pass enable_gqa=True")
    causal = window_size == (-1, 0)
    bounds_q, bounds_k = cu_seq_q.tolist(), cu_seq_k.tolist()
    out = query.new_zeros(query.shape)
    for (qs, qe), (ks, ke) in zip(zip(bounds_q[:-1], bounds_q[1:]), zip(bounds_k[:-1], bounds_k[1:])):
        if qe > qs:
            assert qe - qs <= max_q and ke - ks <= max_k
            piece = F.scaled_dot_product_attention(
                query[qs:qe].transpose(0, 1), key[ks:ke].transpose(0, 1), value[ks:ke].transpose(0, 1),
                is_causal=causal, scale=scale, enable_gqa=enable_gqa)  # [Hq, n, D]
            out[qs:qe] = piece.transpose(0, 1)
    return out


_TORCH_KERNEL = torch_varlen_kernel()  # read once: a lookup per call would cost host time and break torch.compile
_kernel: VarlenKernel | None = None


def use_varlen_kernel(kernel: VarlenKernel | None) -> VarlenKernel | None:
    """Set the kernel mathtune_varlen calls (None: torch's); returns the one it replaces."""
    global _kernel
    before, _kernel = _kernel, kernel
    return before


def _packed_bounds(position_ids: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """(cu_seq_lens, max length) from a packed row's position ids, or None for one sequence. Only
    for callers that pass packed position ids without the collator's offsets: this reads the
    device (a host sync per layer)."""
    starts = (position_ids[0] == 0).nonzero().flatten()
    if starts.numel() < 2:
        return None
    cu = torch.cat([starts, starts.new_tensor([position_ids.shape[1]])]).to(torch.int32)
    return cu, int(cu.diff().max())


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None, **kwargs):
    """Same inputs and output layout ([batch, length, heads, head_dim]) as transformers' sdpa;
    a packed row (batch 1 with the collator's offsets) is one varlen call.
    query: [1, Hq, T, D]; key, value: [1, Hkv, T, D]"""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kernel = _kernel or _TORCH_KERNEL
    single_row = (query.shape[0] == 1 and query.shape[2] == key.shape[2] and attention_mask is None
                  and not kwargs.get("output_attentions", False))
    if single_row and cu_seq_lens_q is None and kwargs.get("position_ids") is not None:
        found = _packed_bounds(kwargs["position_ids"])
        if found is not None:
            cu_seq_lens_q, max_length_q = found
    if not single_row or cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kernel is None or dropout > 0:  # a packed row has no mask here: keep the examples apart by hand
        return segment_attention(module, query, key, value, None, dropout=dropout, scaling=scaling,
                                 cu_seq_lens_q=cu_seq_lens_q, **kwargs)
    cu_q = cu_seq_lens_q.to(query.device, torch.int32)
    cu_k = cu_q if cu_seq_lens_k is None else cu_seq_lens_k.to(query.device, torch.int32)
    max_q = int(max_length_q)  # a Python int from the collator: no device read
    max_k = max_q if max_length_k is None else int(max_length_k)
    q, k, v = query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1)  # [T, H, D]
    extra = dict(kernel.causal)
    if q.shape[1] != k.shape[1]:  # Qwen2's grouped KV heads
        if kernel.native_gqa:
            extra["enable_gqa"] = True
        else:  # query head h reads KV head h // group, as transformers' repeat_kv arranges them
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    default_scale = q.shape[-1] ** -0.5
    if kernel.takes_scale:
        extra["scale"] = scaling
    elif scaling is not None and scaling != default_scale:
        q = q * (scaling / default_scale)
    out = kernel.fn(q, k, v, cu_q, cu_k, max_q, max_k, **extra)  # [T, Hq, D]
    return out.unsqueeze(0), None


def _varlen_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """No mask where the attention needs none (no padding, no cache: a training row, packed or
    not); sdpa's mask otherwise. A packed row then costs no dense [T, T] mask."""
    from transformers.masking_utils import sdpa_mask

    if (attention_mask is None and q_length == kv_length and isinstance(q_offset, int) and q_offset == 0
            and isinstance(kv_offset, int) and kv_offset == 0):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)


def register(name: str = NAME) -> str:
    """Make `name` (NAME or VARLEN) a valid attn_implementation; returns it."""
    if name not in _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        if name == VARLEN:
            AttentionInterface.register(VARLEN, varlen_attention)
            AttentionMaskInterface.register(VARLEN, _varlen_mask)
        else:
            AttentionInterface.register(NAME, segment_attention)
            AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered.add(name)
    return name


def varlen_usable(dtype: torch.dtype) -> bool:
    """Whether torch's varlen flash attention runs here: the kernel exists, a GPU of the Ampere
    generation or newer, and a half-precision model (flash attention has no float32)."""
    return (torch.cuda.is_available() and torch_varlen_kernel() is not None
            and torch.cuda.get_device_capability() >= (8, 0) and dtype in (torch.bfloat16, torch.float16))


def training_attention(requested: str, packing: bool, dtype: str = "auto") -> str:
    """The attention a training run uses. 'auto' with packing: one varlen call per layer where
    varlen_usable, else flash_attention_2 where flash-attn is installed on a GPU, else one sdpa
    call per example; 'auto' without packing is sdpa; anything named is kept."""
    if requested in (NAME, VARLEN):
        return register(requested)
    if requested != "auto":
        return requested
    if not packing:
        return "sdpa"
    from mathtune.models.load import resolve_dtype

    if varlen_usable(resolve_dtype(dtype)):
        return register(VARLEN)
    if torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return register(NAME)
