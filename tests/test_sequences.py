"""One token sequence: what training feeds is the evaluation prompt's ids, then the answer's and
the end token, for tokenizers that add a BOS and templates that write one or a date; and a
dated template renders the same prompt on any day."""

import datetime
import json
import sys

import pytest
from tokenizers import processors

from conftest import tiny_train_config
from mathtune.core.errors import MathtuneError
from mathtune.task.data import load_split
from mathtune.task.prompts import make_prompt_builder, training_pair
from mathtune.task.sequences import prompt_ids, training_example
from mathtune.evaluation.summary import eval_summary_json as as_json
from mathtune.evaluation.resolve import settled
from tiny import build_tokenizer, corpus_from_jsonl

# Short templates in the manner of the families' own (written here; nothing is read from a hub).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% if date_string is not defined %}{% set date_string = strftime_now('%d %b %Y') %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
TINYLLAMA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}</s>\n"
    "{% else %}<|assistant|>\n{{ m['content'] }}</s>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Calls strftime_now itself, ignoring date_string.
CLOCK_TEMPLATE = ("{{ strftime_now('%Y-%m-%d') }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                  "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bos_tokenizer(corpus, bos: str, template: str, extra: list[str]):
    """A small BPE tokenizer whose post-processor prepends `bos`, as Llama's and Mistral's do."""
    tok = build_tokenizer(corpus, specials=["<|endoftext|>", bos, *extra, "</s>" if "</s>" not in extra else "<pad>"])
    tok.bos_token = bos
    tok.eos_token = extra[-1] if extra else "</s>"
    bos_id = tok.convert_tokens_to_ids(bos)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    tok.chat_template = template
    return tok


@pytest.fixture(scope="module")
def corpus(small_data_dir):
    return corpus_from_jsonl(small_data_dir / "train.jsonl")


@pytest.fixture(scope="module")
def problem(small_data_dir):
    return load_split(str(small_data_dir), "train")[0]


def test_llama3_style_bos_appears_once_and_the_eval_prompt_is_the_training_prefix(corpus, problem):
    tok = bos_tokenizer(corpus, "<|begin_of_text|>", LLAMA3_TEMPLATE,
                        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    # What the tokenizer alone does with the rendered text: the BOS twice (the template's and its own).
    text = make_prompt_builder("chat", date="2026-12-05").render(problem.question, tok)
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 2
    example = training_example(problem, tok, "chat", date="2026-12-05")
    assert example.input_ids.count(tok.bos_token_id) == 1 and example.input_ids[0] == tok.bos_token_id
    assert list(example.prompt_ids) == prompt_ids(text, tok, "chat")
    assert example.input_ids[:len(example.prompt_ids)] == list(example.prompt_ids)
    assert example.loss_mask == [0] * len(example.prompt_ids) + [1] * len(example.answer_ids)
    assert tok.decode(example.answer_ids).endswith(f"#### {problem.gold}<|eot_id|>")


def test_tinyllama_style_training_never_sees_an_s_that_evaluation_does_not(corpus, problem):
    tok = bos_tokenizer(corpus, "<s>", TINYLLAMA_TEMPLATE, ["<|user|>", "<|assistant|>", "</s>"])
    example = training_example(problem, tok, "chat")
    assert tok.convert_ids_to_tokens(example.input_ids[0]) == "<|user|>"  # as the template writes it: no <s>
    assert tok.bos_token_id not in example.input_ids
    assert list(example.prompt_ids) == prompt_ids(make_prompt_builder("chat").render(problem.question, tok), tok, "chat")
    # A few-shot prompt gets the tokenizer's BOS, once, in both.
    few = training_example(problem, tok, "cot8")
    assert few.input_ids.count(tok.bos_token_id) == 1 and few.input_ids[0] == tok.bos_token_id
    assert tok.decode(few.answer_ids, skip_special_tokens=True).startswith(" ")  # 'A: ...', as the exemplars


def test_the_datasets_training_builds_hold_exactly_these_ids(tiny_model_dir, small_data_dir):
    from mathtune.models.load import load_tokenizer
    from mathtune.task.data import training_splits
    from mathtune.train.trainer import build_datasets

    config = tiny_train_config(tiny_model_dir, small_data_dir, "data.train_limit=4")
    tok = load_tokenizer(str(tiny_model_dir))
    train_set, _, _ = build_datasets(config, tok)
    train, _ = training_splits(str(small_data_dir), val_fraction=config.data.val_fraction, seed=config.seed,
                               train_limit=4)
    expected = [training_example(p, tok, "chat") for p in train]
    assert train_set["input_ids"] == [e.input_ids for e in expected]
    assert train_set["completion_mask"] == [e.loss_mask for e in expected]


class _Day(datetime.datetime):
    today_is = datetime.datetime(2026, 12, 5)

    @classmethod
    def now(cls, tz=None):
        return cls.today_is


@pytest.mark.parametrize("template", [LLAMA3_TEMPLATE, CLOCK_TEMPLATE], ids=["date_string", "strftime_now"])
def test_a_dated_template_renders_the_same_prompt_on_another_day(corpus, problem, monkeypatch, template):
    tok = bos_tokenizer(corpus, "<|begin_of_text|>", template, ["<|start_header_id|>", "<|end_header_id|>",
                                                                 "<|im_start|>", "<|im_end|>", "<|eot_id|>"])
    module = sys.modules["transformers.utils.chat_template_utils"]
    builder = make_prompt_builder("chat", date="2026-12-05")
    rendered = {}
    for day in (datetime.datetime(2026, 12, 5, 23, 59), datetime.datetime(2026, 12, 6, 0, 1)):
        monkeypatch.setattr(module, "datetime", type("Day", (_Day,), {"today_is": day}))
        rendered[day.day] = (builder.render(problem.question, tok), training_pair(problem, tok, date="2026-12-05"))
        # The faked clock is what the template reads when it is rendered as it comes.
        as_it_comes = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
        assert day.strftime("%Y-%m-%d") in as_it_comes or day.strftime("%d %b %Y") in as_it_comes
    assert rendered[5] == rendered[6]
    assert "05 Dec 2026" in rendered[5][0] or "2026-12-05" in rendered[5][0]


def test_a_template_that_does_not_render_a_reply_after_its_prompt_is_refused(corpus, problem):
    tok = build_tokenizer(corpus)
    # The reply is written under another header than the generation prompt's.
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}")
    with pytest.raises(MathtuneError, match="does not render a reply as the evaluation prompt followed by the answer"):
        training_example(problem, tok, "chat")


def test_a_resume_from_records_of_other_prompts_is_refused(tiny_model_dir, small_data_dir, tmp_path):
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest

    req = EvalRequest.with_config_defaults(str(tiny_model_dir), data=str(small_data_dir), limit=3, max_new_tokens=4,
                      prompt_date="2026-12-05")
    as_json(evaluate(settled(req, tmp_path / "full", "m"), tmp_path / "full", name="m"))
    records = [json.loads(line) for line in (tmp_path / "full" / "eval" / "m.jsonl").read_text().splitlines()]
    eval_dir = tmp_path / "resumed" / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "m.partial.json").write_text(json.dumps(req.identity()))
    changed = dict(records[0], prompt=records[0]["prompt"].replace("Solve", "Answer"))
    (eval_dir / "m.partial.jsonl").write_text(json.dumps(changed) + "\n")
    with pytest.raises(MathtuneError, match="made from other prompts"):
        as_json(evaluate(settled(req, tmp_path / "resumed", "m"), tmp_path / "resumed", name="m"))
    summary = as_json(evaluate(settled(req, tmp_path / "resumed", "m"), tmp_path / "resumed", name="m", overwrite=True))  # starts again
    assert summary["n"] == 3 and summary["prompt_date"] == "2026-12-05"


def test_standalone_eval_records_its_date_and_keeps_it_on_a_rerun(tiny_model_dir, small_data_dir, tmp_path):
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest

    req = EvalRequest.with_config_defaults(str(tiny_model_dir), data=str(small_data_dir), limit=2, max_new_tokens=4,
                      prompt="chat-verify")
    summary = as_json(evaluate(settled(req, tmp_path, "v"), tmp_path, name="v"))
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    assert summary["prompt_date"] == today
    record = json.loads((tmp_path / "eval" / "v.jsonl").read_text().splitlines()[0])
    assert record["final_turn_prompt"].startswith(record["prompt"])  # the second turn's exact prompt, kept
    assert record["final_turn_prompt"].endswith("<|im_start|>assistant\n")
    # Rerun with the recorded date gone from the request: it is read back, and nothing is redone.
    assert as_json(evaluate(settled(req, tmp_path, "v"), tmp_path, name="v"))["prompt_date"] == today


def test_plan_show_example_json(tiny_model_dir, small_data_dir, tmp_path, capsys):
    from mathtune.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name_or_path: {tiny_model_dir}}}\ndata: {{source: {small_data_dir}, train_limit: 8}}\n")
    args = ["plan", str(config), "--json", "--device", "cpu", "--show-example", "1"]
    assert main(args) == 0
    example = json.loads(capsys.readouterr().out)["example"]
    ids, mask, prompt = example["train_input_ids"], example["train_loss_mask"], example["eval_prompt_ids"]
    assert len(ids) == len(mask) and ids[:len(prompt)] == prompt
    assert mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    assert example["eval_prompt_is_training_prefix"] is True and example["id"].startswith("train-")

    assert main(args[:2] + args[3:]) == 0  # the text view: one token per line, the verdict last
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[-1].startswith("the evaluation prompt is exactly the training example's first")
    assert any(line.split()[0].endswith("*") for line in lines if line[:6].strip().rstrip("*").isdigit())


def test_run_refuses_such_a_template_in_one_line_before_writing(tiny_model_dir, small_data_dir, tmp_path, capsys):
    import shutil

    from transformers import AutoTokenizer

    from mathtune.cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}")
    tok.save_pretrained(model)
    config = tmp_path / "c.yaml"
    config.write_text(f"name: t\nmodel: {{name_or_path: {model}}}\ndata: {{source: {small_data_dir}, train_limit: 8}}\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not render a reply as the evaluation prompt followed by the answer" in err[0]
    assert not (tmp_path / "run").exists()
