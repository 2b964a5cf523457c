"""A quantized base model (QLoRA): the frozen base weights held in 4 or 8 bits by bitsandbytes,
the adapter trained on top of them.

    model.quantization: 4bit           # in a config; `mathtune eval --quantization 4bit` likewise

    model = load_quantized(path, "4bit", dtype=torch.bfloat16, device=device, attn_implementation="sdpa")
    record = quantization_record(model)        # what ran, for the summaries and the report

4bit is QLoRA's recipe (transformers' BitsAndBytesConfig): NF4 weights, double quantization of
the block scales, and matrix products computed in `dtype`, which is bf16 on a GPU and fp32 on a
CPU (mathtune's dtype auto), and the record says which. 8bit is LLM.int8(). Every linear layer
but the output layer is quantized; embeddings and norms keep `dtype`. Training adds PEFT's
prepare_model_for_kbit_training (the base frozen, the unquantized weights in fp32).
"""

from __future__ import annotations

import importlib.util

import torch

from mathtune.config import quantization_setting_error
from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import library_version

# From a clone, the way make installs it (constraints.txt keeps torch's CPU build and the tested
# bitsandbytes); mathtune is not on a package registry.
INSTALL = "pip install -c constraints.txt -e '.[qlora]' (in a clone of mathtune)"


def check_quantization(quantization: str, name_or_path: str) -> None:
    """A setting that cannot load is one line before anything loads: a .gguf model, or
    bitsandbytes not installed."""
    error = quantization_setting_error(quantization, name_or_path)
    if error:
        raise MathtuneError(error)
    check_bitsandbytes(quantization)


def check_bitsandbytes(quantization: str) -> None:
    """The part of check_quantization a validated config still needs: its model.quantization
    has passed the .gguf check, but whether bitsandbytes is installed is this machine's."""
    if quantization != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise MathtuneError(f"quantization {quantization} needs bitsandbytes, which is not installed: {INSTALL}")


def bitsandbytes_config(quantization: str, dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for '4bit' or '8bit'."""
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"not a quantization: {quantization!r}")


def load_quantized(path: str, quantization: str, *, dtype: torch.dtype, device: torch.device | str, **kwargs):
    """AutoModelForCausalLM.from_pretrained with its weights quantized on `device` (a quantized
    model cannot be moved after loading); kwargs go to from_pretrained. The setting is checked
    by the caller (check_quantization), before a .gguf is dequantized into `path`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=bitsandbytes_config(quantization, dtype),
                                                 dtype=dtype, device_map={"": torch.device(device)}, **kwargs)
    keep_one_cpu_layout(model)
    return model


def keep_one_cpu_layout(model) -> None:
    """Keep bitsandbytes' 4-bit layers on their one CPU path (dequantize, then multiply).

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weights for a bf16
    inference kernel the first time the layer runs in eval mode without gradients. A training
    step after that (the trainer validates, then trains on) goes through the repacked weights
    and fails (bitsandbytes 0.50.2: "a view of a leaf Variable that requires grad is being used
    in an in-place operation"); the repacking also needs in_features to be a multiple of 64.
    Switched off, validation, training and evaluation all compute in the recorded dtype."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def prepare_for_training(model, *, gradient_checkpointing: bool):
    """PEFT's k-bit preparation: the base frozen, its unquantized weights in fp32, and (with
    gradient checkpointing) gradients enabled at the inputs so the recomputed blocks get them."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)


def is_quantized(model) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def quantization_record(model) -> dict | None:
    """What the loaded base holds, for a summary: None for full-precision weights."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is None or not is_quantized(model):
        return None
    four = bool(config.load_in_4bit)
    record = {"quantization": "4bit" if four else "8bit", "library": "bitsandbytes",
              "version": library_version("bitsandbytes")}
    if four:
        record |= {"quant_type": config.bnb_4bit_quant_type, "double_quant": bool(config.bnb_4bit_use_double_quant),
                   "compute_dtype": str(config.bnb_4bit_compute_dtype).removeprefix("torch.")}
    else:
        record |= {"outlier_threshold": config.llm_int8_threshold}
    record["not_quantized"] = "the output layer, embeddings and norms"
    return record
