"""GRPO with a LoRA adapter: the trainer of `train.method: grpo`.

    train: {method: grpo, grpo: {group_size: 4, max_completion_length: 512, temperature: 1.0,
                                 beta: 0.04, rewards: {exact_match: 1.0}, max_steps: null}}

TRL's GRPOTrainer does the sampling, the group-relative advantages, the clipped objective and
the KL term (the reference model is the base, i.e. the same weights with the adapter off);
PEFT makes the adapter. What mathtune adds is the reward, its own scorer:

* exact_match -- 1 when the strict scorer of `mathtune eval` finds the gold number as the
  stated final answer ('#### N', 'The answer is N', ...), else 0;
* format      -- 1 when the completion states a final answer in one of those forms at all
  (an optional small shaping reward; its weight is in the config and the report).

The prompts are the training problems under the same prompt builder evaluation uses
(data.prompt, `chat` by default). train.batch_size counts completions, so a step sees
batch_size / group_size prompts. There is no validation loss to select a checkpoint by: the
adapter is the one of the last step.
"""

from __future__ import annotations

from typing import Callable

from mathtune.config import GRPO_REWARDS, Config
from mathtune.task.data import Problem
from mathtune.core.errors import MathtuneError
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.prompts import chat_messages, ensure_chat_template, make_prompt_builder, template_kwargs
from mathtune.task.score import extract_strict, numbers_equal, opens_think
from mathtune.task.training_set import training_answer_form
from mathtune.train.trainer import trainer_arguments


def _text(completion) -> str:
    # Plain-text prompts give string completions; conversational ones a list of messages.
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return completion


def exact_match(completions, gold, **kwargs) -> list[float]:
    """1.0 where the strictly extracted answer equals the gold number."""
    return [1.0 if numbers_equal(extract_strict(_text(c)), g) else 0.0 for c, g in zip(completions, gold)]


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 where a final answer is stated in a strict form, right or wrong."""
    return [0.0 if extract_strict(_text(c)) is None else 1.0 for c in completions]


format_reward.__name__ = "format"  # TRL logs each reward under its function's name


REWARDS: dict[str, Callable] = {"exact_match": exact_match, "format": format_reward}
assert tuple(REWARDS) == GRPO_REWARDS, "config.GRPO_REWARDS names these functions"

# metrics.jsonl fields of a GRPO step, from the names TRL logs.
LOG_FIELDS = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "completions/clipped_ratio": "truncated_share",
    "entropy": "entropy",
    "num_tokens": "num_input_tokens_seen",
}
FIELD_ORDER = ("loss", "reward", "reward_std", "mixed_groups", "kl", "completion_length", "truncated_share",
               "learning_rate", "grad_norm", "entropy", "num_input_tokens_seen")


def step_fields(logs: dict) -> dict:
    """One metrics.jsonl line's fields from a TRL GRPO log: the mean reward, the share of
    groups whose rewards differ (only those carry a learning signal: a group that is all
    right or all wrong has zero advantage), KL, completion length, and each reward's mean."""
    fields = {ours: logs[theirs] for theirs, ours in LOG_FIELDS.items() if theirs in logs}
    if "frac_reward_zero_std" in logs:
        fields["mixed_groups"] = 1.0 - logs["frac_reward_zero_std"]
    for key, value in logs.items():
        if key.startswith("rewards/") and key.endswith("/mean"):
            fields[f"reward_{key.split('/')[1]}"] = value
    return fields


def prompt_rows(config: Config, tokenizer, problems: list[Problem]) -> list[dict]:
    """GRPO's dataset: the evaluation prompt and the gold number per problem. A chat prompt goes
    as its conversation, which TRL renders through the template and tokenizes without adding
    the tokenizer's special tokens (the template writes its own), as evaluation does; as text
    TRL would tokenize it with them (a second BOS for Llama 3). A few-shot prompt goes as text,
    with the tokenizer's BOS, as evaluation feeds it."""
    if PROMPT_KIND_TABLE.get(config.data.prompt).chat:
        ensure_chat_template(tokenizer)
        chat = make_prompt_builder(config.data.prompt, date=config.data.prompt_date, thinking=config.model.thinking)
        if problems and opens_think(chat.render(problems[0].question, tokenizer)):
            # TRL hands the rewards the completion alone, which then starts inside the think
            # block: the scorer could not tell the reasoning from the answer.
            raise MathtuneError("train.method grpo with a chat template that opens a think block in its generation "
                                "prompt is not supported; use model.thinking off where the template has it, or "
                                "train.method sft")
        form = training_answer_form(config)  # the form the evaluation's chat prompt asks for
        return [{"prompt": chat_messages(p.question, form), "gold": p.gold} for p in problems]
    builder = make_prompt_builder(config.data.prompt, train=problems, seed=config.seed)  # few-shot: no template
    return [{"prompt": builder.render(p.question, tokenizer), "gold": p.gold} for p in problems]


def build_grpo_trainer(config: Config, run_dir, model, tokenizer, train_set, peft_config, callbacks,
                       reward_funcs: list[Callable] | None = None):
    """TRL's GRPOTrainer for this config. reward_funcs replaces the configured rewards
    (tests use it to reward one chosen completion)."""
    from trl import GRPOConfig, GRPOTrainer

    g = config.train.grpo
    if reward_funcs is None:
        reward_funcs = [REWARDS[name] for name in g.rewards]
        weights = list(g.rewards.values())
    else:
        weights = None
    args = GRPOConfig(
        **trainer_arguments(config, run_dir),
        max_steps=g.max_steps if g.max_steps is not None else -1,
        num_generations=g.group_size,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        reward_weights=weights,
        # The policy's and the reference's log-probabilities must come from the same
        # function; LoRA dropout would make them differ at every token.
        disable_dropout=True,
        eval_strategy="no",  # no validation loss; checkpoints only
        # What evaluation tells the template: the run's date where it would read today's, the
        # thinking mode where one is set (task.prompts.template_kwargs).
        chat_template_kwargs=template_kwargs(tokenizer, config.data.prompt_date, config.model.thinking),
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
