"""Prompt rendering, shared by training and evaluation so the two cannot drift; what each
prompt kind is (chat, cot8, plain5, chat-verify) is its entry in task.prompt_kinds.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import re
import sys
from dataclasses import dataclass

from mathtune.config import today_utc
from mathtune.core.errors import MathtuneError
from mathtune.task.answers import HASH_FORM, form_pattern
from mathtune.task.data import Problem
from mathtune.task.prompt_kinds import CHAT_STOPS, PROMPT_KIND_TABLE, PromptKind
from mathtune.task.score import THINK_CLOSE, THINK_OPEN, opens_think

# Worded so that small instruct models work before they answer. Measured on the first 16
# GSM8K test problems with Qwen2.5-Coder-0.5B-Instruct: "...then write the final answer on
# its own line as '#### <number>'" made 15 of 16 replies open with a '####' line (a markdown
# heading or a bare guess), and a few LoRA steps on GSM8K solutions then turned that opening
# into an answer with no working at all; this wording: 1 of 16.
CHAT_INSTRUCTION = (
    "Solve the math problem below. Explain your reasoning step by step. After the reasoning, "
    "end with a line of the form '#### <number>' that gives the final answer."
)


def chat_instruction(answer_form: str = HASH_FORM) -> str:
    """The chat prompt's instruction, asking for the answer in the training data's form."""
    return CHAT_INSTRUCTION.replace("'#### <number>'", f"'{form_pattern(answer_form)}'")

# ChatML, for tokenizers that ship no chat template (some base models). Qwen's own
# templates render the same turns.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

def describe_prompt(kind: str, answer_form: str = HASH_FORM) -> str:
    """What the prompt kind is, as the protocol line of a summary and the report state it,
    naming the answer form a chat prompt asks for when it is the training data's own."""
    return PROMPT_KIND_TABLE.get(kind).describe(answer_form)


_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class PromptBuilder:
    """Renders the prompt text of one format; the few-shot exemplars are fixed at construction,
    and so is the date a chat template that writes today's date is given (see template_date)."""

    kind: str
    fewshot: tuple[Problem, ...] = ()
    date: str | None = None
    thinking: str = "auto"  # model.thinking: the chat template's thinking mode (render_chat)
    answer_form: str = HASH_FORM  # what the chat instruction asks for (task.answers)

    @property
    def entry(self) -> PromptKind:
        return PROMPT_KIND_TABLE.get(self.kind)

    def render(self, question: str, tokenizer=None) -> str:
        entry = self.entry
        if entry.chat:  # a second turn's first turn is the chat prompt
            return render_chat_prompt(question, tokenizer, self.date, self.thinking, self.answer_form)
        ask, answer = entry.labels
        shots = list(entry.exemplars) + [(p.question, clean_solution(p.answer)) for p in self.fewshot]
        return "\n\n".join([f"{ask} {q}\n{answer} {a}" for q, a in shots] + [f"{ask} {question}\n{answer}"])

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self.entry.stops

    def stops_for(self, tokenizer) -> tuple[str, ...]:
        """The stop strings, and for a chat prompt the token that closes a turn in this
        tokenizer's template (Gemma's <end_of_turn>, Phi-3's <|end|>): training ends every
        answer with it, so evaluation stops there whatever the generation config lists."""
        if not self.entry.chat:
            return self.stop_strings
        # The turn-end names this tokenizer has as plain text (Qwen's '</s>') are text a reply may hold.
        specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
        stops = tuple(s for s in self.stop_strings if s not in CHAT_STOPS or s in specials)
        closing = turn_end_token(tokenizer)
        return stops if closing is None or closing in stops else stops + (closing,)


def clean_solution(answer: str) -> str:
    """GSM8K solution without its calculator annotations: '16-3=<<16-3=13>>13' -> '16-3=13'."""
    return _CALC_ANNOTATION.sub("", answer)


def ensure_chat_template(tokenizer) -> None:
    """Give a tokenizer without a chat template ChatML's, when its vocabulary has ChatML's
    turn tokens as single tokens (Qwen's base models); any other tokenizer would read
    '<|im_start|>' as plain text, so the chat prompt is refused for it."""
    if getattr(tokenizer, "chat_template", None):
        return
    vocab = tokenizer.get_vocab()
    if all(token in vocab for token in ("<|im_start|>", "<|im_end|>")):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
        return
    name = getattr(tokenizer, "name_or_path", "") or "this model"
    raise MathtuneError(f"the chat prompt needs a chat template, and the tokenizer of {name} has none (nor "
                        "ChatML's <|im_start|> and <|im_end|> tokens); use --prompt cot8 or plain5 "
                        "(eval.prompt / data.prompt), or a tokenizer that has a chat template")


def chat_messages(question: str, answer_form: str = HASH_FORM) -> list[dict[str, str]]:
    """The conversation of the chat prompt: one user turn. No system turn, so templates that
    refuse one (Gemma's) or fold it into the first user turn (Mistral's) render it as written."""
    return [{"role": "user", "content": f"{chat_instruction(answer_form)}\n\nProblem: {question}"}]


# The self-check turn of the chat-verify prompt: asked after the model's first answer, in the
# same conversation. It asks for a check and a restated answer, and says a right answer may
# stand, so that the turn measures checking rather than a push to change.
VERIFY_INSTRUCTION = (
    "Check your solution step by step: re-read the problem and verify each calculation. If you "
    "find a mistake, correct it; if it is right, keep it. End with a line of the form "
    "'#### <number>' that gives the final answer."
)

# How a template that reads today's date is told the day instead (Llama 3.2's `date_string`,
# rendered '26 Jul 2024').
DATE_STRING_FORMAT = "%d %b %Y"


def template_date(date: str | None) -> datetime.date:
    """The day a chat template sees: the given ISO date ('2026-12-05'), else today (UTC). A run
    folder fixes one (config data.prompt_date) and an evaluation records the one it used, so a
    template that writes 'Today Date: ...' renders the same prompt on every day."""
    if date is None:
        date = today_utc()
    try:
        return datetime.date.fromisoformat(date)
    except ValueError:
        raise MathtuneError(f"prompt date '{date}' is not a date of the form YYYY-MM-DD") from None


@contextlib.contextmanager
def _frozen_template_clock(day: datetime.date):
    """transformers gives templates `strftime_now`, which reads the clock at render time, and it
    accepts only plain data as template variables (a function passed in becomes a placeholder
    string), so a template that calls strftime_now directly is held to `day` by holding the
    clock of the module that defines it while the template renders."""
    module = sys.modules.get("transformers.utils.chat_template_utils")
    clock = getattr(module, "datetime", None)
    if clock is None:
        yield
        return

    class FixedDay(clock):
        @classmethod
        def now(cls, tz=None):
            return cls(day.year, day.month, day.day, tzinfo=tz)

    module.datetime = FixedDay
    try:
        yield
    finally:
        module.datetime = clock


def template_text(tokenizer) -> str:
    """The chat template's source (the default one, for a tokenizer holding several)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    return template.get("default", "") if isinstance(template, dict) else template


def template_kwargs(tokenizer, date: str | None, thinking: str = "auto") -> dict:
    """What mathtune tells a chat template beyond the turns, so it renders as the family does by
    default: `date_string` only for a template that would otherwise read today's date
    (`strftime_now`, Llama 3.2's), never for one with a date of its own (Llama 3.1's fixed
    '26 Jul 2024'); `enable_thinking` only when model.thinking is on or off (auto: the
    template's default; Qwen3's thinks)."""
    kwargs: dict = {}
    if "strftime_now" in template_text(tokenizer):
        kwargs["date_string"] = template_date(date).strftime(DATE_STRING_FORMAT)
    if thinking != "auto":
        kwargs["enable_thinking"] = thinking == "on"
    return kwargs


def render_chat(messages: list[dict[str, str]], tokenizer, date: str | None, *,
                add_generation_prompt: bool = True, thinking: str = "auto") -> str:
    """The chat template's text for these turns, on the given day, in the given thinking mode:
    every chat rendering in mathtune (training, evaluation, the self-check turn) goes through
    here. A template that calls strftime_now is held to the day while it renders."""
    ensure_chat_template(tokenizer)
    with _frozen_template_clock(template_date(date)):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             **template_kwargs(tokenizer, date, thinking))


def render_verify_turn(question: str, first_answer: str, tokenizer, date: str | None = None,
                       thinking: str = "auto", answer_form: str = HASH_FORM) -> str:
    """The chat-verify prompt's second turn: the first exchange, then the check request."""
    verify = VERIFY_INSTRUCTION.replace("'#### <number>'", f"'{form_pattern(answer_form)}'")
    messages = chat_messages(question, answer_form) + [{"role": "assistant", "content": first_answer},
                                                       {"role": "user", "content": verify}]
    return render_chat(messages, tokenizer, date, thinking=thinking)


def render_chat_prompt(question: str, tokenizer, date: str | None = None, thinking: str = "auto",
                       answer_form: str = HASH_FORM) -> str:
    if tokenizer is None:
        raise ValueError("the chat prompt needs a tokenizer (for its chat template)")
    prompt = render_chat(chat_messages(question, answer_form), tokenizer, date, thinking=thinking)
    if thinking == "off" and opens_think(prompt):
        raise ThinkingRefused(f"model.thinking is off, but the chat template of {_name(tokenizer)} opens a think block "
                              f"('{THINK_OPEN}') in its generation prompt whatever it is told, so it has no "
                              "non-thinking prompt; use model.thinking auto or on (training then puts the solution's "
                              "steps inside the think block and '#### N' after it), or data.prompt and eval.prompt "
                              "cot8 or plain5")
    return prompt


def _name(tokenizer) -> str:
    return getattr(tokenizer, "name_or_path", "") or "this model"


class NoCleanBoundary(MathtuneError):
    """The chat template does not render a reply as the evaluation prompt followed by the answer."""


class ThinkingRefused(MathtuneError):
    """model.thinking asks for what the chat template cannot render."""


# A think block with nothing in it: what Qwen3's template writes into a reply when it is not
# told the reasoning. Training on it teaches a thinking model to skip its reasoning.
_EMPTY_THINK = re.compile(re.escape(THINK_OPEN) + r"\s*" + re.escape(THINK_CLOSE))


def training_pair(problem: Problem, tokenizer, kind: str = "chat", *, date: str | None = None,
                  solution: str | None = None, fewshot: tuple[Problem, ...] = (),
                  thinking: str = "auto", answer_form: str = HASH_FORM) -> tuple[str, str]:
    """(prompt, answer) texts for supervised fine-tuning: the evaluation prompt, then the
    solution (the gold one unless given) as the model should continue it. For a chat prompt
    the answer is the rest of the conversation as the template renders it, turn end included,
    so the model learns to stop where evaluation stops; for a few-shot prompt it is the
    solution after the space the exemplars put after 'A:' / 'Answer:'. plain5's exemplars
    (`fewshot`) are those evaluation draws.

    Where the template thinks (its generation prompt opens a think block, or it writes one into
    the reply), the reply is the thinking format: the solution's steps inside the block and its
    '#### N' line after it (thinking_reply); never an empty block under the loss."""
    given = solution is not None
    solution = clean_solution(problem.answer) if solution is None else solution
    prompt = PromptBuilder(kind, fewshot, date, thinking, answer_form).render(problem.question, tokenizer)
    if not PROMPT_KIND_TABLE.get(kind).chat:
        return prompt, " " + solution
    if not opens_think(prompt):
        conversation = chat_messages(problem.question, answer_form) + [{"role": "assistant", "content": solution}]
        whole = render_chat(conversation, tokenizer, date, add_generation_prompt=False, thinking=thinking)
        if not whole.startswith(prompt):
            raise NoCleanBoundary(f"the chat template of {_name(tokenizer)} does not render a reply as the evaluation "
                                  "prompt followed by the answer, so training and evaluation would see different "
                                  "tokens; use data.prompt and eval.prompt cot8 or plain5, or a tokenizer whose "
                                  "template does")
        answer = whole[len(prompt):].rstrip("\n")
        if THINK_OPEN not in answer and THINK_CLOSE not in answer:
            return prompt, answer
    if thinking == "off":
        raise ThinkingRefused(f"model.thinking is off, but the chat template of {_name(tokenizer)} writes a think block "
                              "into the reply it renders; use model.thinking auto or on, or data.prompt and "
                              "eval.prompt cot8 or plain5")
    if given:  # RFT's own samples already hold whatever the model thought
        raise ThinkingRefused(f"the chat template of {_name(tokenizer)} thinks (model.thinking {thinking}), and "
                              "training on the model's own samples in thinking mode is not supported; use "
                              "model.thinking off, or train.method sft")
    answer = thinking_reply(problem, solution, prompt, tokenizer, date, thinking, answer_form)
    if _EMPTY_THINK.search(answer) or (opens_think(prompt) and answer.lstrip().startswith(THINK_CLOSE)):
        raise ThinkingRefused(f"{problem.id}: the thinking format would train an empty think block")
    return prompt, answer


def thinking_reply(problem: Problem, solution: str, prompt: str, tokenizer, date: str | None, thinking: str,
                   answer_form: str = HASH_FORM) -> str:
    """The reply in the thinking format: `<think>\\n` (unless the prompt opened the block), the
    solution's steps, `\\n</think>\\n\\n`, its `#### N` line, the turn end. Rendered by the template
    where it keeps the reasoning of the reply it renders (Qwen3's); written out after the
    prompt where the template drops it (DeepSeek-R1-Distill's keeps only what follows
    `</think>`), which is what such a model generates after its prompt."""
    steps, mark, final = solution.rpartition("####")
    steps, final = steps.strip(), (mark + final).strip()
    if not mark or not steps:
        raise ThinkingRefused(f"{problem.id}: the thinking format puts the solution's steps inside the think block, "
                              "and this answer has no steps before its '#### N' line; use model.thinking off")
    content = f"{THINK_OPEN}\n{steps}\n{THINK_CLOSE}\n\n{final}"
    conversation = chat_messages(problem.question, answer_form) + [{"role": "assistant", "content": content}]
    whole = render_chat(conversation, tokenizer, date, add_generation_prompt=False, thinking=thinking)
    if whole.startswith(prompt) and steps in whole[len(prompt):]:
        return whole[len(prompt):].rstrip("\n")
    opened = "" if opens_think(prompt) else f"{THINK_OPEN}\n"
    turn_end = template_turn_end(tokenizer).rstrip("\n")
    return f"{opened}{steps}\n{THINK_CLOSE}\n\n{final}{turn_end}"


def template_turn_end(tokenizer) -> str:
    """What the chat template writes after an assistant turn's text ('<|im_end|>\\n',
    '<end_of_turn>\\n'); '' for a template that writes no turn end at all."""
    ensure_chat_template(tokenizer)
    probe = "\x00PROBE\x00"
    rendered = render_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}], tokenizer,
                           None, add_generation_prompt=False)
    return rendered.split(probe, 1)[1]


def end_of_turn(tokenizer) -> str:
    """The text that closes an assistant turn in the chat template (e.g. '<|im_end|>'); the
    tokenizer's end token where the template writes none."""
    return template_turn_end(tokenizer).rstrip("\n") or (tokenizer.eos_token or "")


def turn_end_token(tokenizer) -> str | None:
    """The special token that closes an assistant turn in the chat template ('<|im_end|>',
    '<|eot_id|>', '<end_of_turn>', '<|end|>'), or None when the closing has none."""
    specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}))
    return next((t for t in tokenizer.tokenize(end_of_turn(tokenizer)) if t in specials), None)


def draw_fewshot(train: list[Problem], seed: int, k: int, kind: str) -> tuple[Problem, ...]:
    if len(train) < k:
        raise MathtuneError(f"{kind} needs at least {k} training problems for its exemplars, found {len(train)}")
    rng = random.Random(seed)
    return tuple(rng.sample(train, k))


def make_prompt_builder(kind: str, *, train: list[Problem] | None = None, seed: int = 42,
                        date: str | None = None, thinking: str = "auto",
                        answer_form: str = HASH_FORM) -> PromptBuilder:
    entry = PROMPT_KIND_TABLE.get(kind)  # an unknown name: the one-line error
    if entry.shots_from_train:
        if train is None:
            raise ValueError(f"{kind} needs the train split for its exemplars")
        return PromptBuilder(kind, draw_fewshot(train, seed, entry.shots_from_train, kind), date, thinking, answer_form)
    return PromptBuilder(kind, date=date, thinking=thinking, answer_form=answer_form)
