"""Each fast path checked against its reference on this machine, on a model of the real shapes.

    mathtune doctor [--model M] [--device cuda|cpu] [--json]

The fast paths (packed training attention, the lean LM head, the evaluation decoder) are
written against kernels and library internals that differ from machine to machine; a path
that is wrong there gives a wrong loss or other greedy answers, and nothing else says so.
Each check runs the path and its reference on the same random inputs and compares them
within a stated tolerance. The model is built from a config alone (default: the reference
model Qwen2-1.5B's, a few layers deep), with random weights and random token ids: no
download, no tokenizer files. On a CPU the vocabulary is cut to VOCAB_ON_CPU entries (a
152k-entry head costs seconds per CPU step and decides nothing about the paths checked).
"""

from __future__ import annotations

import importlib.util
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import library_version

# The reference model's shape (Qwen/Qwen2-1.5B config.json), so that no download is needed.
REFERENCE_SHAPE = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                       max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, vocab_size=151936)
LAYERS = {"cpu": 2, "cuda": 4}
VOCAB_ON_CPU = 4096
# Largest difference accepted, by compared quantity and dtype: float32 paths differ only in
# summation order; bf16 ones by bf16 rounding of activations (relative to the quantity's size).
TOLERANCE = {torch.float32: {"loss": 1e-4, "grad": 1e-3},
             torch.bfloat16: {"loss": 2e-2, "grad": 5e-2}}


@dataclass
class Check:
    name: str
    verdict: str  # "pass", "fail", or "n/a: why"
    reference: str
    max_diff: float | None
    tolerance: float | None
    seconds: float
    auto_picks: bool  # whether `auto` would take this path on this device


def environment(device: torch.device) -> dict:
    """The device and the versions and kernels that decide which paths run."""
    from mathtune.models.attention import torch_varlen_kernel

    if device.type == "cuda":
        name, capability = torch.cuda.get_device_name(device), ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        name, capability = platform.processor() or platform.machine() or "cpu", None
    versions = {lib: library_version(lib) for lib in ("mathtune", "torch", "transformers", "peft", "trl", "bitsandbytes")}
    versions["cuda"] = torch.version.cuda
    kernels = {"varlen": torch_varlen_kernel() is not None,
               "flash_attn": importlib.util.find_spec("flash_attn") is not None,
               "liger": importlib.util.find_spec("liger_kernel") is not None}
    return {"device": {"type": device.type, "name": name, "capability": capability}, "versions": versions,
            "kernels": kernels}


def build_model(model: str | None, device: torch.device, dtype: torch.dtype, attn: str = "sdpa"):
    """A random model of the given (or the reference) config, a few layers deep."""
    from transformers import AutoConfig, AutoModelForCausalLM, Qwen2Config

    if model is None:
        config = Qwen2Config(**REFERENCE_SHAPE)
    else:
        try:
            config = AutoConfig.from_pretrained(model)
        except Exception as err:
            raise MathtuneError(f"cannot read the model config of '{model}': {str(err).splitlines()[0]}") from None
    config.num_hidden_layers = LAYERS[device.type]
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:config.num_hidden_layers]
    if device.type == "cpu":
        config.vocab_size = min(config.vocab_size, VOCAB_ON_CPU)
    config.eos_token_id = config.pad_token_id = config.bos_token_id = None
    config._attn_implementation = attn
    torch.manual_seed(0)
    with torch.device(device):
        built = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    built.generation_config.eos_token_id = None
    built.generation_config.pad_token_id = 0
    return built.eval()


def random_examples(vocab: int, lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g) for n in lengths]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


# ---------------------------------------------------------------------------------- attention


def _with_lora(model):
    """LoRA on every linear layer, both matrices random (so both get gradients), dropout off."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    torch.manual_seed(2)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(p, std=0.02)
    return peft_model


def _losses_and_grads(model, examples: list[torch.Tensor], packed: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each example's next-token loss and the LoRA gradients of their sum; packed: one row with
    the collator's offsets, else a right-padded batch with an attention mask (the masked dense row)."""
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    lengths = [len(e) for e in examples]
    if packed:
        ids = torch.cat(examples)[None].to(device)
        pos = torch.cat([torch.arange(n) for n in lengths])[None].to(device)
        cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)
        logits = model(input_ids=ids, position_ids=pos, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(lengths),
                       max_length_k=max(lengths), use_cache=False).logits[0]
        rows = [logits[s:s + n] for s, n in zip([0] + list(torch.tensor(lengths).cumsum(0)[:-1].tolist()), lengths)]
    else:
        width = max(lengths)
        ids = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for r, e in enumerate(examples):
            ids[r, :len(e)], mask[r, :len(e)] = e, 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        rows = [logits[r, :n] for r, n in enumerate(lengths)]
    losses = [F.cross_entropy(row[:-1].float(), e[1:].to(device)) for row, e in zip(rows, examples)]
    torch.stack(losses).sum().backward()
    grads = torch.cat([p.grad.flatten().float() for n, p in model.named_parameters() if "lora_" in n])
    return [x.detach() for x in losses], grads


def check_attention(model_name, device, impl: str, reference_impl: str, dtype: torch.dtype, auto_picks: bool,
                    reason_not: str | None = None) -> Check:
    """Packed training attention against a reference attention: each example's loss and the
    LoRA gradients (relative to their size), on examples of different lengths."""
    ref_name = f"{reference_impl}, padded batch (masked dense), float32"
    name = f"attention {impl} ({str(dtype).removeprefix('torch.')})"
    if reason_not:
        return Check(name, f"n/a: {reason_not}", ref_name, None, None, 0.0, auto_picks)
    from mathtune.models.attention import register

    start = time.perf_counter()
    tol = TOLERANCE[dtype]["grad"]
    model = _with_lora(build_model(model_name, device, dtype, register(impl)))
    examples = random_examples(model.config.vocab_size, [37, 12, 64, 5, 23])
    losses, grads = _losses_and_grads(model, examples, packed=True)
    reference = _with_lora(build_model(model_name, device, torch.float32, reference_impl))
    ref_losses, ref_grads = _losses_and_grads(reference, examples, packed=False)
    diff = max(max(abs(float(a) - float(b)) / max(abs(float(b)), 1e-6) for a, b in zip(losses, ref_losses)),
               _relative(grads, ref_grads))
    return _verdict(name, ref_name, diff, tol, start, auto_picks)


def _verdict(name, reference, diff: float, tol: float, start: float, auto_picks: bool) -> Check:
    ok = diff <= tol and diff == diff  # NaN fails
    return Check(name, "pass" if ok else "fail", reference, diff, tol, round(time.perf_counter() - start, 2),
                 auto_picks)


# ---------------------------------------------------------------------------------- LM head


def check_lean_head(model_name, device, dtype: torch.dtype) -> Check:
    """The lean head (TRL's chunked log-probabilities on the labelled positions only) against
    the plain head (all logits, cross-entropy): the loss and the gradients of the head's input
    side (the final norm and the embedding/head weight)."""
    from trl.trainer.utils import add_fused_lm_head

    from mathtune.train.lm_head import OUTPUTS, use_lm_head

    start = time.perf_counter()
    model = build_model(model_name, device, dtype)
    model.train()
    add_fused_lm_head(model, outputs=OUTPUTS)
    head = use_lm_head(model, "lean")
    ids = torch.cat(random_examples(model.config.vocab_size, [48, 30], seed=3))[None].to(device)
    labels = ids.clone()
    labels[0, :20] = -100  # a prompt: no loss there, as in a prompt/completion example

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
    diff = max(abs(float(lean_loss - plain_loss)) / abs(float(plain_loss)), _relative(lean_grads, plain_grads))
    return _verdict(f"lm head {head} ({str(dtype).removeprefix('torch.')})", "plain head: all logits, cross-entropy",
                    diff, TOLERANCE[dtype]["grad"], start, True)


# ---------------------------------------------------------------------------------- decoder


def word_tokenizer(vocab: int):
    """A tokenizer whose token i is the word 't{i}': the decoder needs one to decode and stop,
    and this one needs no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", unk_token="t0")


@torch.inference_mode()
def check_decoder(model_name, device, dtype: torch.dtype, static: bool, auto_picks: bool) -> Check:
    """The evaluation decoder (shared prefix, refilled batch) against batch-1 `generate`:
    greedy tokens over prompts of different lengths, two at a time so that rows are refilled."""
    from mathtune.models.engine import generate_stream

    kind = "fixed slots" + (", CUDA graph" if device.type == "cuda" else ", uncaptured") if static else "dynamic cache"
    start = time.perf_counter()
    model = build_model(model_name, device, dtype)
    tokenizer = word_tokenizer(model.config.vocab_size)
    shared = random_examples(model.config.vocab_size, [9], seed=5)[0].tolist()  # a common prefix, as a template gives
    prompts = [shared + e.tolist() for e in random_examples(model.config.vocab_size, [3, 17, 8, 30, 1], seed=6)]
    new_tokens = 12
    engine = {i: g[0].completion for i, g in generate_stream(model, tokenizer, [""] * len(prompts), prompt_ids=prompts,
                                                       max_new_tokens=new_tokens, stop_strings=(), batch_size=2,
                                                       prefill_size=1, static_cache=static)}
    differ = 0
    for i, p in enumerate(prompts):
        out = model.generate(torch.tensor([p], device=device), max_new_tokens=new_tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=0)
        differ += tokenizer.decode(out[0, len(p):].tolist()) != engine[i]
    return _verdict(f"decoder {kind} ({str(dtype).removeprefix('torch.')})",
                    f"transformers generate, batch 1, greedy ({len(prompts)} prompts, {new_tokens} tokens, refilled)",
                    float(differ), 0.0, start, auto_picks)


# ---------------------------------------------------------------------------------- entry


def run_doctor(model: str | None = None, device: str | None = None) -> dict:
    """The environment and every check for this device: {device, versions, kernels, checks}."""
    from mathtune.models.attention import NAME as SEGMENTS, VARLEN, varlen_usable
    if device == "cuda" and not torch.cuda.is_available():
        raise MathtuneError("--device cuda: no CUDA GPU is visible to torch here")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # what dtype auto gives there
    env = environment(dev)
    on_gpu = dev.type == "cuda"
    varlen_ok = on_gpu and varlen_usable(torch.bfloat16)
    checks = [
        check_attention(model, dev, SEGMENTS, "sdpa", torch.float32, auto_picks=not varlen_ok),
        check_attention(model, dev, VARLEN, "sdpa", torch.bfloat16, auto_picks=varlen_ok,
                        reason_not=None if varlen_ok else
                        "needs torch's varlen kernel on an Ampere-or-newer CUDA GPU in bf16"),
        check_lean_head(model, dev, dtype),
        check_decoder(model, dev, dtype, static=False, auto_picks=not on_gpu),
        check_decoder(model, dev, dtype, static=True, auto_picks=on_gpu),
    ]
    return {"device": env["device"], "versions": env["versions"], "kernels": env["kernels"],
            "checks": [asdict(c) for c in checks]}


def failed_auto_paths(report: dict) -> list[dict]:
    """The checks of paths `auto` would pick here that did not pass."""
    return [c for c in report["checks"] if c["auto_picks"] and c["verdict"] == "fail"]


def format_report(report: dict) -> str:
    d, v, k = report["device"], report["versions"], report["kernels"]
    lines = [f"device: {d['name']} ({d['type']}{', capability ' + d['capability'] if d['capability'] else ''})",
             "versions: " + ", ".join(f"{name} {ver or 'not installed'}" for name, ver in v.items()),
             "kernels: " + ", ".join(f"{name} {'importable' if ok else 'missing'}" for name, ok in k.items())]
    for c in report["checks"]:
        diff = "" if c["max_diff"] is None else f"  max diff {c['max_diff']:.3g} (tolerance {c['tolerance']:.3g})"
        lines.append(f"{c['name']}: {c['verdict']}{diff}  {c['seconds']:.1f} s  vs {c['reference']}"
                     + ("  [auto picks it here]" if c["auto_picks"] else ""))
    return "\n".join(lines)
