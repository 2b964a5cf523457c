"""What `mathtune plan` says a quantized base saves, before any run: the reference config on the
Qwen2-1.5B and Qwen2-7B shapes, bf16 against 4-bit, on a named GPU. Loads no weights.

    python bench/qlora_plan.py [--device h100] [--data ../shared/gsm8k] [--tokenizer ../shared/qwen2.5-tokenizer]

Each shape is a folder holding only its config.json and the Qwen2.5 tokenizer (bench/shapes.py);
the plan builds the model on the meta device. Besides the reference config (batch 16 packed rows
of 512 tokens, no gradient checkpointing) it plans the same run with the batch spread over
gradient accumulation (batch 2 x 8) and gradient checkpointing on, the usual QLoRA set-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import DEFAULT_DATA, DEFAULT_TOKENIZER, build_shape_config  # noqa: E402

REFERENCE = Path(__file__).resolve().parent.parent / "configs" / "qwen2-1.5b-gsm8k-lora.yaml"
SETTINGS = {"reference (batch 16 x 512 tokens)": [],
            "batch 2 x 8 accumulated, gradient checkpointing": ["train.batch_size=2", "train.gradient_accumulation_steps=8",
                                                                "train.gradient_checkpointing=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="h100")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    args = parser.parse_args()

    from mathtune.config import load_config
    from mathtune.plan import format_plan, make_plan

    rows = []
    with tempfile.TemporaryDirectory(prefix="qlora-plan-") as tmp:
        for shape in ("qwen2-1.5b", "qwen2-7b"):
            folder = build_shape_config(shape, Path(args.tokenizer), Path(tmp) / shape)
            for setting, extra in SETTINGS.items():
                for quantization in ("none", "4bit"):
                    config = load_config(REFERENCE, [f"model.name_or_path={folder}", f"data.source={args.data}",
                                                     f"model.quantization={quantization}", *extra])
                    plan = make_plan(config, device=args.device)
                    if setting.startswith("reference"):
                        print(f"--- {shape}, {quantization}, {setting}\n{format_plan(plan)}\n", flush=True)
                    parts = {k: v / 2**30 for k, v in plan["peak_memory_parts_bytes"].items()}
                    rows.append([shape, setting, "bf16" if quantization == "none" else "4-bit NF4",
                                 f"{plan['trainable_params']:,}", f"{parts['weights']:.2f}",
                                 f"{parts['adapter_and_optimizer']:.2f}", f"{parts['activations']:.2f}",
                                 f"{plan['peak_memory_gib']}", f"{plan['time_s']['train'] / 3600:.2f}"])
    head = ["shape", "setting", "base", "trainable", "weights GiB", "adapter + Adam GiB", "activations + logits GiB",
            "peak GiB", "train h"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
