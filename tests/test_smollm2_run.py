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

pytestmark = pytest.mark.slow


def test_smollm2_runs_end_to_end_on_its_own_token_sequence(small_data_dir, tmp_path, capsys):
    gguf = ensure_model("smollm2-135m-instruct")
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
