"""Model shapes with random weights, for timing where no real weights can be had.

Speed does not depend on the weights' values, only on the shapes; the tokenizer and the
text are real (the Qwen2.5 tokenizer, GSM8K), so every sequence has its real length.

    folder = build_shape("qwen2-1.5b", tokenizer_dir, out_dir, dtype=torch.bfloat16)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = os.environ.get("MATHTUNE_DATA", str(_ROOT.parent / "shared" / "gsm8k"))
DEFAULT_TOKENIZER = str(_ROOT.parent / "shared" / "qwen2.5-tokenizer")

# Qwen2-1.5B's config.json, field for field where it shapes the computation.
SHAPES = {
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    # Qwen2-7B's config.json, likewise (untied output layer, a slightly larger vocabulary).
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
                     max_position_embeddings=131072, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
    # For trying the bench scripts on a CPU in seconds: the real vocabulary, a tiny body.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                 max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6),
}


def build_shape(name: str, tokenizer_dir: Path, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write a random-weight model of this shape with the given tokenizer to out_dir."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = Qwen2Config(**SHAPES[name], eos_token_id=stops[1], bos_token_id=stops[1], pad_token_id=stops[1])
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config.eos_token_id = stops
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)
    return out_dir


def build_shape_config(name: str, tokenizer_dir: Path, out_dir: Path) -> Path:
    """A model folder with this shape's config.json and the tokenizer, and no weights: enough for
    `mathtune plan`, which builds the model on the meta device."""
    from transformers import AutoTokenizer, Qwen2Config

    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    out_dir = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    stop = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    Qwen2Config(**SHAPES[name], eos_token_id=stop, bos_token_id=stop, pad_token_id=stop).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_random_adapter(model_dir: Path, out_dir: Path, *, r: int = 8, alpha: int = 16, b_std: float = 0.005) -> Path:
    """A LoRA adapter of the reference shape (r 8, alpha 16, every linear layer) with random
    weights, for measuring what merging it into bf16 weights changes where no trained adapter
    is at hand. PEFT starts B at zero (a no-op adapter); here B ~ N(0, b_std), which with PEFT's
    A makes the update about 2% of a randomly initialised weight's scale."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "adapter_config.json").is_file():
        return out_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules="all-linear",
                                                  task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, b_std)
    peft_model.save_pretrained(out_dir)
    return out_dir


def machine() -> dict:
    """The device and library versions a result was measured with."""
    import os
    import platform

    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    for lib in ("peft", "trl", "accelerate", "lm_eval", "liger_kernel"):
        try:
            info[lib] = __import__(lib).__version__
        except (ImportError, AttributeError):
            pass
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    else:
        info["device"] = f"cpu ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return info


def add_model_arguments(parser) -> None:
    """--model / --shape / --tokenizer / --data, as both bench scripts take them."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", help="hub id, folder or .gguf")
    src.add_argument("--shape", help=f"random weights of this shape ({', '.join(SHAPES)}), with --tokenizer")
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    parser.add_argument("--data", default=DEFAULT_DATA)


def resolve_model(args, dtype: torch.dtype) -> str:
    """The model folder: --model as given, or --shape built once into the temp folder."""
    if args.shape:
        folder = Path(tempfile.gettempdir()) / f"mathtune-shape-{args.shape}-{args.dtype}"
        return str(build_shape(args.shape, Path(args.tokenizer), folder, dtype))
    if not args.model:
        raise SystemExit("give --model PATH or --shape NAME")
    return args.model
