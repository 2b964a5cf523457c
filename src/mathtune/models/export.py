"""The base model with a run's adapter merged in, loadable by plain transformers.

    mathtune export RUN_DIR --merged OUT

The merge is done in float32 (so no rounding enters through the adapter's low-rank
product) and saved in the dtype the base checkpoint was stored in, with its tokenizer and
generation settings, so `AutoModelForCausalLM.from_pretrained(OUT)` needs nothing else. A run
with model.quantization (4bit, 8bit) is merged into the full-precision base too, and the
command says so: its merged model is not the quantized model the run evaluated.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from mathtune.config import config_from_yaml_text
from mathtune.core.errors import MathtuneError
from mathtune.core.terminal import say
from mathtune.models.load import load_model, load_tokenizer, resolve_model_path


def stored_dtype(name_or_path: str) -> torch.dtype:
    """The dtype the base checkpoint's config declares (float32 when it declares none)."""
    from transformers import PretrainedConfig

    # The config file only: no code runs to read a dtype (a custom architecture's config class
    # is not needed for that one field).
    dtype = getattr(PretrainedConfig.from_pretrained(resolve_model_path(name_or_path)), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


# The greedy agreement of a bf16 model merged with its adapter against the same model with the
# adapter unmerged, where it was measured (BENCHMARKS.md, "Merging in bf16"): SmolLM2-135M-Instruct
# with a 32-step LoRA adapter, bf16 on a CPU, 64 GSM8K chat prompts, the same completion text.
# A GPU measurement (bench/gpu.sh, stage merge) would replace it for GPU runs.
LOW_PRECISION_MERGE_AGREEMENT: str | None = ("8 of 64 GSM8K problems (SmolLM2-135M-Instruct with a 32-step LoRA "
                                             "adapter, bf16 on a CPU)")


def low_precision_merge_note(dtype: torch.dtype, adapter: Path) -> str:
    """What export says when it saves the merged weights in bf16 or fp16: the merge is rounded
    to that dtype, unlike the base + unmerged adapter the run evaluated."""
    name = str(dtype).removeprefix("torch.")
    agreement = (f"merged and unmerged gave the same greedy completion on {LOW_PRECISION_MERGE_AGREEMENT}, "
                 "where it was measured (BENCHMARKS.md)" if LOW_PRECISION_MERGE_AGREEMENT else
                 "how often merged and unmerged give the same greedy answer in this dtype is not measured yet "
                 "(BENCHMARKS.md, Open (GPU))")
    return (f"note: the merged model is saved in {name}, the base checkpoint's dtype: the merged weights W + BA are "
            f"rounded to {name}, which the run's evaluation (the adapter kept unmerged beside the base) never did, "
            f"so its answers can differ from the run's records; {agreement}. To run what was evaluated, load the "
            f"base and attach {adapter} with PEFT.")


def export_merged(run_dir: Path, out: Path) -> Path:
    """Write base + adapter, merged, to out; returns out."""
    run_dir, out = Path(run_dir), Path(out)
    adapter = run_dir / "adapter"
    config_file = run_dir / "config.yaml"
    if not (adapter / "adapter_model.safetensors").is_file():
        raise MathtuneError(f"{run_dir} has no trained adapter (adapter/adapter_model.safetensors); run `mathtune train` first")
    if not config_file.is_file():
        raise MathtuneError(f"{run_dir} has no config.yaml, so the base model is unknown")
    if out.exists() and any(out.iterdir()):
        raise MathtuneError(f"{out} already exists and is not empty; choose another --merged folder")
    config = config_from_yaml_text(config_file.read_text(), str(config_file))

    # Always the full-precision base: merging into quantized weights would round the update away
    # (and bitsandbytes' 4-bit weights cannot be saved as a plain transformers model).
    model, _ = load_model(config.model.model_copy(update={"dtype": "float32", "quantization": "none"}),
                          adapter=str(adapter), device="cpu")
    # The tokenizer as the model has it: no pad token where it had none (evaluation's batches
    # add one in memory; a saved one would change the tokenizer users then load).
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code,
                               pad_for_batches=False)
    dtype = stored_dtype(config.model.name_or_path)
    say(f"merging {adapter} into {config.model.name_or_path}")
    if config.model.quantization != "none":
        say(f"note: this run trained and evaluated its adapter on the base quantized to {config.model.quantization}; "
            f"the merge is into the full-precision base, saved in {str(dtype).removeprefix('torch.')}, so its "
            "answers can differ from the evaluated ones by the quantization's error. To run what was evaluated, "
            f"load the base with quantization {config.model.quantization} and attach {adapter} with PEFT.")
    elif dtype in (torch.bfloat16, torch.float16):
        say(low_precision_merge_note(dtype, adapter))
    merged = model.merge_and_unload().to(dtype)

    # Save into a temporary sibling and rename: a crash never leaves a half model at OUT.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # mkdtemp makes its folder 0700; the exported folder gets what the user's umask gives any
        # folder mathtune writes (0755 under the usual 022).
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
