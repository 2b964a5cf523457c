"""The real SmolLM2-135M-Instruct (a Llama-architecture model, from the package registry)
through `mathtune run` on a few problems: the cheapest real model that is not a Qwen2. Marked
slow (run by `make test`, skipped by `make test-fast`); tiny limits (2 training problems, one
step, 2 test problems, 8 new tokens) keep it short."""

import json

import pytest
from transformers import AutoTokenizer

from mathtune.cli import main
from mathtune.models.load import resolve_model_path
from mathtune.models.registry import ensure_model

# One torch thread: on a 2-core machine shared with other jobs this test took 118 s with the
# default two threads and 26 s with one, back to back (a 135M model's short sequences gain
# nothing from a second thread that has to wait for a core).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_smollm2_runs_end_to_end_on_its_own_token_sequence(small_data_dir, tmp_path, capsys):
    gguf = ensure_model("smollm2-135m-instruct")
    capsys.readouterr()  # a first fetch says what it did: the plan's JSON below is read alone
    config = tmp_path / "smollm2.yaml"
    config.write_text("seed: 1\n")
    sets = [f"model.name_or_path={gguf}", f"data.source={small_data_dir}", "data.train_limit=2",
            "train.epochs=1", "train.batch_size=2", "train.eval_every_steps=2", "train.report_to=[]",
            "eval.limit=2", "eval.max_new_tokens=8", "eval.batch_size=2", "name=smollm2"]
    overrides = [arg for s in sets for arg in ("--set", s)]

    assert main(["plan", str(config), "--show-example", "--json", *overrides]) == 0
    example = json.loads(capsys.readouterr().out)["example"]
    train, mask, evaluated = example["train_input_ids"], example["train_loss_mask"], example["eval_prompt_ids"]
    assert train[:len(evaluated)] == evaluated
    assert mask == [0] * len(evaluated) + [1] * (len(train) - len(evaluated))

    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), *overrides]) == 0
    for f in ("adapter/adapter_config.json", "eval/base.jsonl", "eval/tuned.jsonl", "analysis.json", "report.md"):
        assert (out / f).is_file(), f
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(str(gguf)))
    for which in ("base", "tuned"):
        records = [json.loads(line) for line in (out / "eval" / f"{which}.jsonl").read_text().splitlines()]
        assert len(records) == 2
        for record in records:
            # ChatML with SmolLM2's own default system turn, one user turn, the assistant's to come.
            assert record["prompt"].startswith("<|im_start|>system\n") and record["prompt"].endswith("<|im_start|>assistant\n")
            assert record["question"] in record["prompt"]
            assert 1 <= record["num_generated_tokens"] <= 8
    # The example plan showed is the ids the tokenizer gives the evaluation prompt, no BOS added.
    assert tokenizer.decode(evaluated).startswith("<|im_start|>system\n")


# TinyLlama's conversation format, written from its model card: the template writes no BOS,
# the tokenizer prepends <s> to any text.
TINYLLAMA_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}"
    "{%- if loop.last and add_generation_prompt %}{{- '<|assistant|>' }}{%- endif %}"
    "{%- endfor %}"
)


@pytest.mark.parametrize("variant", ["llama3", "tinyllama"])
def test_smollm2_with_other_tokenizer_conventions_shows_one_token_sequence(variant, small_data_dir, tmp_path,
                                                                            capsys):
    """SmolLM2's weights with a tokenizer of another convention (one that prepends
    <|begin_of_text|> under a Llama 3.2-style dated template; one that prepends <s> under
    TinyLlama's template): `plan --show-example` (no weights loaded) shows the evaluation
    prompt as the training prefix, BOS at most once, and no loss on the prompt; the dated one
    writes the run's data.prompt_date."""
    import shutil

    from tokenizers import processors

    from families import LLAMA3_TEMPLATE

    folder = resolve_model_path(str(ensure_model("smollm2-135m-instruct")))
    model = tmp_path / variant
    model.mkdir()
    for name in ("config.json", "generation_config.json"):
        shutil.copy(f"{folder}/{name}", model / name)
    (model / "model.safetensors").symlink_to(f"{folder}/model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if variant == "llama3":
        bos = "<|begin_of_text|>"
        tokenizer.add_special_tokens({"bos_token": bos, "eos_token": "<|eot_id|>", "additional_special_tokens":
                                      ["<|start_header_id|>", "<|end_header_id|>"]})
        tokenizer.chat_template = LLAMA3_TEMPLATE
    else:
        bos = "<s>"
        tokenizer.add_special_tokens({"bos_token": bos, "eos_token": "</s>",
                                      "additional_special_tokens": ["<|user|>", "<|assistant|>", "<|system|>"]})
        tokenizer.chat_template = TINYLLAMA_TEMPLATE
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))])
    tokenizer.save_pretrained(model)
    bos_id = AutoTokenizer.from_pretrained(model)("x")["input_ids"][0]
    assert bos_id == tokenizer.convert_tokens_to_ids(bos)  # the saved tokenizer does prepend it

    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    argv = ["plan", str(config), "--show-example", "--json", "--set", f"model.name_or_path={model}",
            "--set", f"data.source={small_data_dir}", "--set", "data.train_limit=4", "--set", "data.prompt_date=2026-12-05"]
    assert main(argv) == 0
    example = json.loads(capsys.readouterr().out)["example"]
    train, mask, evaluated = example["train_input_ids"], example["train_loss_mask"], example["eval_prompt_ids"]
    assert train[:len(evaluated)] == evaluated
    assert mask == [0] * len(evaluated) + [1] * (len(train) - len(evaluated))
    assert train.count(bos_id) == evaluated.count(bos_id) == (1 if variant == "llama3" else 0)
    if variant == "llama3":
        assert "Today Date: 05 Dec 2026" in AutoTokenizer.from_pretrained(model).decode(evaluated)
