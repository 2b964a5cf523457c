"""What the model sees: one training example as the trainer feeds it, and the evaluation
prompt of the same question, token by token (`mathtune plan CONFIG --show-example [N]`).

    view = show_example(config, 0)     # {"id", "train_input_ids", "train_loss_mask", "eval_prompt_ids", ...}
    print(format_example(view))

Loads the tokenizer and the data, never the weights. The view's ids are built by the same
functions training and evaluation use (train.trainer.gold_examples, task.sequences.prompt_ids),
so what it shows is what runs.
"""

from __future__ import annotations

from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.evaluation.resolve import resolve_request
from mathtune.evaluation.request import EvalRequest, load_problems
from mathtune.models.load import load_tokenizer
from mathtune.task.training_set import training_set
from mathtune.task.sequences import prompt_ids
from mathtune.train.trainer import gold_examples, training_fewshot


def show_example(config: Config, index: int = 0) -> dict:
    """Training example `index` (in the order the training set is built, after examples over
    data.max_length are dropped) and its question's evaluation prompt under eval.prompt."""
    if index < 0:
        raise MathtuneError(f"--show-example takes an example number from 0 (given {index})")
    train = training_set(config).train
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    kept = [(problem, example) for problem, example in zip(train, gold_examples(config, tokenizer, train, training_fewshot(config)))
            if len(example) <= config.data.max_length]
    if index >= len(kept):
        raise MathtuneError(f"--show-example {index}: the training set has {len(kept)} examples (0 to {len(kept) - 1})")
    problem, example = kept[index]
    _, builder = load_problems(resolve_request(EvalRequest.from_config(config)))  # eval.prompt's builder, plain5's exemplars drawn
    eval_ids = prompt_ids(builder.render(problem.question, tokenizer), tokenizer, builder.kind)
    train_ids, mask = example.input_ids, example.loss_mask
    bos = tokenizer.bos_token_id
    return {
        "id": problem.id,
        "train_input_ids": train_ids,
        "train_loss_mask": mask,
        "eval_prompt_ids": eval_ids,
        "train_prompt": config.data.prompt,
        "eval_prompt": builder.kind,
        "thinking": config.model.thinking,
        "eval_prompt_is_training_prefix": list(example.prompt_ids) == eval_ids,
        "loss_on_prompt": any(mask[:len(eval_ids)]),
        "bos_token": tokenizer.bos_token,
        "bos_in_training": train_ids.count(bos) if bos is not None else 0,
        "bos_in_evaluation": eval_ids.count(bos) if bos is not None else 0,
        "tokens": [tokenizer.decode([t]) for t in train_ids],
        "eval_tokens": [tokenizer.decode([t]) for t in eval_ids],
    }


# What `plan --json` adds under "example": the view without its display texts.
JSON_KEYS = ("id", "train_input_ids", "train_loss_mask", "eval_prompt_ids", "train_prompt", "eval_prompt", "thinking",
             "eval_prompt_is_training_prefix", "loss_on_prompt", "bos_token", "bos_in_training", "bos_in_evaluation")


def format_example(view: dict) -> str:
    """One training token per line (position, id, text; '*' where it carries the loss), the
    evaluation prompt's ids, and last a line saying whether that prompt is the training prefix."""
    ids, mask = view["train_input_ids"], view["train_loss_mask"]
    lines = [f"training example {view['id']} (data.prompt {view['train_prompt']}, model.thinking {view['thinking']}): "
             f"{len(ids)} tokens, "
             f"{sum(mask)} carry the loss (marked *)",
             "   pos      id  token"]
    for pos, (token_id, loss, text) in enumerate(zip(ids, mask, view["tokens"])):
        lines.append(f"{pos:>5}{'*' if loss else ' '} {token_id:>7}  {text!r}")
    eval_ids = view["eval_prompt_ids"]
    lines.append(f"evaluation prompt of the same question (eval.prompt {view['eval_prompt']}): {len(eval_ids)} tokens")
    lines.append("  ids: " + " ".join(str(t) for t in eval_ids))
    lines.append("  text: " + repr("".join(view["eval_tokens"])))
    if view["bos_token"] is not None:
        lines.append(f"BOS {view['bos_token']!r}: {view['bos_in_training']} in the training example, "
                     f"{view['bos_in_evaluation']} in the evaluation prompt")
    if view["eval_prompt_is_training_prefix"]:
        lines.append(f"the evaluation prompt is exactly the training example's first {len(eval_ids)} tokens, "
                     + ("some of which carry the loss" if view["loss_on_prompt"] else "none of which carries the loss"))
    else:
        lines.append("the evaluation prompt is NOT the training example's prefix"
                     + (f" (data.prompt {view['train_prompt']}, eval.prompt {view['eval_prompt']})"
                        if view["train_prompt"] != view["eval_prompt"] else ""))
    return "\n".join(lines)
