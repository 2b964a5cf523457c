"""Loading a causal LM and its tokenizer: hub id, local folder, or a .gguf file; plus an
optional PEFT adapter, checked against the base model before PEFT sees it.

A .gguf file is dequantized by transformers on load (tens of seconds for a 0.5B model);
the result is cached once as safetensors under MATHTUNE_CACHE (default
~/.cache/mathtune/dequantized) so the next load takes seconds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from mathtune.config import ModelConfig
from mathtune.core import cache as core_cache
from mathtune.core.errors import MathtuneError
from mathtune.core.hub import hub_unavailable
from mathtune.core.terminal import say
from mathtune.core.runfiles import read_json
from mathtune.models.quantize import load_quantized

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Whether attach_adapter(merge=True) also folds an adapter into bf16/fp16 weights. Off: merged in
# bf16, SmolLM2-135M with a trained adapter gave the same greedy completion as unmerged on 8 of 64
# problems (BENCHMARKS.md, "Merging in bf16"); a GPU measurement (bench/eval_speed.py, path
# mathtune:merged; bench/gpu.sh, stage merge) would decide it there.
MERGE_IN_LOW_PRECISION = False


def resolve_dtype(dtype: str) -> torch.dtype:
    """auto = bf16 on a GPU (where it is fast and stable), fp32 on a CPU (where bf16 is slow
    and would make greedy decoding depend on batch size)."""
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return DTYPES[dtype]


def resolve_attn(attn_implementation: str) -> str:
    return "sdpa" if attn_implementation == "auto" else attn_implementation


def _is_local(name_or_path: str) -> bool:
    return (
        name_or_path.startswith((".", "/", "~"))
        or name_or_path.endswith(".gguf")
        or os.path.exists(os.path.expanduser(name_or_path))
    )


def _gguf_cache_dir(gguf: Path) -> Path:
    return core_cache.dequantized_folder(gguf)


@contextlib.contextmanager
def _no_gguf_bar():
    """transformers draws its GGUF conversion bar with tqdm.auto directly, which neither its
    disable_progress_bar nor HF_HUB_DISABLE_PROGRESS_BARS reaches, and TQDM_DISABLE is read only
    when tqdm is imported: its module's tqdm is swapped for a disabled one while it converts.
    The lines around it (dequantizing ..., dequantized: ...) say what happened."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def dequantize_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF once and save it as a plain transformers folder; returns the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"dequantizing {gguf.name} (once; cached in {target})")
    try:
        with _no_gguf_bar():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:
        raise MathtuneError(f"cannot load GGUF file {gguf}: {_first_line(err)}") from None
    # A GGUF-loaded model keeps its quantizer attached, and save_pretrained refuses to run
    # until it is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write into a temporary sibling and rename: a crash never leaves a half cache behind.
    # Qwen chat models end a turn with <|im_end|> but the GGUF records only one eos; keep
    # both turn-end tokens so plain transformers users (and merged exports) stop too.
    stops = [t for t in (tokenizer.convert_tokens_to_ids(x) for x in ("<|im_end|>", "<|endoftext|>"))
             if isinstance(t, int) and t != tokenizer.unk_token_id]
    if len(stops) == 2:
        model.generation_config.eos_token_id = stops
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process (a second training rank, say) finished the same cache first.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_model_path(name_or_path: str) -> str:
    """Hub ids pass through; local paths must exist; .gguf files become their cached folder."""
    if not _is_local(name_or_path):
        why = hub_unavailable("model", name_or_path, cached_file="config.json")
        if why:  # a mistyped local path, or no network: say so now, not after the client's retries
            raise MathtuneError(why)
        return name_or_path
    path = Path(os.path.expanduser(name_or_path))
    if not path.exists():
        raise MathtuneError(f"model path not found: {name_or_path}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise MathtuneError(f"model path is a file but not a .gguf: {name_or_path}")
        return str(dequantize_gguf(path))
    if not (path / "config.json").is_file():
        raise MathtuneError(f"model folder has no config.json: {name_or_path}")
    return str(path)


def weight_files(folder: Path) -> list[str]:
    """The weight files of a local model folder (names only); a folder with config and tokenizer
    alone is enough for a plan, not for a model."""
    return sorted(p.name for p in folder.glob("*") if p.suffix == ".safetensors" or
                  (p.name.startswith("pytorch_model") and p.suffix == ".bin"))


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False, pad_for_batches: bool = True):
    """trust_remote_code runs Python that ships with the model: off unless the config turns it on.
    A tokenizer without a pad token gets its end token as one, for padded batches, unless
    pad_for_batches is off (an export writes the tokenizer as the model has it)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise MathtuneError(f"cannot load tokenizer of '{name_or_path}': {_first_line(err)}") from None
    if tokenizer.pad_token is None and pad_for_batches:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def process_device() -> torch.device:
    """This process's GPU (under torchrun each process has its own), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def decoding(model):
    """A model that is being trained, ready for the evaluation decoder for the length of the
    block: in eval mode (no dropout), on this process's device, with an attention the decoder
    supports (its per-row masks need sdpa or eager, not flash-attn's varlen kernel); as it was
    afterwards."""
    was_training = model.training
    attn = getattr(model.config, "_attn_implementation", None)
    switch = attn == "flash_attention_2" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("sdpa")
    model.to(process_device())
    model.eval()
    try:
        yield model
    finally:
        if switch:
            model.set_attn_implementation(attn)
        model.train(was_training)


def use_shape_free_attention() -> bool:
    """Keep PyTorch's attention off its cuDNN kernels on a GPU; True when it switched them off.

    On Hopper-class GPUs recent PyTorch releases try cuDNN's fused attention first. cuDNN
    builds an execution plan for every new combination of batch, query length and key length
    (tens of milliseconds on the host each, then cached). mathtune's attention changes those on
    almost every call: training runs one causal call per packed example, each its own length,
    and the evaluation decoder's cache grows by a token per step. Flash and memory-efficient
    attention take any shape without a plan. MATHTUNE_CUDNN_SDPA=1 leaves cuDNN on, so that the
    benchmark can compare the two."""
    if not torch.cuda.is_available() or os.environ.get("MATHTUNE_CUDNN_SDPA") == "1":
        return False
    torch.backends.cuda.enable_cudnn_sdp(False)
    return True


def load_model(
    section: ModelConfig,
    *,
    attn_implementation: str = "auto",
    adapter: str | None = None,
    device: str | torch.device | None = None,
    merge_adapter: bool = False,
):
    """(model, tokenizer) of the config's model section (name, dtype, trust_remote_code,
    quantization) ready for inference or training; the adapter, if any, is attached, and
    folded into the weights when merge_adapter is set and that is exact (see attach_adapter).
    With quantization 4bit or 8bit the base weights are loaded quantized by bitsandbytes
    (models.quantize), straight onto the device. attn_implementation: what the caller made of
    the section's attention for its use (training's checked path, decoding's unpacked one);
    auto is sdpa."""
    from transformers import AutoModelForCausalLM

    name_or_path, quantization = section.name_or_path, section.quantization
    trust_remote_code = section.trust_remote_code
    use_shape_free_attention()
    path = resolve_model_path(name_or_path)
    if _is_local(path) and not weight_files(Path(path)):
        raise MathtuneError(f"model folder has no weights (no *.safetensors or pytorch_model*.bin): {name_or_path}")
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    device = torch.device(device) if device is not None else process_device()
    settings = dict(trust_remote_code=trust_remote_code, dtype=resolve_dtype(section.dtype),
                    attn_implementation=resolve_attn(attn_implementation))
    try:
        if quantization == "none":
            # Straight onto a GPU in the dtype asked for, not into CPU memory first and then copied.
            model = AutoModelForCausalLM.from_pretrained(path, device_map=None if device.type == "cpu" else device,
                                                         **settings)
        else:
            model = load_quantized(path, quantization, device=device, **settings)
    except MathtuneError:
        raise
    except Exception as err:
        files = ", ".join(weight_files(Path(path))) if _is_local(path) else ""
        raise MathtuneError(f"cannot load model '{name_or_path}'" + (f" (weights {files})" if files else "")
                            + f": {_first_line(err)}") from None
    if adapter is not None:
        model = attach_adapter(model, adapter, merge=merge_adapter)
    if quantization == "none":  # a quantized model was loaded onto its device and cannot be moved
        model.to(device)  # in place already: nothing moves (an adapter's weights come to the model's device)
    model.eval()
    return model, tokenizer


def meta_model(name_or_path: str, *, trust_remote_code: bool = False):
    """The model built from its config on PyTorch's meta device: its modules and parameter
    shapes, with no weights read or allocated (for the plan and for checks before loading)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as err:
        raise MathtuneError(f"cannot read the model config of '{name_or_path}': {_first_line(err)}") from None


def check_adapter_fits(model, adapter_dir: Path) -> None:
    """Compare every LoRA matrix's shape with the module it adapts, so an adapter trained on
    another base model is a clear error instead of a size-mismatch deep inside PEFT."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise MathtuneError(f"adapter folder has no adapter_model.safetensors: {adapter_dir}")
    modules = dict(model.named_modules())
    with safe_open(str(weights), "pt") as fh:
        for key in fh.keys():
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            # 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' -> module name
            module_name = key.split(".lora_")[0].removeprefix("base_model.model.")
            module = modules.get(module_name)
            if module is None:
                raise MathtuneError(
                    f"adapter {adapter_dir} does not fit this model: it adapts '{module_name}', "
                    "which the model does not have"
                )
            shape = tuple(fh.get_slice(key).get_shape())
            in_features = getattr(module, "in_features", None)
            out_features = getattr(module, "out_features", None)
            expected = shape[1] if ".lora_A." in key else shape[0]
            actual = in_features if ".lora_A." in key else out_features
            if actual is not None and expected != actual:
                raise MathtuneError(
                    f"adapter {adapter_dir} does not fit this model: '{module_name}' has "
                    f"{'in' if '.lora_A.' in key else 'out'}_features={actual}, the adapter expects {expected} "
                    "(was it trained on another base model?)"
                )


def check_adapter_finite(adapter_dir: Path) -> None:
    """Refuse an adapter with a NaN or infinite weight: it is what a diverged training leaves,
    and a model carrying it says nothing worth scoring (every logit NaN)."""
    bad = total = 0
    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as fh:
        for key in fh.keys():
            tensor = fh.get_tensor(key)
            if tensor.is_floating_point():
                bad += int((~torch.isfinite(tensor)).sum())
                total += tensor.numel()
    if bad:
        raise MathtuneError(f"adapter {adapter_dir} has {bad:,} non-finite weights (NaN or inf) of {total:,}: its "
                            "training diverged; train again with a lower train.learning_rate")


def check_adapter_folder(adapter: str | Path) -> Path:
    adapter_dir = Path(adapter)
    if not adapter_dir.is_dir():
        raise MathtuneError(f"adapter folder not found: {adapter}")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise MathtuneError(f"not a PEFT adapter folder (no adapter_config.json): {adapter}")
    read_json(adapter_dir / "adapter_config.json")  # a malformed file is one line naming it
    if (adapter_dir / "adapter_model.safetensors").is_file():  # its absence: check_adapter_fits says so
        check_adapter_finite(adapter_dir)
    return adapter_dir


def attach_adapter(model, adapter: str | Path, *, merge: bool = False):
    """base + LoRA. With merge, the LoRA product is added into the base weights when they are
    float32, so decoding skips the extra low-rank matmuls of every adapted layer
    (bench/bench_adapter_merge.py, 0.5B model, 2 CPU cores, batch 8: 28.4 tokens/s unmerged,
    30.9 merged, 29.9 base). In bf16/fp16 the adapter stays separate, because rounding W + BA
    to 8 mantissa bits can erase much of a small update."""
    from peft import PeftModel

    adapter_dir = check_adapter_folder(adapter)
    check_adapter_fits(model, adapter_dir)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except Exception as err:
        raise MathtuneError(f"cannot attach adapter {adapter}: {_first_line(err)}") from None
    if merge and (MERGE_IN_LOW_PRECISION or all(p.dtype == torch.float32 for p in peft_model.parameters())):
        return peft_model.merge_and_unload()
    return peft_model  # a quantized base (int8 or packed 4-bit weights) never gets here merged

