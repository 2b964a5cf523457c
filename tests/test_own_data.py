"""A user's own data as it comes: MetaMathQA-style records trained as written, evaluated on
another source, the prompt asking for the training data's answer form; a mix trained alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import mathtune
from conftest import tiny_train_config
from synthetic_run import full_eval_summary, full_train_summary

from mathtune.core.errors import MathtuneError


def metamath_folder(small_data_dir: Path, out: Path, *, boxed_every: int = 0) -> Path:
    """small_data_dir's train split as MetaMathQA writes it: fields query/response, each
    response ending 'The answer is: N.' (every boxed_every-th ending in \\boxed{N} instead)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, line in enumerate((small_data_dir / "train.jsonl").read_text().splitlines()):
        r = json.loads(line)
        work, number = r["answer"].rsplit("####", 1)
        ending = f"\\boxed{{{number.strip()}}}" if boxed_every and i % boxed_every == 0 else \
            f"The answer is: {number.strip()}."
        rows.append({"query": r["question"], "response": f"{work.strip()}\n{ending}"})
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def own_config(tiny_model_dir, small_data_dir, tmp_path, *overrides):
    own = metamath_folder(small_data_dir, tmp_path / "own", boxed_every=4)
    return tiny_train_config(tiny_model_dir, own, "data.fields.question=query", "data.fields.answer=response",
                             f"eval.source={small_data_dir}", "eval.fields={question: question, answer: answer}",
                             *overrides)


def test_own_data_trains_as_written_and_evaluates_on_another_source(tmp_path, tiny_model_dir, small_data_dir):
    from mathtune.evaluation.request import EvalRequest, load_problems, protocol_text
    from mathtune.models.load import load_tokenizer
    from mathtune.task.training_set import training_set
    from mathtune.train.trainer import gold_examples

    config = own_config(tiny_model_dir, small_data_dir, tmp_path)
    data = training_set(config)
    assert data.forms == {"The answer is: N": 12, "\\boxed{N}": 4}  # 16 problems (train_limit), 1 in 4 boxed
    assert all(p.answer.endswith(("." , "}")) and "####" not in p.answer for p in data.train)  # as written
    request = EvalRequest.from_config(config)
    assert request.data == str(small_data_dir) and request.answer_form == "The answer is: N"
    problems, builder = load_problems(request)
    assert len(problems) == 24 and problems[0].form == "#### N"  # GSM8K's own test records
    tok = load_tokenizer(str(tiny_model_dir))
    prompt = builder.render(problems[0].question, tok)
    assert "'The answer is: <number>'" in prompt and "####" not in prompt
    # Training feeds the same prompt text the evaluation renders, then the solution as written.
    example = gold_examples(config, tok, data.train[:1], ())[0]
    assert tok.decode(example.prompt_ids).count("The answer is: <number>") == 1
    assert "asks for 'The answer is: N', the training data's answer form" in protocol_text(request, 24)
    # The request remembers the form: a GSM8K-form evaluation is another evaluation.
    assert request.identity()["answer_form"] == "The answer is: N"
    assert "answer_form" not in EvalRequest.from_config(tiny_train_config(tiny_model_dir, small_data_dir)).identity()


def test_without_eval_source_the_test_split_uses_data_fields(tmp_path, tiny_model_dir, small_data_dir):
    from mathtune.evaluation.request import EvalRequest, load_problems

    own = metamath_folder(small_data_dir, tmp_path / "own")
    config = tiny_train_config(tiny_model_dir, own, "data.fields.question=query", "data.fields.answer=response")
    with pytest.raises(MathtuneError, match="data file not found: .*own/test.jsonl"):
        load_problems(EvalRequest.from_config(config))


def test_a_mix_may_train_alone(tmp_path, tiny_model_dir, small_data_dir):
    from mathtune.config import load_config
    from mathtune.task.training_set import training_set

    own = metamath_folder(small_data_dir, tmp_path / "own")
    mix = f"data.mix=[{{source: {own / 'train.jsonl'}, fields: {{question: query, answer: response}}, weight: 0.5}}]"
    config = tiny_train_config(tiny_model_dir, small_data_dir, "data.train_limit=0", mix)
    data = training_set(config)
    half = len((own / "train.jsonl").read_text().splitlines()) // 2  # 30 of GSM8K's first 60, 24 of the 48 shipped
    assert len(data.train) == half and all(p.id.startswith("mix0:") for p in data.train)
    assert len(data.val) == math.ceil(half * 0.1 / 0.9)  # in proportion to the mix's examples
    assert [s["examples"] for s in data.sources] == [0, half]
    with pytest.raises(MathtuneError, match="train_limit 0 trains on data.mix alone"):
        load_config(None, ["data.train_limit=0"])


def test_the_base_evaluation_cache_is_keyed_by_content(tmp_path, tiny_model_dir, small_data_dir, monkeypatch):
    """Kept once, reused for the same model content (at another path too) and settings; a model
    with one byte changed, or another limit, is another evaluation."""
    import shutil

    from mathtune.evaluation.base_cache import keep_base_evaluation, reuse_base_evaluation
    from mathtune.evaluation.records import EvalPaths
    from mathtune.evaluation.request import EvalRequest
    from mathtune.evaluation.summary import eval_summary_json

    monkeypatch.setenv("MATHTUNE_BASE_EVALS", str(tmp_path / "cache"))
    config = tiny_train_config(tiny_model_dir, small_data_dir, "eval.limit=3", "data.prompt_date=2026-12-05")
    made = EvalPaths.for_name(tmp_path / "a", "base")
    made.records.parent.mkdir(parents=True)
    made.records.write_text('{"id": "test-0"}\n')
    made.summary.write_text(json.dumps(full_eval_summary(n=3, wall_time_s=9.0, sessions=[])))
    request = EvalRequest.from_config(config)
    kept = keep_base_evaluation(request, made, tmp_path / "a")
    assert kept is not None and (kept / "key.json").is_file()
    copy = tmp_path / "copy-of-the-model"
    shutil.copytree(tiny_model_dir, copy)
    other = EvalRequest.from_config(tiny_train_config(copy, small_data_dir, "eval.limit=3", "data.prompt_date=2026-12-05"))
    into = EvalPaths.for_name(tmp_path / "b", "base")
    summary = eval_summary_json(reuse_base_evaluation(other, into))
    assert summary["reused_from"]["made_in"] == str((tmp_path / "a").resolve()) and summary["model"] == str(copy)
    assert into.records.read_text() == '{"id": "test-0"}\n' and summary["wall_time_s"] == 9.0
    assert other.differing_settings(json.loads(into.summary.read_text())) == []  # a finished evaluation of this run
    assert reuse_base_evaluation(replace_limit(other, 2), EvalPaths.for_name(tmp_path / "c", "base")) is None
    with open(copy / "config.json", "a") as fh:
        fh.write(" ")
    assert reuse_base_evaluation(other, EvalPaths.for_name(tmp_path / "d", "base")) is None
    monkeypatch.setenv("MATHTUNE_BASE_EVALS", "off")
    assert reuse_base_evaluation(request, EvalPaths.for_name(tmp_path / "e", "base")) is None


def replace_limit(request, limit):
    from dataclasses import replace

    return replace(request, limit=limit)


def test_a_runs_adapter_evaluated_alone_is_asked_for_its_training_form(tmp_path):
    from mathtune.evaluation.records import EvalPaths
    from mathtune.evaluation.request import EvalRequest
    from mathtune.evaluation.resolve import resolve_request

    demo = str(Path(mathtune.__file__).parent / "demo_data")
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}))
    (run / "config.yaml").write_text("data: {prompt_date: 2026-12-05}\n")
    (run / "train" / "summary.json").write_text(json.dumps(full_train_summary(prompt_answer_form="The answer is: N")))
    request = EvalRequest.with_config_defaults("some/model", adapter=str(run / "adapter"), data=demo)
    settled = resolve_request(request, EvalPaths.for_name(tmp_path / "out", "x"))
    assert (settled.answer_form, settled.prompt_date) == ("The answer is: N", "2026-12-05")
    alone = EvalRequest.with_config_defaults("some/model", data=demo)
    assert resolve_request(alone, EvalPaths.for_name(tmp_path / "out", "y")).answer_form == "#### N"
