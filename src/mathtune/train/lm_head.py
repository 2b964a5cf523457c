"""The LM head under training: only the positions that carry a label are scored.

    use_lm_head(trainer.model, "lean")   # build_trainer does this; "trl" undoes it; "liger" where installed

TRL 1.16's SFTTrainer replaces the model's forward with a fused head
(`trl.trainer.utils.add_fused_lm_head`): per-token log-probabilities in tiles of 4,096 tokens x
32,768 vocabulary entries, each tile a matmul in the model's dtype (bf16 on a GPU: the GEMM
accumulates in fp32 and rounds the tile to bf16) folded into an fp32 running log-sum-exp; the
backward recomputes each tile and accumulates its GEMMs in fp32. No [tokens, vocab] tensor is
kept, and no fp32 copy of one. But it scores only the labelled positions on devices with Triton
(a CUDA GPU); elsewhere (a CPU) it scores every position, prompts included, and zeroes the
unlabelled ones afterwards. A GSM8K chat example is about half prompt, so on a CPU about half of
the head's work, the largest single matmul of a small model, is thrown away.

"lean" calls TRL's same chunked function on the labelled positions alone, on every device: the
same loss and the same per-token metrics (log-probability, entropy, top-1) the trainer logs; on a
GPU it computes what TRL's head computes. "liger" scores them with Liger Kernel's fused linear
cross-entropy (Triton; a GPU) instead, which gives the log-probabilities and the top-1 but no
entropy: the logged entropy reads 0 with it.
"""

from __future__ import annotations

import importlib.util
import types

import torch

HEADS = ("lean", "trl", "liger")
OUTPUTS = ("log_probs", "entropy", "is_top1")  # what SFTTrainer's loss and metrics read
# Config fields that change the logits after the projection; TRL's head handles them, this one does not.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")
# Vocabulary entries per tile of the chunked log-probabilities. TRL's own head uses 32,768 (TRL
# 1.16 keeps it in a private name, no setting), and the tile width decides how the running
# log-sum-exp is summed: the same width keeps "lean" computing exactly what TRL's head computes.
VOCAB_CHUNK_SIZE = 32768


def use_lm_head(model, head: str = "lean") -> str:
    """Give `model` (after SFTTrainer patched it, PEFT-wrapped or not) the named LM head for
    `fused_lm_head=True` calls; returns the head in use ("trl" where the model needs what only
    TRL's handles: logit scaling or soft-capping, MoE router losses)."""
    if head not in HEADS:
        raise ValueError(f"unknown LM head {head!r} (expected one of {', '.join(HEADS)})")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "_trl_fused_forward" not in base.__dict__:
        if "forward" not in base.__dict__:
            raise ValueError("the model has no fused LM head to replace (SFTTrainer adds one)")
        base._trl_fused_forward = base.forward
    trl_forward = base._trl_fused_forward
    text_config = base.config.get_text_config()
    special = (any(getattr(text_config, name, None) is not None for name in _LOGIT_TRANSFORMS)
               or getattr(text_config, "output_router_logits", False))
    if head == "trl" or special:
        base.forward = trl_forward
        return "trl"
    if head == "liger" and importlib.util.find_spec("liger_kernel") is None:
        raise ValueError("the liger LM head needs Liger Kernel (pip install liger-kernel)")
    score = _liger_scores if head == "liger" else _chunked_scores

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                **kwargs):
        if not fused_lm_head or shift_labels is not None:  # generation, plain logits, sequence parallelism
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        from trl.trainer.utils import FusedCausalLMOutput

        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # [B, T-1, H]
        targets = labels[:, 1:].to(hidden.device)  # [B, T-1]
        mask = targets != -100
        log_probs, entropy, is_top1 = score(hidden[mask], self.get_output_embeddings(), targets[mask])  # [C] each

        def spread(x: torch.Tensor) -> torch.Tensor:  # [C] -> [B, T-1], zero where there is no label
            return x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(log_probs)
        loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=spread(entropy), is_top1=spread(is_top1),
                                   label_mask=mask)

    base.forward = types.MethodType(forward, base)
    return head


def _chunked_scores(hidden: torch.Tensor, lm_head, targets: torch.Tensor):
    """TRL's chunked log-probabilities. hidden: [C, H]; targets: [C] -> 3 x [C]"""
    from trl.kernels import ChunkedLogProbFunction

    log_probs, entropy, _, _, is_top1 = ChunkedLogProbFunction.apply(
        hidden, lm_head.weight, lm_head.bias, targets, 1.0, VOCAB_CHUNK_SIZE, None, 1.0, OUTPUTS)
    return log_probs, entropy, is_top1


def _liger_scores(hidden: torch.Tensor, lm_head, targets: torch.Tensor):
    """Liger's fused linear cross-entropy, per token, accumulating in fp32. hidden: [C, H] -> 3 x [C]"""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    out = liger_fused_linear_cross_entropy(hidden, lm_head.weight, targets, lm_head.bias, reduction="none",
                                           return_token_accuracy=True, accum_dtype=torch.float32)
    return -out.loss, torch.zeros_like(out.loss), out.token_accuracy.bool()
