"""A prompt kind and a training method added from outside the package, each one entry in its
table, run end to end on the tiny model: the config accepts their names, training and
evaluation use them, and the report describes them."""

import json

import pytest

from mathtune.cli import main
from mathtune.config import EVAL_PROMPTS, PROMPTS, TRAINING_METHODS, load_config
from mathtune.core.errors import MathtuneError
from mathtune.core.method_kinds import METHOD_KIND_TABLE, MethodKind
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE, PromptKind, register_prompt_kind
from mathtune.train.methods import TRAINING_METHOD_TABLE, TrainingMethod, register_training_method

TOY_PROMPT = "problem0"
TOY_METHOD = "gold-again"


def _forget(table, names: list, name: str) -> None:
    table._entries.pop(name, None)
    if name in names:
        names.remove(name)


@pytest.fixture(scope="module")
def toy_kinds():
    register_prompt_kind(TOY_PROMPT, PromptKind(description="zero-shot 'Problem:/Solution:'",
                                                stops=("Problem:", "\n\n\n"), labels=("Problem:", "Solution:")))
    sft = TRAINING_METHOD_TABLE.get("sft")
    register_training_method(TOY_METHOD, TrainingMethod(datasets=sft.datasets, trainer=sft.trainer),
                             said=MethodKind(description="LoRA fine-tuning on the gold solutions, registered outside"))
    yield
    _forget(PROMPT_KIND_TABLE, EVAL_PROMPTS, TOY_PROMPT)
    PROMPTS.remove(TOY_PROMPT)
    _forget(TRAINING_METHOD_TABLE, TRAINING_METHODS, TOY_METHOD)
    METHOD_KIND_TABLE._entries.pop(TOY_METHOD)


def test_an_unknown_name_is_one_line_naming_the_registered_ones(toy_kinds):
    with pytest.raises(MathtuneError) as err:
        load_config(None, ["train.method=nope"])
    assert str(err.value) == ("--set train.method=nope: config key 'train.method': Input should be 'sft', 'rft', "
                              f"'grpo' or '{TOY_METHOD}' (got 'nope')")
    assert load_config(None, [f"data.prompt={TOY_PROMPT}", f"train.method={TOY_METHOD}"]).train.method == TOY_METHOD


@pytest.mark.slow
def test_a_registered_prompt_kind_and_method_run_end_to_end(toy_kinds, tiny_model_dir, small_data_dir, tmp_path):
    out = tmp_path / "toy"
    overrides = [
        f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=8",
        f"data.prompt={TOY_PROMPT}", f"eval.prompt={TOY_PROMPT}", f"train.method={TOY_METHOD}",
        "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=2", "train.report_to=[]",
        "eval.limit=3", "eval.max_new_tokens=8", "eval.batch_size=3", "name=toy",
    ]
    config = tmp_path / "toy.yaml"
    config.write_text("seed: 3\n")
    argv = ["run", str(config), "--out", str(out)]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    record = json.loads((out / "eval" / "tuned.jsonl").read_text().splitlines()[0])
    assert record["prompt"].startswith("Problem: ") and record["prompt"].endswith("\nSolution:")
    summary = json.loads((out / "eval" / "tuned.summary.json").read_text())
    assert f"prompt {TOY_PROMPT} (zero-shot 'Problem:/Solution:')" in summary["protocol"]
    assert json.loads((out / "train" / "summary.json").read_text())["method"] == TOY_METHOD
    report = (out / "report.md").read_text()
    assert f"Training method: {TOY_METHOD}" in report
    assert "LoRA fine-tuning on the gold solutions, registered outside." in report
