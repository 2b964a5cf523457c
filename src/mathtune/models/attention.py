"""Attention for packed training batches that does not compute across example boundaries.

    attn_implementation = training_attention(requested)   # "mathtune_segments" under sdpa

A padding-free packed batch is one long row of several examples. transformers' sdpa path
gives that row a dense block-diagonal mask, so every layer computes all (sum of lengths)^2
query/key pairs and throws most of them away. The collator already passes each example's
boundaries (`cu_seq_lens_q`, as flash-attn varlen uses them); here each example gets its own
causal sdpa call, which costs the sum of the squared lengths instead. Written by hand because
PyTorch offers this only through flex_attention (compiled on first use, and a C++ or Triton
compiler at run time) and flash-attn (a CUDA-only extension package), and neither is always
there. Without boundaries (unpacked, padded batches; generation) it is plain sdpa with the
mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "mathtune_segments"
_registered = False


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


def register() -> str:
    """Make NAME a valid attn_implementation (with sdpa's mask for unpacked batches)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, segment_attention)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME


def training_attention(requested: str, packing: bool) -> str:
    """The attention a training run uses: 'auto' with packing is per-example sdpa
    (flash_attention_2 where flash-attn is installed on a GPU); anything named is kept."""
    if requested != "auto":
        return requested
    if not packing:
        return "sdpa"
    if torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return register()
