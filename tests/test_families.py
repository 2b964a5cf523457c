"""Every model family a user fine-tunes, on a tiny random model of its architecture with its
tokenizer's conventions (tests/families.py): training feeds the evaluation prompt's ids followed
by the answer's, BOS appears once where the family writes one, the turn end stops generation,
the adapter's modules exist, the merged export reloads with plain transformers, and a template
that writes today's date gives the same prompt on any day."""

from __future__ import annotations

import contextlib
import datetime
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from families import FAMILIES, build_family_model
from tiny import corpus_from_jsonl
from mathtune.cli import main
from mathtune.config import load_config
from mathtune.task.data import DataFormat, training_splits
from mathtune.task.prompts import clean_solution

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = list(FAMILIES)
DAY_ONE, DAY_TWO = datetime.datetime(2026, 12, 5, 23, 50), datetime.datetime(2026, 12, 6, 0, 10)


@pytest.fixture(scope="module")
def corpus(small_data_dir) -> list[str]:
    return corpus_from_jsonl(small_data_dir / "train.jsonl", small_data_dir / "test.jsonl")


@pytest.fixture(scope="module")
def family_model(tmp_path_factory, corpus):
    """family name -> its tiny model's folder (built once per module)."""
    built: dict[tuple[str, bool], Path] = {}

    def get(name: str, stuck_on_turn_end: bool = False) -> Path:
        key = (name, stuck_on_turn_end)
        if key not in built:
            out = tmp_path_factory.mktemp(f"{name}-stuck" if stuck_on_turn_end else name)
            built[key] = build_family_model(FAMILIES[name], out, corpus, stuck_on_turn_end=stuck_on_turn_end)
        return built[key]

    return get


def overrides(model: Path, data: Path, name: str, *extra: str) -> list[str]:
    sets = [f"model.name_or_path={model}", f"data.source={data}", "data.train_limit=8", "train.epochs=1",
            "train.batch_size=4", "train.eval_every_steps=2", "train.report_to=[]", "eval.limit=2",
            "eval.max_new_tokens=8", "eval.batch_size=2", f"name={name}", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def config_file(folder: Path) -> Path:
    path = folder / "config.yaml"
    path.write_text("seed: 1\n")
    return path


def ids_of(tokenizer, *tokens: str) -> set[int]:
    return {tokenizer.convert_tokens_to_ids(t) for t in tokens}


def gold_solutions(data: Path) -> set[str]:
    lines = (data / "train.jsonl").read_text().splitlines()
    return {clean_solution(json.loads(line)["answer"]) for line in lines if line.strip()}


@contextlib.contextmanager
def clock_at(moment: datetime.datetime):
    """Every reader of datetime.datetime.now (mathtune's, and transformers' strftime_now, which
    imported the class by name) sees `moment`."""
    import transformers.utils.chat_template_utils as chat_utils

    # pandas' C extensions (which `datasets` imports on first use, inside a run) crash when
    # first imported while datetime.datetime is replaced: load them on the real class.
    import datasets  # noqa: F401
    import pandas  # noqa: F401

    real = datetime.datetime

    class Frozen(real):
        @classmethod
        def now(cls, tz=None):
            return moment.replace(tzinfo=tz) if tz is not None else moment

        @classmethod
        def utcnow(cls):
            return moment

    saved = chat_utils.datetime
    datetime.datetime = Frozen
    chat_utils.datetime = Frozen
    try:
        yield
    finally:
        datetime.datetime = real
        chat_utils.datetime = saved


# --- plan --show-example: the training example is the evaluation prompt, then the answer ----------

# (data.prompt, eval.prompt): chat-verify trains as chat, and its first turn is the chat prompt.
@pytest.mark.parametrize("prompt, evaluated_as", [("chat", "chat"), ("chat", "chat-verify"), ("cot8", "cot8"),
                                                  ("plain5", "plain5")])
@pytest.mark.parametrize("name", NAMES)
def test_training_example_is_the_evaluation_prompt_then_the_answer(name, prompt, evaluated_as, family_model,
                                                                    small_data_dir, tmp_path, capsys):
    family = FAMILIES[name]
    model = family_model(name)
    argv = ["plan", str(config_file(tmp_path)), "--show-example", "--json",
            *overrides(model, small_data_dir, name, f"data.prompt={prompt}", f"eval.prompt={evaluated_as}",
                      "data.max_length=2048")]  # the few-shot prompts run to ~900 tokens
    assert main(argv) == 0
    example = json.loads(capsys.readouterr().out)["example"]
    train, mask, evaluated = example["train_input_ids"], example["train_loss_mask"], example["eval_prompt_ids"]
    tokenizer = AutoTokenizer.from_pretrained(model)

    assert train[:len(evaluated)] == evaluated, (name, prompt, train[:len(evaluated) + 2], evaluated)
    assert mask == [0] * len(evaluated) + [1] * (len(train) - len(evaluated)), (name, prompt)
    assert len(train) > len(evaluated)

    bos = tokenizer.bos_token_id
    if family.writes_bos or (family.prepends_bos and prompt != "chat"):
        # The chat template writes it (rendered text tokenized without the tokenizer's own);
        # a few-shot prompt gets the tokenizer's, as lm-eval gives it.
        assert evaluated[0] == bos and evaluated.count(bos) == 1 and train.count(bos) == 1, (name, prompt, evaluated[:3])
    elif bos is not None:
        assert bos not in train, (name, prompt, train[:3])

    answer = train[len(evaluated):]
    assert answer[-1] in ids_of(tokenizer, *family.answer_closings), (name, prompt, answer[-3:])
    if prompt == "chat":
        # The reply's turn is closed by the family's own token, which is what evaluation stops at.
        assert tokenizer.convert_tokens_to_ids(family.turn_end) in answer, (name, answer[-3:])
    solution = tokenizer.decode(answer, skip_special_tokens=True).strip()
    assert solution in gold_solutions(small_data_dir), (name, prompt, solution[:80])


def test_show_example_takes_an_example_number(family_model, small_data_dir, tmp_path, capsys):
    model = family_model("llama3")
    base = ["plan", str(config_file(tmp_path)), *overrides(model, small_data_dir, "llama3")]
    assert main(base + ["--show-example", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["example"]
    assert main(base + ["--show-example", "3", "--json"]) == 0
    fourth = json.loads(capsys.readouterr().out)["example"]
    assert first["id"] != fourth["id"] and first["train_input_ids"] != fourth["train_input_ids"]
    # The human view, token by token, ends by saying whether the prompt is the training prefix.
    assert main(base + ["--show-example", "3"]) == 0
    text = capsys.readouterr().out
    assert "<|begin_of_text|>" in text and "<|eot_id|>" in text
    last = text.strip().splitlines()[-1]
    assert "evaluation prompt" in last and "exactly" in last and str(len(fourth["eval_prompt_ids"])) in last, last


# --- a short `mathtune run` per family -------------------------------------------------------------

@pytest.fixture(scope="module")
def family_run(tmp_path_factory, family_model, small_data_dir):
    """family name -> its finished `mathtune run` folder (train, evaluate base and tuned, report)."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            folder = tmp_path_factory.mktemp(f"run-{name}")
            out = folder / name
            argv = ["run", str(config_file(folder)), "--out", str(out), *overrides(family_model(name), small_data_dir, name)]
            assert main(argv) == 0, name
            done[name] = out
        return done[name]

    return get


def records(run: Path, which: str) -> list[dict]:
    return [json.loads(line) for line in (run / "eval" / f"{which}.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", NAMES)
def test_a_run_trains_on_exactly_the_ids_evaluation_feeds(name, family_run, family_model, small_data_dir):
    from mathtune.task.prompts import make_prompt_builder
    from mathtune.task.sequences import prompt_ids
    from mathtune.train.trainer import build_datasets

    family = FAMILIES[name]
    run = family_run(name)
    for f in ("report.md", "report.html", "analysis.json", "adapter/adapter_config.json"):
        assert (run / f).is_file(), f
    # TRL was given ids, so it never re-derived a prompt boundary of its own (and never warned
    # that its tokenized prompt was no prefix of prompt + completion).
    assert "not a prefix" not in (run / "run.log").read_text()
    config = load_config(run / "config.yaml", [])
    tokenizer = AutoTokenizer.from_pretrained(family_model(name))
    builder = make_prompt_builder("chat", date=config.data.prompt_date)

    # What evaluation fed is what the builder renders on the run's date, for base and tuned alike.
    for which in ("base", "tuned"):
        for record in records(run, which):
            assert record["prompt"] == builder.render(record["question"], tokenizer), (name, which, record["id"])

    train_problems, _ = training_splits(config.data.source, val_fraction=config.data.val_fraction, seed=config.seed,
                                        train_limit=config.data.train_limit, fmt=DataFormat.of(config.data))
    train_set, _, counts = build_datasets(config, tokenizer)
    assert counts["dropped_too_long"]["train"] == 0 and len(train_set) == len(train_problems)
    closing = ids_of(tokenizer, *family.answer_closings)
    for problem, row in zip(train_problems, train_set):
        head = prompt_ids(builder.render(problem.question, tokenizer), tokenizer, "chat")
        ids, mask = row["input_ids"], row["completion_mask"]
        assert ids[:len(head)] == head, (name, problem.id, ids[:len(head) + 2], head)
        assert mask == [0] * len(head) + [1] * (len(ids) - len(head)), (name, problem.id)
        answer = ids[len(head):]
        assert tokenizer.decode(answer, skip_special_tokens=True).strip() == clean_solution(problem.answer)
        assert answer[-1] in closing, (name, problem.id, answer[-3:])
        if family.bos_token is not None:
            assert ids.count(tokenizer.bos_token_id) == (1 if family.writes_bos else 0), (name, problem.id, ids[:3])


@pytest.mark.parametrize("name", NAMES)
def test_the_adapter_targets_modules_of_the_model(name, family_run, family_model):
    adapter = json.loads((family_run(name) / "adapter" / "adapter_config.json").read_text())
    targets = adapter["target_modules"]
    targets = [targets] if isinstance(targets, str) else targets
    model = AutoModelForCausalLM.from_pretrained(family_model(name))
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert targets
    for target in targets:
        assert any(n == target or n.endswith("." + target) for n in linear), (name, target, sorted(linear)[:6])
    # all-linear: every projection of every layer, the output head left alone.
    assert {n.rsplit(".", 1)[-1] for n in linear if ".layers." in n} <= {t.rsplit(".", 1)[-1] for t in targets}


@pytest.mark.parametrize("name", NAMES)
def test_export_merges_and_reloads_with_plain_transformers(name, family_run, family_model, tmp_path):
    run = family_run(name)
    merged = tmp_path / "merged"
    assert main(["export", str(run), "--merged", str(merged)]) == 0
    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    original = AutoTokenizer.from_pretrained(family_model(name))
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert tokenizer.get_vocab() == original.get_vocab() and tokenizer.chat_template == original.chat_template
    # The tokenizer as the model has it: no pad token added to Llama 3's or Mistral's, which ship none.
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (original.bos_token, original.eos_token,
                                                                             original.pad_token)

    # The merged model says what the tuned evaluation recorded, from the recorded prompt.
    from mathtune.task.sequences import prompt_ids

    record = records(run, "tuned")[0]
    ids = torch.tensor([prompt_ids(record["prompt"], tokenizer, "chat")])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=record["num_generated_tokens"],
                             do_sample=False)
    generated = out[0, ids.shape[1]:].tolist()
    assert len(generated) == record["num_generated_tokens"]
    assert tokenizer.decode(generated, skip_special_tokens=True).strip() == record["completion"].strip(), name


def test_gemma_runs_with_its_template_refusing_a_system_role(family_run, family_model):
    """mathtune sends the chat prompt as one user turn, so a template that raises on a system
    role (Gemma's) needs nothing from the user."""
    from jinja2 import TemplateError

    tokenizer = AutoTokenizer.from_pretrained(family_model("gemma3"))
    with pytest.raises(TemplateError, match="System role"):
        tokenizer.apply_chat_template([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                                      tokenize=False, add_generation_prompt=True)
    for which in ("base", "tuned"):
        for record in records(family_run("gemma3"), which):
            assert record["prompt"].startswith("<bos><start_of_turn>user\n"), record["prompt"][:40]
            assert record["prompt"].count("<start_of_turn>") == 2  # the user's turn, and the model's to come


def test_mistral_folds_nothing_into_the_user_turn(family_run):
    """The prompt is the instruction and the question in one [INST] turn, with no system text
    for the template to fold in."""
    for record in records(family_run("mistral"), "base"):
        prompt = record["prompt"]
        assert prompt.startswith("<s>[INST] ") and prompt.endswith(" [/INST]") and prompt.count("[INST]") == 1
        assert record["question"] in prompt


# --- the turn end stops generation -----------------------------------------------------------------

@pytest.mark.parametrize("generation_eos", ["family", "tokenizer eos only"])
@pytest.mark.parametrize("name", NAMES)
def test_the_turn_end_stops_generation(name, generation_eos, family_model, small_data_dir, tmp_path):
    """A model whose greedy next token is always its family's turn end: the completion is empty
    after one token, not a run to max_new_tokens. With the generation config listing only the
    tokenizer's eos (as a base model's does), the stop must come from the chat template's
    own turn end."""
    family = FAMILIES[name]
    model = family_model(name, stuck_on_turn_end=True)
    if generation_eos != "family":
        import shutil

        from transformers import GenerationConfig

        model = Path(shutil.copytree(model, tmp_path / "model"))
        config = GenerationConfig.from_pretrained(model)
        config.eos_token_id = AutoTokenizer.from_pretrained(model).eos_token_id
        config.save_pretrained(model)
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(model), "--data", str(small_data_dir), "--limit", "2", "--prompt", "chat",
            "--max-new-tokens", "8", "--out", str(out)]
    assert main(argv) == 0
    written = [json.loads(line) for p in sorted(out.rglob("*.jsonl")) for line in p.read_text().splitlines()]
    assert len(written) == 2, sorted(str(p) for p in out.rglob("*"))
    for record in written:
        assert record["completion"] == "", (name, family.turn_end, record["completion"][:40])
        assert record["truncated"] is False and record["num_generated_tokens"] == 1, (name, record)


# --- a dated template renders the same prompt on any day --------------------------------------------

def test_the_day_changes_the_unpinned_template(family_model):
    """The clock faked below reaches the template: rendered with nothing pinned, the Llama 3
    template writes each day's date (so the tests after this one can fail)."""
    tokenizer = AutoTokenizer.from_pretrained(family_model("llama3"))
    rendered = []
    for moment in (DAY_ONE, DAY_TWO):
        with clock_at(moment):
            rendered.append(tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False,
                                                          add_generation_prompt=True))
    assert "Today Date: 05 Dec 2026" in rendered[0] and "Today Date: 06 Dec 2026" in rendered[1]


def test_a_run_resumed_the_next_day_prompts_as_on_the_first(family_model, small_data_dir, tmp_path):
    """Training and the base evaluation on one day; the tuned evaluation, lost, redone after
    midnight: every prompt of the run still carries the first day's date, byte for byte."""
    out = tmp_path / "run"
    argv = ["run", str(config_file(tmp_path)), "--out", str(out),
            *overrides(family_model("llama3"), small_data_dir, "llama3")]
    with clock_at(DAY_ONE):
        assert main(argv) == 0
    first = {w: records(out, w) for w in ("base", "tuned")}
    assert all("Today Date: 05 Dec 2026" in r["prompt"] for rs in first.values() for r in rs)
    for f in ("eval/tuned.jsonl", "eval/tuned.summary.json", "analysis.json", "report.md", "report.html"):
        (out / f).unlink()
    with clock_at(DAY_TWO):
        assert main(argv) == 0
    again = {w: records(out, w) for w in ("base", "tuned")}
    assert [r["prompt"] for r in again["tuned"]] == [r["prompt"] for r in first["tuned"]]
    assert [r["prompt"] for r in again["base"]] == [r["prompt"] for r in first["base"]]


def test_a_runs_adapter_evaluated_on_its_own_a_day_later_prompts_as_the_run_did(family_model, small_data_dir,
                                                                                  tmp_path):
    """`mathtune eval --adapter RUN/adapter` on the next day takes the run's prompt date from
    RUN/config.yaml: its prompts are the run's tuned prompts, byte for byte."""
    out = tmp_path / "run"
    with clock_at(DAY_ONE):
        assert main(["run", str(config_file(tmp_path)), "--out", str(out),
                     *overrides(family_model("llama3"), small_data_dir, "llama3")]) == 0
    tuned = records(out, "tuned")
    alone = tmp_path / "alone"
    with clock_at(DAY_TWO):
        assert main(["eval", "--model", str(family_model("llama3")), "--adapter", str(out / "adapter"),
                     "--data", str(small_data_dir), "--limit", str(len(tuned)), "--prompt", "chat",
                     "--max-new-tokens", "4", "--out", str(alone)]) == 0
    summary = json.loads(next((alone / "eval").glob("*.summary.json")).read_text())
    assert summary["prompt_date"] == "2026-12-05"
    got = [json.loads(line)["prompt"] for line in next(p for p in (alone / "eval").glob("*.jsonl")
                                                       if not p.name.endswith("partial.jsonl")).read_text().splitlines()]
    assert got == [r["prompt"] for r in tuned]


def test_plan_shows_the_same_example_on_any_day_for_a_pinned_date(family_model, small_data_dir, tmp_path, capsys):
    argv = ["plan", str(config_file(tmp_path)), "--show-example", "--json",
            *overrides(family_model("llama3"), small_data_dir, "llama3", "data.prompt_date=2026-12-05")]
    shown = []
    for moment in (DAY_ONE, DAY_TWO):
        with clock_at(moment):
            assert main(argv) == 0
        shown.append(json.loads(capsys.readouterr().out)["example"])
    assert shown[0] == shown[1]
    tokenizer = AutoTokenizer.from_pretrained(family_model("llama3"))
    assert "Today Date: 05 Dec 2026" in tokenizer.decode(shown[0]["eval_prompt_ids"])


def test_an_evaluation_resumed_the_next_day_keeps_its_date(family_model, small_data_dir, tmp_path, monkeypatch):
    """`mathtune eval` killed after its first problem on one day and resumed on the next: both
    problems are prompted with the first day's date, in one records file."""
    from mathtune.evaluation.evaluate import PartialWriter

    write = PartialWriter.write

    def write_then_die(self, *args, **kwargs):
        write(self, *args, **kwargs)
        raise KeyboardInterrupt  # as Ctrl-C just after the first record reached the disk

    out = tmp_path / "eval"
    argv = ["eval", "--model", str(family_model("llama3")), "--data", str(small_data_dir), "--limit", "2",
            "--prompt", "chat", "--max-new-tokens", "4", "--batch-size", "1", "--out", str(out)]
    monkeypatch.setattr(PartialWriter, "write", write_then_die)
    with clock_at(DAY_ONE), contextlib.suppress(KeyboardInterrupt):
        assert main(argv) != 0
    monkeypatch.undo()
    (partial,) = list(out.rglob("*.partial.jsonl"))
    (killed,) = [json.loads(line) for line in partial.read_text().splitlines()]
    assert "Today Date: 05 Dec 2026" in killed["prompt"]
    with clock_at(DAY_TWO):
        assert main(argv) == 0
    (written,) = [p for p in out.rglob("*.jsonl") if ".partial" not in p.name]
    finished = {r["id"]: r["prompt"] for r in map(json.loads, written.read_text().splitlines())}
    # The killed record is whichever problem decoded first (longest prompt first), not test-0.
    assert len(finished) == 2 and finished[killed["id"]] == killed["prompt"]
    assert all("Today Date: 05 Dec 2026" in p for p in finished.values()), [p[90:140] for p in finished.values()]
