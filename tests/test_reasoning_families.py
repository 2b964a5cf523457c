"""Reasoning models (Qwen3 hybrid and Thinking-2507, DeepSeek-R1-Distill-Qwen) on their real
tokenizers and templates (tests/families.py), and the template fixes of the other families:
thinking is a stated setting applied alike to training and evaluation, no empty think block is
ever trained, a template that opens <think> in its prompt trains the thinking format or is
refused by name, Llama 3.1 keeps its own date, Gemma trains no <eos> after <end_of_turn>, and an
ordinary '</s>' is no stop token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from families import FAMILIES, LLAMA31_TEMPLATE, REASONING_FAMILIES, build_family_tokenizer, build_qwen_vocab_model, \
    build_qwen_vocab_tokenizer
from tiny import corpus_from_jsonl
from mathtune.cli import main
from mathtune.core.errors import MathtuneError
from mathtune.task.data import Problem
from mathtune.task.prompts import clean_solution, make_prompt_builder, training_pair
from mathtune.task.sequences import prompt_ids, training_example

pytestmark = pytest.mark.usefixtures("one_thread")

PROBLEM = Problem(id="train-0", question="Janet has 16 eggs and eats 3. She sells the rest at $2 each. How much?",
                  answer="She sells 16 - 3 = <<16-3=13>>13 eggs.\nShe makes 13 * 2 = <<13*2=26>>26 dollars.\n#### 26",
                  gold="26")
STEPS = "She sells 16 - 3 = 13 eggs.\nShe makes 13 * 2 = 26 dollars."
DATE = "2026-12-05"


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    return {name: build_qwen_vocab_tokenizer(family) for name, family in REASONING_FAMILIES.items()}


def pair(tokenizer, thinking: str) -> tuple[str, str]:
    return training_pair(PROBLEM, tokenizer, "chat", date=DATE, thinking=thinking)


def eval_prompt(tokenizer, thinking: str) -> str:
    return make_prompt_builder("chat", date=DATE, thinking=thinking).render(PROBLEM.question, tokenizer)


def assert_consistent(tokenizer, thinking: str) -> tuple[list[int], list[int]]:
    """The training example starts with exactly the evaluation prompt's ids; returns (prompt, answer) ids."""
    example = training_example(PROBLEM, tokenizer, "chat", date=DATE, thinking=thinking)
    evaluated = prompt_ids(eval_prompt(tokenizer, thinking), tokenizer, "chat")
    assert list(example.prompt_ids) == evaluated
    assert example.loss_mask == [0] * len(evaluated) + [1] * len(example.answer_ids)
    return evaluated, list(example.answer_ids)


def think_ids(tokenizer) -> tuple[int, int]:
    return tokenizer.convert_tokens_to_ids("<think>"), tokenizer.convert_tokens_to_ids("</think>")


# --- Qwen3 hybrid -----------------------------------------------------------------------------------

def test_qwen3_thinking_off_trains_the_non_thinking_prompt_and_no_think_tags(tokenizers):
    tok = tokenizers["qwen3"]
    prompt, answer = pair(tok, "off")
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the template's non-thinking prompt
    assert answer == clean_solution(PROBLEM.answer) + "<|im_end|>"
    head, answer_ids = assert_consistent(tok, "off")
    opened, closed = think_ids(tok)
    assert (opened, closed) == (151667, 151668)
    assert opened not in answer_ids and closed not in answer_ids  # no think tag under the loss
    assert answer_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")  # the turn end, and no eos after it


@pytest.mark.parametrize("thinking", ["auto", "on"])
def test_qwen3_thinking_on_trains_the_steps_inside_the_think_block(tokenizers, thinking):
    """auto is the template's default, which thinks: the reply is the thinking format, as the
    template itself renders a reply with reasoning, never its empty think block."""
    tok = tokenizers["qwen3"]
    prompt, answer = pair(tok, thinking)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert answer == f"<think>\n{STEPS}\n</think>\n\n#### 26<|im_end|>"
    # The template renders exactly this reply from the reasoning and the answer.
    rendered = tok.apply_chat_template([{"role": "user", "content": "q"},
                                        {"role": "assistant", "content": f"<think>\n{STEPS}\n</think>\n\n#### 26"}],
                                       tokenize=False)
    assert rendered.endswith(answer + "\n")
    _, answer_ids = assert_consistent(tok, thinking)
    opened, closed = think_ids(tok)
    assert answer_ids[0] == opened and answer_ids.count(closed) == 1
    assert answer_ids[answer_ids.index(closed) - 1] != opened  # never an empty block


# --- templates that open the think block in the prompt -----------------------------------------------

@pytest.mark.parametrize("name, header", [("qwen3-thinking-2507", "<|im_start|>assistant\n<think>\n"),
                                          ("r1-distill-qwen", "<｜Assistant｜><think>\n")])
def test_a_prompt_that_opens_think_trains_the_reasoning_then_the_answer(tokenizers, name, header):
    tok = tokenizers[name]
    family = REASONING_FAMILIES[name]
    for thinking in ("auto", "on"):
        prompt, answer = pair(tok, thinking)
        assert prompt.endswith(header)
        assert answer == f"{STEPS}\n</think>\n\n#### 26{family.turn_end}"
        head, answer_ids = assert_consistent(tok, thinking)
        opened, closed = think_ids(tok)
        assert head[-2:] == [opened, tok.convert_tokens_to_ids("Ċ")] and opened not in answer_ids
        assert answer_ids.count(closed) == 1 and answer_ids[0] != closed
        assert answer_ids[-1] == tok.convert_tokens_to_ids(family.turn_end)
        if family.bos_token:  # R1's template writes its BOS; the tokenizer's own is not added again
            assert head.count(tok.bos_token_id) == 1 and head[0] == tok.bos_token_id


@pytest.mark.parametrize("name", ["qwen3-thinking-2507", "r1-distill-qwen"])
def test_thinking_off_is_refused_by_name_where_the_template_always_thinks(tokenizers, name):
    tok = tokenizers[name]
    for call in (lambda: pair(tok, "off"), lambda: eval_prompt(tok, "off")):
        with pytest.raises(MathtuneError) as err:
            call()
        text = str(err.value)
        assert "<think>" in text and "model.thinking auto or on" in text and "eval.prompt" in text, text


def test_qwen_vocabularies_do_not_stop_on_an_ordinary_end_of_sentence(tokenizers, tmp_path):
    """'</s>' is ordinary text in Qwen's vocabulary (128247): neither a stop token nor a stop string."""
    from mathtune.models.generate import stop_token_ids

    tok = tokenizers["qwen3"]
    assert tok.convert_tokens_to_ids("</s>") == 128247 and "</s>" not in tok.all_special_tokens

    class Model:
        class generation_config:
            eos_token_id = [151645, 151643]

    builder = make_prompt_builder("chat", thinking="off")
    assert 128247 not in stop_token_ids(tok, Model, builder.stops_for(tok))
    assert "</s>" not in builder.stops_for(tok) and "<|im_end|>" in builder.stops_for(tok)


# --- the other families' defaults --------------------------------------------------------------------

def test_llama31_keeps_its_own_date_and_llama32_gets_the_runs(small_data_dir):
    corpus = corpus_from_jsonl(small_data_dir / "train.jsonl")
    tok = build_family_tokenizer(FAMILIES["llama3"], corpus[:50])
    assert "Today Date: 05 Dec 2026" in eval_prompt(tok, "auto")  # 3.2: reads the clock, held to the run's day
    tok.chat_template = LLAMA31_TEMPLATE
    prompt = eval_prompt(tok, "auto")
    assert "Today Date: 26 Jul 2024" in prompt, prompt[:200]  # 3.1: its fixed date, as transformers renders it
    assert prompt == tok.apply_chat_template([{"role": "user", "content": prompt.split("user<|end_header_id|>\n\n")[1]
                                               .split("<|eot_id|>")[0]}], tokenize=False, add_generation_prompt=True)


def test_gemma_trains_no_eos_after_its_turn_end(small_data_dir):
    family = FAMILIES["gemma3"]
    tok = build_family_tokenizer(family, corpus_from_jsonl(small_data_dir / "train.jsonl")[:50])
    example = training_example(PROBLEM, tok, "chat", date=DATE)
    answer = list(example.answer_ids)
    assert answer[-1] == tok.convert_tokens_to_ids("<end_of_turn>") and tok.eos_token_id not in answer


# --- end to end -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def r1_model(tmp_path_factory) -> Path:
    return build_qwen_vocab_model(REASONING_FAMILIES["r1-distill-qwen"], tmp_path_factory.mktemp("r1"))


@pytest.mark.slow  # about 40 s on 2 CPU cores: a 152k-vocabulary model trains and decodes
def test_r1_distill_runs_end_to_end_with_one_token_sequence(r1_model, small_data_dir, tmp_path, capsys):
    """`mathtune run` on DeepSeek-R1-Distill-Qwen: the thinking format is trained on the
    evaluation prompt's ids, the mode is stated in the plan, the summaries and the report, and
    a completion that never closed its think block has no answer and counts as truncated."""
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    sets = [f"model.name_or_path={r1_model}", f"data.source={small_data_dir}", "data.train_limit=4", "train.epochs=1",
            "train.batch_size=2", "train.eval_every_steps=2", "train.report_to=[]", "eval.limit=2",
            "eval.max_new_tokens=4", "eval.batch_size=2", "model.thinking=on", "name=r1"]
    args = [a for s in sets for a in ("--set", s)]
    assert main(["plan", str(config), *args, "--show-example", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["prompts"]["thinking"] == "on" and plan["example"]["thinking"] == "on"
    assert plan["example"]["eval_prompt_is_training_prefix"] and not plan["example"]["loss_on_prompt"]
    tok = AutoTokenizer.from_pretrained(r1_model)
    trained = plan["example"]["train_input_ids"][len(plan["example"]["eval_prompt_ids"]):]
    assert tok.convert_tokens_to_ids("</think>") in trained and tok.convert_tokens_to_ids("<think>") not in trained

    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), *args]) == 0
    for which in ("base", "tuned"):
        summary = json.loads((out / "eval" / f"{which}.summary.json").read_text())
        assert summary["thinking"] == "on" and "template thinking on" in summary["protocol"]
        for record in map(json.loads, (out / "eval" / f"{which}.jsonl").read_text().splitlines()):
            assert record["prompt"].endswith("<｜Assistant｜><think>\n")
            if "</think>" not in record["completion"]:  # a random model rarely closes it in 4 tokens
                assert record["pred_strict"] is None and record["pred_flexible"] is None and record["truncated"]
    report = (out / "report.md").read_text()
    assert "template thinking on" in report and "(budget 4 tokens" in report
    in_think = json.loads((out / "analysis.json").read_text())["benchmark"]["models"]["base"]["truncated_in_think"]
    assert (f"{in_think} still inside a think block" in report) == (in_think > 0)
    # The run's adapter evaluated on its own prompts in the mode it was trained in.
    alone = tmp_path / "alone"
    assert main(["eval", "--model", str(r1_model), "--adapter", str(out / "adapter"), "--data", str(small_data_dir),
                 "--limit", "1", "--max-new-tokens", "2", "--out", str(alone)]) == 0
    (summary,) = list((alone / "eval").glob("*.summary.json"))
    assert json.loads(summary.read_text())["thinking"] == "on"


def test_the_report_counts_truncations_inside_a_think_block_beside_the_budget():
    from synthetic_run import full_eval_summary

    from mathtune.analysis.benchmark import model_accuracy
    from mathtune.core.record_json import from_json
    from mathtune.evaluation.summary import EvalSummary

    records = [
        {"prompt": "<｜Assistant｜><think>\n", "completion": "9*2=18 so", "truncated": True, "correct_strict": False},
        {"prompt": "<｜Assistant｜><think>\n", "completion": "x</think>\n\n#### 18", "truncated": False,
         "correct_strict": True},
        {"prompt": "<|im_start|>assistant\n", "completion": "#### 1 and then 2 and", "truncated": True},
    ]
    figures = model_accuracy(records, from_json(EvalSummary, full_eval_summary(max_new_tokens=4, sessions=[]), "summary"))
    assert (figures["truncated"], figures["truncated_in_think"], figures["max_new_tokens"]) == (2, 1, 4)


def test_own_samples_and_grpo_are_refused_where_the_template_thinks(tokenizers):
    from mathtune.config import Config
    from mathtune.train.grpo import prompt_rows

    with pytest.raises(MathtuneError, match="model.thinking off, or train.method sft"):
        training_pair(PROBLEM, tokenizers["qwen3"], "chat", date=DATE, thinking="auto", solution="#### 26")
    assert training_pair(PROBLEM, tokenizers["qwen3"], "chat", date=DATE, thinking="off", solution="So #### 26")[1] \
        == "So #### 26<|im_end|>"  # off: the model's own solution, as any non-thinking reply
    config = Config().model_copy(update={"data": Config().data.model_copy(update={"prompt_date": DATE})})
    with pytest.raises(MathtuneError, match="grpo with a chat template that opens a think block"):
        prompt_rows(config, tokenizers["r1-distill-qwen"], [PROBLEM])
    assert prompt_rows(config, tokenizers["qwen3"], [PROBLEM])[0]["gold"] == "26"  # Qwen3's prompt opens none
