"""A tiny random Qwen2 and a small-vocabulary byte-level BPE tokenizer, built offline.

Qwen's 152k vocabulary makes even a 2-layer model cost seconds per CPU step (the logits
dominate); with a ~1k vocabulary a step takes milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from mathtune.task.prompt_kinds import COT8_EXEMPLARS
from mathtune.task.prompts import CHAT_INSTRUCTION, FALLBACK_CHAT_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(corpus: list[str], vocab_size: int = 1024, specials: list[str] = SPECIALS) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=specials[-1],
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = FALLBACK_CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: Path, corpus: list[str], *, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """Write a random tiny Qwen2 with its tokenizer to out_dir; returns out_dir."""
    tokenizer = build_tokenizer(corpus)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def corpus_from_jsonl(*paths: Path) -> list[str]:
    texts = [CHAT_INSTRUCTION] + [q + "\n" + a for q, a in COT8_EXEMPLARS]
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                texts.append(obj["question"] + "\n" + obj["answer"])
    return texts
