"""The trained adapter loads with plain PEFT and with mathtune's loader, and
`mathtune export --merged` writes a plain transformers model that generates what
base + adapter generates."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mathtune import cli
from mathtune.config import ModelConfig
from mathtune.models.export import export_merged
from mathtune.models.load import load_model
from mathtune.task.prompts import render_chat_prompt

QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 miles in 2 hours. What is its speed?",
    "Sara had 20 dollars and spent 7. How much is left?",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def greedy(model, tokenizer, max_new_tokens: int = 16) -> list[list[int]]:
    outputs = []
    for question in QUESTIONS:
        ids = tokenizer(render_chat_prompt(question, tokenizer), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        outputs.append(out[0, ids["input_ids"].shape[1] :].tolist())
    return outputs


@pytest.fixture
def strong_adapter_run(trained_run, tmp_path) -> Path:
    """A copy of the trained run whose LoRA B matrices are made large, so base and tuned
    models clearly disagree (a few tiny-model steps barely move them)."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    path = run_dir / "adapter" / "adapter_model.safetensors"
    weights = load_file(str(path))
    generator = torch.Generator().manual_seed(0)
    for key, value in weights.items():
        if ".lora_B." in key:
            weights[key] = torch.randn(value.shape, generator=generator) * 0.5
    save_file(weights, str(path), metadata={"format": "pt"})
    return run_dir


def test_adapter_loads_with_plain_peft_and_mathtune(trained_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, str(trained_run / "adapter"))
    ours, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir)), adapter=str(trained_run / "adapter"),
                                 device="cpu")
    ids = tokenizer(render_chat_prompt(QUESTIONS[0], tokenizer), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, ours(input_ids=ids).logits)


def test_merged_model_generates_what_base_plus_adapter_generates(strong_adapter_run, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    old_umask = os.umask(0o022)
    try:
        out = export_merged(strong_adapter_run, tmp_path / "merged")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # as every other folder mathtune writes, not mkdtemp's 0700
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tiny = ModelConfig(name_or_path=str(tiny_model_dir))
    tuned, _ = load_model(tiny, adapter=str(strong_adapter_run / "adapter"), device="cpu")
    base, _ = load_model(tiny, device="cpu")

    assert greedy(merged, tokenizer) == greedy(tuned, tokenizer)
    assert greedy(base, tokenizer) != greedy(tuned, tokenizer)  # the adapter matters
    ids = tokenizer(render_chat_prompt(QUESTIONS[1], tokenizer), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, tuned(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_export_errors_are_one_line(trained_run, tmp_path, capsys):
    empty_run = tmp_path / "empty"
    empty_run.mkdir()
    assert cli.main(["export", str(empty_run), "--merged", str(tmp_path / "m1")]) == 1
    assert "has no trained adapter" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    assert cli.main(["export", str(trained_run), "--merged", str(taken)]) == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "m1").exists()


def test_eval_merges_adapter_only_when_exact(strong_adapter_run, tiny_model_dir):
    """`mathtune eval --adapter` folds a float32 adapter into the weights (same greedy tokens
    as the unmerged PEFT model); in bf16 it keeps the adapter separate."""
    from peft import PeftModel

    adapter = str(strong_adapter_run / "adapter")
    tiny = ModelConfig(name_or_path=str(tiny_model_dir))
    unmerged, tokenizer = load_model(tiny, adapter=adapter, device="cpu")
    merged, _ = load_model(tiny, adapter=adapter, device="cpu", merge_adapter=True)
    assert isinstance(unmerged, PeftModel) and not isinstance(merged, PeftModel)
    assert greedy(merged, tokenizer) == greedy(unmerged, tokenizer)
    bf16, _ = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="bfloat16"), adapter=adapter,
                         device="cpu", merge_adapter=True)
    assert isinstance(bf16, PeftModel)


def test_export_keeps_a_tokenizer_without_a_pad_token_without_one(trained_run, tiny_model_dir, tmp_path):
    """Evaluation pads batches with the end token in memory; the exported tokenizer stays the model's."""
    import json

    from transformers import AutoTokenizer

    base = tmp_path / "no-pad-base"
    shutil.copytree(tiny_model_dir, base)
    settings = json.loads((base / "tokenizer_config.json").read_text())
    settings["pad_token"] = None
    (base / "tokenizer_config.json").write_text(json.dumps(settings))
    assert AutoTokenizer.from_pretrained(base).pad_token is None
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace(str(tiny_model_dir), str(base)))
    out = export_merged(run_dir, tmp_path / "merged")
    assert AutoTokenizer.from_pretrained(out).pad_token is None
    assert AutoTokenizer.from_pretrained(tiny_model_dir).pad_token is not None  # the tiny model's own has one, kept


def test_a_bf16_export_says_its_merge_is_rounded_and_the_answers_can_differ(trained_run, tmp_path, capsys,
                                                                            monkeypatch):
    """A base stored in bf16 is merged and saved in bf16: the export says so, and says whether
    the merged-against-unmerged agreement was measured; a float32 base says nothing of it."""
    from mathtune.models import export

    assert cli.main(["export", str(trained_run), "--merged", str(tmp_path / "fp32")]) == 0
    assert "rounded to" not in capsys.readouterr().out
    monkeypatch.setattr(export, "stored_dtype", lambda name: torch.bfloat16)
    assert cli.main(["export", str(trained_run), "--merged", str(tmp_path / "bf16")]) == 0
    said = capsys.readouterr().out
    assert "note: the merged model is saved in bfloat16" in said and "can differ from the run's records" in said
    assert f"same greedy completion on {export.LOW_PRECISION_MERGE_AGREEMENT}, where it was measured" in said
    monkeypatch.setattr(export, "LOW_PRECISION_MERGE_AGREEMENT", None)
    assert "not measured yet" in export.low_precision_merge_note(torch.bfloat16, tmp_path)
