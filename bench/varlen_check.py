"""Packed rows through mathtune_varlen against an unpacked reference: the loss and the LoRA gradients.

    python bench/varlen_check.py --shape qwen2-1.5b --tokenizer .device/tokenizer --data .device/gsm8k [--problems 40]
    python bench/varlen_check.py --model PATH [--json OUT.json]      # on a CPU: the plain-torch stand-in

The first batch of the first --problems GSM8K training problems (rows packed to --max-length,
--batch-size rows end to end in one row, by TRL's packing and collator as training does it), and the reference LoRA with every matrix set to small random values (so
that both A and B receive gradients; dropout off). Three computations of the same examples:
  packed     one row under mathtune_varlen, in the model's dtype (bf16 on a GPU): torch's
             varlen flash kernel on a GPU, the plain-torch stand-in with its signature on a CPU
  padded     a padded batch under sdpa in the same dtype (TRL's default layout)
  reference  the padded batch under sdpa in float32: what both are measured against
For each: the loss over the labelled tokens, each example's own loss, and the LoRA gradients.
The check passes when packed is as close to the float32 reference as padded sdpa in the same
dtype is (at most twice its error, or under a floor: 1e-3 relative for losses, 1e-2 for the
gradients' relative norm), with gradient cosine similarity at least 0.999. Also reported: the
kernel's signature as this torch has it (causal switch, grouped KV heads) and, where it takes no
enable_gqa (torch 2.10, 2.11), whether it accepts grouped KV heads anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def split_packed(batch: dict) -> dict:
    """The packed row's examples as a right-padded batch with an attention mask."""
    import torch

    bounds = batch["cu_seq_lens_q"].tolist()
    ids = [batch["input_ids"][0, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    labels = [batch["labels"][0, a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    width = max(len(x) for x in ids)

    def pad(rows, value):
        return torch.stack([torch.cat([r, r.new_full((width - len(r),), value)]) for r in rows])

    mask = pad([torch.ones_like(x) for x in ids], 0)
    return {"input_ids": pad(ids, 0), "labels": pad(labels, -100), "attention_mask": mask}


def loss_and_grads(model, inputs: dict, lora: list) -> tuple[float, list[float], "torch.Tensor"]:
    """(loss over labelled tokens, per-example losses, flattened LoRA gradients)."""
    import torch

    device = lora[0].device
    inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
    model.zero_grad(set_to_none=True)
    out = model(**inputs, fused_lm_head=True, use_cache=False)
    out.loss.backward()
    log_probs, mask = out.log_probs.detach().float(), out.label_mask  # [B, T-1] each
    if "cu_seq_lens_q" in inputs:  # one packed row: per example by its offsets
        bounds = inputs["cu_seq_lens_q"].tolist()
        spans = [(log_probs[0, a:b - 1], mask[0, a:b - 1]) for a, b in zip(bounds[:-1], bounds[1:])]
    else:
        spans = list(zip(log_probs, mask))
    per_example = [float(-lp[m].sum() / m.sum()) for lp, m in spans]
    grads = torch.cat([p.grad.detach().float().flatten() for p in lora])
    return float(out.loss.detach()), per_example, grads


def gqa_probe(kernel) -> str:
    """Whether a kernel without enable_gqa accepts fewer KV heads than query heads as they are."""
    import torch

    if kernel.native_gqa:
        return "native (enable_gqa)"
    torch.manual_seed(0)
    q = torch.randn(64, 12, 128, device="cuda", dtype=torch.bfloat16)
    k, v = torch.randn(2, 64, 2, 128, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor([0, 30, 64], device="cuda", dtype=torch.int32)
    want = kernel.fn(q, k.repeat_interleave(6, 1), v.repeat_interleave(6, 1), cu, cu, 34, 34, **kernel.causal)
    try:
        got = kernel.fn(q, k, v, cu, cu, 34, 34, **kernel.causal)
    except Exception as err:  # noqa: BLE001 - the answer is the error
        return f"rejected ({type(err).__name__}): KV heads are repeated"
    same = torch.allclose(got.float(), want.float(), atol=1e-2)
    return f"accepted, {'same' if same else 'DIFFERENT'} output as repeated heads: KV heads are repeated anyway"


def main() -> None:
    import torch

    from shapes import add_model_arguments, machine, resolve_model

    from mathtune.config import load_config
    from mathtune.models import attention
    from mathtune.models.load import load_model, load_tokenizer, resolve_dtype
    from mathtune.task.data import training_splits
    from mathtune.train.trainer import build_datasets, build_trainer, make_lora_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("--problems", type=int, default=40, help="training problems; all fit one batch")
    p.add_argument("--batch-size", type=int, default=16, help="packed rows per batch")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    dtype = resolve_dtype(args.dtype)
    args.model = resolve_model(args, dtype)

    real_kernel = torch.cuda.is_available() and attention.varlen_usable(dtype)
    if not real_kernel:  # a CPU (or float32): the wiring on the stand-in
        attention.use_varlen_kernel(attention.VarlenKernel.of(attention.reference_varlen_attn))
    kernel = attention.torch_varlen_kernel() if real_kernel else attention.VarlenKernel.of(
        attention.reference_varlen_attn)
    config = load_config(None, [f"model.name_or_path={args.model}", f"data.source={args.data}",
                                f"data.train_limit={args.problems}", f"data.max_length={args.max_length}",
                                f"train.batch_size={args.batch_size}", f"model.dtype={args.dtype}",
                                "train.report_to=[]", "train.eval_every_steps=1000000", "name=check"])
    tokenizer = load_tokenizer(args.model)
    train, _ = training_splits(config.data.source, val_fraction=config.data.val_fraction, seed=config.seed,
                               train_limit=config.data.train_limit)
    train_set, val_set, _ = build_datasets(config, tokenizer, train, train)  # nothing is validated here
    model, _ = load_model(config.model, attn_implementation=attention.register(attention.VARLEN), device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train").mkdir()
        trainer = build_trainer(config, Path(tmp), model, tokenizer, train_set, val_set,
                                make_lora_config(config, model), eval_on_start=False)
    peft_model = trainer.model.to("cuda" if torch.cuda.is_available() else "cpu")
    peft_model.eval()  # no LoRA dropout: the three computations see one network
    lora = [p for _, p in peft_model.named_parameters() if p.requires_grad]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in lora:
            p.normal_(std=0.02)
    batch = next(iter(trainer.get_train_dataloader()))
    packed_inputs = {k: batch[k] for k in ("input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
                                           "max_length_q", "max_length_k")}
    padded_inputs = split_packed(batch)
    base = peft_model.get_base_model()

    results = {}
    results["packed"] = loss_and_grads(peft_model, packed_inputs, lora)
    base.set_attn_implementation("sdpa")
    results["padded"] = loss_and_grads(peft_model, padded_inputs, lora)
    peft_model.float()
    results["reference"] = loss_and_grads(peft_model, padded_inputs, lora)

    ref_loss, ref_each, ref_grad = results["reference"]
    report = {"machine": machine(), "model": f"shape {args.shape} (random weights)" if args.shape else args.model,
              "dtype": str(dtype).removeprefix("torch."), "examples": len(ref_each),
              "tokens": int(batch["input_ids"].shape[1]),
              "kernel": "torch.nn.attention.varlen.varlen_attn" if real_kernel else "plain-torch stand-in (no GPU)",
              "causal_switch": kernel.causal, "grouped_kv_heads": gqa_probe(kernel) if real_kernel else
              ("native (enable_gqa)" if kernel.native_gqa else "repeated"), "paths": {}}
    for name in ("packed", "padded"):
        loss, each, grad = results[name]
        report["paths"][name] = {
            "loss": loss, "loss_rel_err": abs(loss - ref_loss) / abs(ref_loss),
            "example_loss_max_rel_err": max(abs(a - b) / abs(b) for a, b in zip(each, ref_each)),
            "grad_rel_err": float((grad - ref_grad).norm() / ref_grad.norm()),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0))}
    pk, pd = report["paths"]["packed"], report["paths"]["padded"]
    report["reference_loss"] = ref_loss
    report["passed"] = bool(
        pk["loss_rel_err"] <= max(2 * pd["loss_rel_err"], 1e-3)
        and pk["example_loss_max_rel_err"] <= max(2 * pd["example_loss_max_rel_err"], 1e-3)
        and pk["grad_rel_err"] <= max(2 * pd["grad_rel_err"], 1e-2) and pk["grad_cosine"] >= 0.999)

    print(f"{report['machine']['device']}, {report['model']}, {report['dtype']}: {report['examples']} examples "
          f"packed into {report['tokens']} tokens; kernel: {report['kernel']}; causal switch {kernel.causal}; "
          f"grouped KV heads: {report['grouped_kv_heads']}")
    print(f"float32 padded sdpa reference loss {ref_loss:.6f}")
    print("path    | loss       | loss rel. err | worst example rel. err | LoRA grad rel. err | grad cosine")
    for name, r in report["paths"].items():
        print(f"{name:7s} | {r['loss']:.6f} | {r['loss_rel_err']:13.2e} | {r['example_loss_max_rel_err']:22.2e} | "
              f"{r['grad_rel_err']:18.2e} | {r['grad_cosine']:.6f}")
    print(f"packed = unpacked within {report['dtype']} tolerance: {'PASS' if report['passed'] else 'FAIL'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
