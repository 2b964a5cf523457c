"""One token sequence for training and evaluation: the ids a training example feeds are the
evaluation prompt's ids for its question, then the answer's ids and the end token.

    ids = prompt_ids(builder.render(question, tokenizer), tokenizer, "chat")   # what evaluation feeds
    example = training_example(problem, tokenizer, "chat", date="2026-12-05")
    example.input_ids[:len(example.prompt_ids)] == example.prompt_ids          # always

A chat template writes its own special tokens (Llama 3's <|begin_of_text|>, Gemma's <bos>), so
a rendered chat prompt is tokenized without the tokenizer's; a few-shot prompt gets the
tokenizer's (a BOS token, for models that have one), as lm-eval gives it. Tokenizing the
training text a second time with special tokens on, as a trainer given text does, would put a
second BOS in front of every Llama 3 example and an <s> evaluation never sees in front of every
TinyLlama one; so mathtune tokenizes its examples here and hands the trainer ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.task.data import Problem
from mathtune.task.answers import HASH_FORM
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.prompts import template_turn_end, training_pair


def adds_special_tokens(kind: str) -> bool:
    """Whether the tokenizer's own special tokens go around a prompt of this kind (see above)."""
    return not PROMPT_KIND_TABLE.get(kind).chat


def prompt_ids(text: str, tokenizer, kind: str) -> list[int]:
    """A rendered prompt's ids, exactly as evaluation feeds them to the model."""
    return tokenizer(text, add_special_tokens=adds_special_tokens(kind))["input_ids"]


@dataclass(frozen=True)
class TrainingExample:
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]  # the answer, its turn end, and the end token: what carries the loss

    @property
    def input_ids(self) -> list[int]:
        return list(self.prompt_ids + self.answer_ids)

    @property
    def loss_mask(self) -> list[int]:
        return [0] * len(self.prompt_ids) + [1] * len(self.answer_ids)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def example_from_text(prompt: str, answer: str, tokenizer, kind: str) -> TrainingExample:
    """The example of a (prompt, answer) text pair. The answer's ids are those of the whole
    text after the prompt's, so a word is split as in running text; where the tokenizer merges
    across the boundary (the prompt's ids are then no prefix of the whole), the answer is
    tokenized on its own, since the prompt's ids are what the model is given at evaluation.

    The tokenizer's end token closes a few-shot answer (as trainers append it), and a chat
    answer only where the template writes no turn end at all: after Gemma's <end_of_turn> or
    Qwen's <|im_end|> the format has no <eos>, and training one would teach a token the model
    never writes there."""
    head = prompt_ids(prompt, tokenizer, kind)
    whole = tokenizer(prompt + answer, add_special_tokens=adds_special_tokens(kind))["input_ids"]
    eos = tokenizer.eos_token_id
    if whole[:len(head)] == head:
        tail = whole[len(head):]
    else:
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"]
    closed_by_template = PROMPT_KIND_TABLE.get(kind).chat and bool(template_turn_end(tokenizer).strip())
    if eos is not None and not closed_by_template and (not tail or tail[-1] != eos):
        tail = tail + [eos]
    return TrainingExample(tuple(head), tuple(tail))


def training_example(problem: Problem, tokenizer, kind: str = "chat", *, date: str | None = None,
                     solution: str | None = None, fewshot: tuple[Problem, ...] = (),
                     thinking: str = "auto", answer_form: str = HASH_FORM) -> TrainingExample:
    """The supervised example of one problem: its evaluation prompt, then the solution (the
    gold one unless given: RFT passes the model's own), in the template's thinking mode."""
    prompt, answer = training_pair(problem, tokenizer, kind, date=date, solution=solution, fewshot=fewshot,
                                   thinking=thinking, answer_form=answer_form)
    return example_from_text(prompt, answer, tokenizer, kind)
