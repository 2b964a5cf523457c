"""`mathtune doctor`, and the training paths checked before their first use.

    mathtune doctor [--model M] [--device cuda|cpu] [--json]
    attention, head, records = checked_training_paths(config, packing, fused_head)   # train.run, before the model loads

The checks themselves are models.selfcheck's, but for the lean LM head's, which is the
training stage's (train.lm_head) and so lives here. Doctor runs every check for the device
and keeps each verdict of a path `auto` picks as the first-use check would (models.first_use),
so that a run after it checks nothing again.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Callable

import torch
import torch.nn.functional as F

from mathtune.core.errors import MathtuneError
from mathtune.models.selfcheck import (DECODER_CHECK_DTYPE, TOLERANCE, Check, DecoderBench, build_model,
                                       check_attention, check_decoder, check_merged_lora, environment,
                                       random_examples, relative_diff, verdict)


# ---------------------------------------------------------------------------------- LM head


def check_lean_head(model_name, device, dtype: torch.dtype) -> Check:
    """The lean head (TRL's chunked log-probabilities on the labelled positions only) against
    the plain head (all logits, cross-entropy): the loss and the gradients of the final norm
    (which the head's gradient to its input decides) and of the head's weight."""
    from trl.trainer.utils import add_fused_lm_head

    from mathtune.train.lm_head import OUTPUTS, use_lm_head

    start = time.perf_counter()
    # The head a weight of its own (the same shape): only the head and the final norm take
    # gradients, so the backward ends at the norm instead of running through every layer.
    model = build_model(model_name, device, dtype, untie=True)
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in (model.model.norm.weight, model.get_output_embeddings().weight):
        p.requires_grad_(True)
    add_fused_lm_head(model, outputs=OUTPUTS)
    head = use_lm_head(model, "lean")
    ids = torch.cat(random_examples(model.config.vocab_size, [30, 18], seed=3))[None].to(device)
    labels = ids.clone()
    labels[0, :14] = -100  # a prompt: no loss there, as in a prompt/completion example

    def loss_and_grads(fused: bool):
        model.zero_grad(set_to_none=True)
        if fused:
            loss = model(input_ids=ids, labels=labels, fused_lm_head=True, use_cache=False).loss
        else:
            logits = model(input_ids=ids, fused_lm_head=False, use_cache=False).logits[0, :-1].float()
            loss = F.cross_entropy(logits, labels[0, 1:], ignore_index=-100)
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for p in (model.model.norm.weight, model.get_output_embeddings().weight)])
        return loss.detach().float(), grads

    lean_loss, lean_grads = loss_and_grads(True)
    plain_loss, plain_grads = loss_and_grads(False)
    diff = max(abs(float(lean_loss - plain_loss)) / abs(float(plain_loss)), relative_diff(lean_grads, plain_grads))
    return verdict(f"lm_head {head}", f"plain head: all logits, cross-entropy ({str(dtype).removeprefix('torch.')})",
                    diff, TOLERANCE[dtype]["grad"], start, True)


# ---------------------------------------------------------------------------------- entry


def run_doctor(model: str | None = None, device: str | None = None,
               show: Callable[[str], None] | None = None) -> dict:
    """The environment and every check for this device: {device, versions, kernels, checks}.
    show: called with the environment's lines, then each check's line as it finishes."""
    from mathtune.models.attention import NAME as SEGMENTS, VARLEN, varlen_usable
    from mathtune.models.first_use import remember, verdict_key, verdict_name

    if device == "cuda" and not torch.cuda.is_available():
        raise MathtuneError("--device cuda: no CUDA GPU is visible to torch here")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # what dtype auto gives there
    env = environment(dev)
    if show:
        show(format_environment(env))
    on_gpu = dev.type == "cuda"
    varlen_ok = on_gpu and varlen_usable(torch.bfloat16)
    # One model for the decoders and the merge, which comes last: the merge in float32, as auto
    # merges, even on a GPU (where a bf16 merge's agreement is bench/gpu.sh's merge stage).
    bench = DecoderBench(model, dev, DECODER_CHECK_DTYPE)
    planned = [
        lambda: check_attention(model, dev, SEGMENTS, "sdpa", dtype, auto_picks=not varlen_ok),
        lambda: check_attention(model, dev, VARLEN, "sdpa", torch.bfloat16, auto_picks=varlen_ok,
                                reason_not=None if varlen_ok else
                                "needs torch's varlen kernel on an Ampere-or-newer CUDA GPU in bf16"),
        lambda: check_lean_head(model, dev, dtype),
        lambda: check_decoder(model, dev, DECODER_CHECK_DTYPE, "dynamic_cache", auto_picks=not on_gpu, bench=bench),
        lambda: check_decoder(model, dev, DECODER_CHECK_DTYPE, "fixed_slots_cuda_graph" if on_gpu else "fixed_slots",
                              auto_picks=on_gpu, bench=bench),
        # auto merges only into float32 weights (models.load.attach_adapter): a CPU's, not a GPU's bf16
        lambda: check_merged_lora(model, dev, DECODER_CHECK_DTYPE, auto_picks=dtype == torch.float32, bench=bench),
    ]
    checks = []
    for run in planned:
        checks.append(run())
        if show:
            show(format_check(asdict(checks[-1])))
    if model is None:  # the first-use checks' own model: their verdicts hold for runs here
        from mathtune.models.selfcheck import check_model

        if check_model() is None:
            key = verdict_key(dev)
            # every path that ran (auto's or not: MATHTUNE_STATIC_CACHE may ask for the other
            # decoder); the merge is no first-use path
            for c, checked_in in zip(checks, [dtype, torch.bfloat16, dtype, DECODER_CHECK_DTYPE, DECODER_CHECK_DTYPE]):
                if not c.verdict.startswith("n/a"):
                    remember(key, verdict_name(c.name, checked_in),
                             {"verdict": c.verdict, "max_diff": c.max_diff, "tolerance": c.tolerance,
                              "reference": c.reference, "seconds": c.seconds})
    return {"device": env["device"], "versions": env["versions"], "kernels": env["kernels"],
            "checks": [asdict(c) for c in checks]}


def failed_auto_paths(report: dict) -> list[dict]:
    """The checks of paths `auto` would pick here that did not pass."""
    return [c for c in report["checks"] if c["auto_picks"] and c["verdict"] == "fail"]


def format_environment(env: dict) -> str:
    d, v, k = env["device"], env["versions"], env["kernels"]
    return "\n".join([
        f"device: {d['name']} ({d['type']}{', capability ' + d['capability'] if d['capability'] else ''})",
        "versions: " + ", ".join(f"{name} {ver or 'not installed'}" for name, ver in v.items()),
        "kernels: " + ", ".join(f"{name} {'importable' if ok else 'missing'}" for name, ok in k.items())])


def format_check(c: dict) -> str:
    """'lm_head lean: pass  max diff 5.8e-07 (tolerance 0.001)  9.8 s  vs plain head: ...'"""
    diff = "" if c["max_diff"] is None else f"  max diff {c['max_diff']:.3g} (tolerance {c['tolerance']:.3g})"
    return (f"{c['name']}: {c['verdict']}{diff}  {c['seconds']:.1f} s  vs {c['reference']}"
            + ("  [auto picks it here]" if c["auto_picks"] else ""))


def format_report(report: dict) -> str:
    return "\n".join([format_environment(report)] + [format_check(c) for c in report["checks"]])


# ---------------------------------------------------------------------------------- first use


def checked_training_paths(config, packing: bool, fused_head: bool = True) -> tuple[str, str | None, dict]:
    """(attention, LM head, records) a training run uses: auto's picks (or the paths named in
    the config), each fast one checked on this device before its first use; no LM head where
    the method scores with its trainer's own loss (`fused_head` false)."""
    from mathtune.models.attention import training_attention
    from mathtune.models.first_use import checked_path
    from mathtune.models.load import resolve_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(config.model.dtype)
    asked = config.model.attn_implementation
    attention = training_attention(asked, packing, config.model.dtype)
    records = {"attention": checked_path("attention", attention, device, dtype, explicit=asked != "auto",
                                         setting=f"model.attn_implementation: {asked}")}
    head = None
    if fused_head:  # GRPO scores with TRL's own loss, not a fused head
        records["lm_head"] = checked_path("lm_head", "lean", device, dtype, explicit=False,
                                          lean_head_check=check_lean_head)
        head = records["lm_head"]["path"]
    return records["attention"]["path"], head, records
