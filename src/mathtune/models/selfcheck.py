"""Each fast path checked against its reference on this machine, on a model of the real shapes.

    check = run_check("attention", "mathtune_segments", device, dtype)   # a Check: verdict, max diff, tolerance, time

The fast paths (packed training attention, the lean LM head, the evaluation decoder) are
written against kernels and library internals that differ from machine to machine; a path
that is wrong there gives a wrong loss or other greedy answers, and nothing else says so.
Each check runs the path and its reference on the same random inputs and compares them
within a stated tolerance. The model is built from a config alone (default: the reference
model Qwen2-1.5B's, a few layers deep; MATHTUNE_CHECK_MODEL names another model's config),
with random weights and random token ids: no download, no tokenizer files. On a CPU the
vocabulary is cut to VOCAB_ON_CPU entries (a 152k-entry head costs seconds per CPU step and
decides nothing about the paths checked).

Paths are named the same everywhere (plan, summaries, report, `mathtune doctor`): attention
by its attn_implementation (mathtune_varlen, mathtune_segments, sdpa, ...), the LM head by
train.lm_head's names (lean, trl, liger), the decoder by models.decoders' names.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import platform
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import library_version
from mathtune.models.decoders import DECODER_TABLE
from mathtune.models.attention import register, torch_varlen_kernel
from mathtune.models.engine import Batching, generate_stream
from mathtune.models.generate import Decoding
from mathtune.models.static_cache import static_cache_by_default

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


# What runs instead of a fast path whose check fails: the library's own path (the decoders'
# own, fastest first, are in their table: models.decoders).
FALLBACK = {"mathtune_varlen": "sdpa", "mathtune_segments": "sdpa", "lean": "trl",
            **{name: d.fallback for name, d in DECODER_TABLE.items() if d.fallback}}
CHECK_MODEL_ENV = "MATHTUNE_CHECK_MODEL"


def check_model() -> str | None:
    """The model config the first-use checks build (None: the reference shape)."""
    return os.environ.get(CHECK_MODEL_ENV) or None


@dataclass
class Check:
    name: str  # "<kind> <path>": "attention mathtune_segments", "lm_head lean", "decoder dynamic_cache"
    verdict: str  # "pass", "fail", or "n/a: why"
    reference: str
    max_diff: float | None
    tolerance: float | None
    seconds: float
    auto_picks: bool  # whether `auto` would take this path on this device


def environment(device: torch.device) -> dict:
    """The device and the versions and kernels that decide which paths run."""
    if device.type == "cuda":
        name, capability = torch.cuda.get_device_name(device), ".".join(map(str, torch.cuda.get_device_capability(device)))
    else:
        name, capability = _cpu_name(), None
    versions = {lib: library_version(lib) for lib in ("mathtune", "torch", "transformers", "peft", "trl", "bitsandbytes")}
    versions["cuda"] = torch.version.cuda
    kernels = {"varlen": torch_varlen_kernel() is not None,
               "flash_attn": importlib.util.find_spec("flash_attn") is not None,
               "liger": importlib.util.find_spec("liger_kernel") is not None}
    return {"device": {"type": device.type, "name": name, "capability": capability}, "versions": versions,
            "kernels": kernels}


def _cpu_name() -> str:
    """The CPU's model name (its vector units decide the kernels a CPU runs), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def build_model(model: str | None, device: torch.device, dtype: torch.dtype, attn: str = "sdpa", untie: bool = False):
    """A random model of the given (or the reference) config, a few layers deep; untie: the LM
    head a weight of its own, not the input embedding's."""
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
    if untie:
        config.tie_word_embeddings = False
        if hasattr(config, "get_text_config"):
            config.get_text_config().tie_word_embeddings = False
    torch.manual_seed(0)
    with torch.device(device):
        built = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    built.generation_config.eos_token_id = None
    built.generation_config.pad_token_id = 0
    return built.eval()


def random_examples(vocab: int, lengths: list[int], seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g) for n in lengths]


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12))


# ---------------------------------------------------------------------------------- attention


def with_lora(model):
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
    ref_name = (f"{reference_impl}, padded batch (masked dense), float32; "
                f"path in {str(dtype).removeprefix('torch.')}, packed row")
    name = f"attention {impl}"
    if reason_not:
        return Check(name, f"n/a: {reason_not}", ref_name, None, None, 0.0, auto_picks)
    start = time.perf_counter()
    tol = TOLERANCE[dtype]["grad"]
    model = with_lora(build_model(model_name, device, torch.float32, register(impl)))
    examples = random_examples(model.config.vocab_size, [21, 5, 30, 9])
    # The path in its dtype on the same weights (rounded), then the reference on the float32 ones:
    # one model built, and no difference that random initialisation in two dtypes would make.
    path_model = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    losses, grads = _losses_and_grads(path_model, examples, packed=True)
    del path_model
    model.get_base_model().set_attn_implementation(reference_impl)
    ref_losses, ref_grads = _losses_and_grads(model, examples, packed=False)
    diff = max(max(abs(float(a) - float(b)) / max(abs(float(b)), 1e-6) for a, b in zip(losses, ref_losses)),
               relative_diff(grads, ref_grads))
    return verdict(name, ref_name, diff, tol, start, auto_picks)


def verdict(name, reference, diff: float, tol: float, start: float, auto_picks: bool) -> Check:
    ok = diff <= tol and diff == diff  # NaN fails
    return Check(name, "pass" if ok else "fail", reference, diff, tol, round(time.perf_counter() - start, 2),
                 auto_picks)


# ---------------------------------------------------------------------------------- decoder


def word_tokenizer(vocab: int):
    """A tokenizer whose token i is the word 't{i}': the decoder needs one to decode and stop,
    and this one needs no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", unk_token="t0")


def check_prompts(vocab: int) -> list[list[int]]:
    """Prompts of different lengths behind a common prefix, as a template gives them."""
    shared = random_examples(vocab, [9], seed=5)[0].tolist()
    return [shared + e.tolist() for e in random_examples(vocab, [3, 17, 30, 1], seed=6)]


NEW_TOKENS = 6
# The decoders are checked in float32 on every device: what they could get wrong is the cache's
# bookkeeping (slots, refills, the shared prefix, a graph's replay), which any dtype shows,
# while in bf16 two correct decoders may part at a near tie because their batches differ in
# shape and so round differently.
DECODER_CHECK_DTYPE = torch.float32


def _greedy_one_by_one(model, prompts: list[list[int]], device) -> list[list[int]]:
    return [model.generate(torch.tensor([p], device=device), max_new_tokens=NEW_TOKENS, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, len(p):].tolist() for p in prompts]


def greedy_disagreement(model, make_other: Callable, prompts: list[list[int]], device) -> float:
    """The share of prompts on which the model make_other() returns (after `model` has decoded)
    would not decode `model`'s greedy tokens: `model` decodes (one left-padded `generate`
    call), then in one forward of the other model over each prompt and those tokens each token
    must be the argmax before it, which is exactly the other's own greedy decoding agreeing."""
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                         eos_token_id=None, pad_token_id=0)  # [B, width + NEW_TOKENS]
    full_mask = torch.cat([mask, torch.ones_like(out[:, width:])], dim=1)
    position_ids = (full_mask.cumsum(1) - 1).clamp(min=0)
    logits = make_other()(input_ids=out, attention_mask=full_mask, position_ids=position_ids).logits
    picked = logits[:, width - 1:-1].argmax(-1)  # the argmax before each generated token
    return float((picked != out[:, width:]).any(dim=1).float().mean())


@dataclass
class DecoderBench:
    """A random model for the decoder checks and the results they share, built on first use: the
    fixed slots are compared with the same `generate` tokens and dynamic cache as the dynamic
    cache's own check. Mutated by nothing but check_merged_lora, which comes last."""

    model_name: str | None
    device: torch.device
    dtype: torch.dtype
    found: dict = field(default_factory=dict)

    @cached_property
    def model(self):
        return build_model(self.model_name, self.device, self.dtype)

    @cached_property
    def tokenizer(self):
        return word_tokenizer(self.model.config.vocab_size)

    @cached_property
    def prompts(self) -> list[list[int]]:
        return check_prompts(self.model.config.vocab_size)

    def tokens(self, decoder: str) -> dict[int, str]:
        """Each prompt's greedy completion by one decoder: "generate" (batch 1) or an engine path."""
        if decoder not in self.found:
            if not DECODER_TABLE.get(decoder).engine:
                device = next(self.model.parameters()).device
                done = _greedy_one_by_one(self.model, self.prompts, device)
                self.found[decoder] = {i: self.tokenizer.decode(t) for i, t in enumerate(done)}
            else:
                self.found[decoder] = {i: g[0].completion for i, g in generate_stream(
                    self.model, self.tokenizer, [""] * len(self.prompts), Decoding(NEW_TOKENS, stop_strings=()),
                    Batching(batch_size=2, prefill_size=1, static_cache=DECODER_TABLE.get(decoder).static_cache),
                    prompt_ids=self.prompts)}
        return self.found[decoder]


@torch.inference_mode()
def check_decoder(model_name, device, dtype: torch.dtype, path: str, auto_picks: bool,
                  bench: DecoderBench | None = None) -> Check:
    """An evaluation decoder (shared prefix, refilled batch) against batch-1 `generate`, and the
    fixed slots also against the dynamic cache: greedy tokens over prompts of different
    lengths, two at a time so that rows are refilled. max_diff: prompts whose tokens differ."""
    start = time.perf_counter()
    if DECODER_TABLE.get(path).cuda_graph and device.type != "cuda":
        raise MathtuneError("the CUDA-graph decoder needs a CUDA GPU")
    bench = bench or DecoderBench(model_name, device, dtype)
    static = DECODER_TABLE.get(path).static_cache
    found = bench.tokens(path)
    references = [bench.tokens("generate")] + ([bench.tokens("dynamic_cache")] if static else [])
    differ = sum(any(ref[i] != found[i] for ref in references) for i in range(len(bench.prompts)))
    return verdict(f"decoder {path}",
                   "transformers generate, batch 1, greedy" + (" and the dynamic cache" if static else "")
                   + f" ({len(bench.prompts)} prompts, {NEW_TOKENS} tokens, refilled; "
                   f"{str(dtype).removeprefix('torch.')})", float(differ), 0.0, start, auto_picks)


@torch.inference_mode()
def check_merged_lora(model_name, device, dtype: torch.dtype, auto_picks: bool,
                      bench: DecoderBench | None = None) -> Check:
    """A LoRA adapter merged into the base weights against the same adapter beside them: greedy
    tokens over the prompts, all at once. max_diff: the share of prompts whose tokens differ
    (recorded, not assumed: merging rounds W + BA to the weights' precision)."""
    start = time.perf_counter()
    model = with_lora(bench.model if bench else build_model(model_name, device, dtype)).eval()
    prompts = check_prompts(model.config.vocab_size)
    differ = greedy_disagreement(model, model.merge_and_unload, prompts, device)
    return verdict("lora merged", f"the adapter unmerged, greedy ({len(prompts)} prompts, {NEW_TOKENS} tokens; "
                   f"{str(dtype).removeprefix('torch.')})", differ, 0.0, start, auto_picks)


def run_check(kind: str, path: str, device: torch.device, dtype: torch.dtype, *, model_name: str | None = None,
              lean_head_check: Callable | None = None) -> Check:
    """The check of one path: kind "attention", "lm_head" or "decoder". The LM head's check is
    the training stage's (lean_head_check), which this layer cannot import."""
    if kind == "attention":
        return check_attention(model_name, device, path, "sdpa", dtype, auto_picks=True)
    if kind == "decoder":
        return check_decoder(model_name, device, DECODER_CHECK_DTYPE, path, auto_picks=True)
    if kind == "lm_head" and lean_head_check is not None:
        return lean_head_check(model_name, device, dtype)
    raise ValueError(f"no check for {kind} {path}")


def planned_paths(attn_implementation: str, packing: bool, on_gpu: bool) -> dict:
    """The paths `auto` picks on a GPU or a CPU (before their first-use checks, which may send a
    fast one to its FALLBACK), named as the summaries name what ran."""
    if attn_implementation != "auto":
        attention = attn_implementation
    else:
        attention = ("mathtune_varlen" if on_gpu else "mathtune_segments") if packing else "sdpa"
    static = static_cache_by_default(on_gpu)
    decoder = ("fixed_slots_cuda_graph" if on_gpu else "fixed_slots") if static else "dynamic_cache"
    return {"attention": attention, "lm_head": "lean", "decoder": decoder}
