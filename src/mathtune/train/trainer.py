"""What every training method builds on: the data as tokenized examples, PEFT's LoRA
config, the TrainingArguments all methods share, TRL's SFTTrainer, and the metrics file.

    train_set, val_set, counts = build_datasets(config, tokenizer, train_problems, val_problems)
    trainer = build_trainer(config, run_dir, model, tokenizer, train_set, val_set, make_lora_config(config, model))

train.run drives a run with these (and train.grpo builds on trainer_arguments).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.core.provenance import library_version
from mathtune.core.terminal import say
from mathtune.core.runfiles import read_jsonl_until_torn, write_atomic
from mathtune.models.load import resolve_dtype
from mathtune.task.data import Problem
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE
from mathtune.task.training_set import training_answer_form, training_set
from mathtune.task.sequences import TrainingExample, example_from_text, training_example
from mathtune.train.divergence import DivergenceCallback
from mathtune.train.lm_head import use_lm_head

# The fields of one metrics.jsonl line, in order. Train steps carry the first group, eval
# steps the second; a step that is both carries both (merged into one line).
TRAIN_FIELDS = ("loss", "mean_token_accuracy", "learning_rate", "grad_norm", "entropy", "num_input_tokens_seen")


EVAL_FIELDS = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy")
# With train.select_by exact_match, what train.accuracy adds to a validation point's metrics,
# and the names its metrics.jsonl line gives them.
ACCURACY_FIELDS = {"eval_exact_match": "val_exact_match", "eval_exact_match_correct": "val_exact_match_correct",
                   "eval_exact_match_problems": "val_exact_match_problems", "eval_decode_s": "val_decode_s"}


TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


def check_trackers(report_to: list[str]) -> None:
    for name in report_to:
        if name not in TRACKERS:
            raise MathtuneError(f"train.report_to: unknown tracker '{name}' (expected {', '.join(TRACKERS)})")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise MathtuneError(f"train.report_to: '{name}' is not installed (pip install {name})")


def training_fewshot(config: Config) -> tuple[Problem, ...]:
    """plain5's exemplars as evaluation draws them (seeded, from the train split, never a test
    problem), so a plain5 training prompt is the evaluation's; () for the other prompts."""
    if not PROMPT_KIND_TABLE.get(config.data.prompt).shots_from_train:
        return ()
    from dataclasses import replace

    from mathtune.evaluation.request import EvalRequest, load_problems

    return load_problems(replace(EvalRequest.from_config(config), prompt=config.data.prompt))[1].fewshot


def gold_examples(config: Config, tokenizer, problems: list[Problem],
                  fewshot: tuple[Problem, ...]) -> list[TrainingExample]:
    """Each problem's supervised example (task.sequences): its evaluation prompt's ids, then the
    gold solution's; what training feeds, the plan counts and `plan --show-example` shows.
    fewshot: training_fewshot(config), drawn once by the caller for all its splits."""
    form = training_answer_form(config)  # the chat prompt asks for the training data's answer form
    return [training_example(p, tokenizer, config.data.prompt, date=config.data.prompt_date, fewshot=fewshot,
                             thinking=config.model.thinking, answer_form=form) for p in problems]


class AllTooLong(MathtuneError):
    """Every example of a split is longer than data.max_length: nothing would train."""


def refuse_all_too_long(lengths: list[int], max_length: int, split: str) -> None:
    """The one check of what data.max_length leaves, for training and `mathtune plan` alike, so
    that plan refuses exactly what run refuses, with the same words."""
    if lengths and min(lengths) > max_length:
        raise AllTooLong(f"data.max_length {max_length} cuts the answer of every {split} example "
                         f"(the shortest needs {min(lengths)} tokens)")


def build_datasets(config: Config, tokenizer, train: list[Problem] | None = None, val: list[Problem] | None = None,
                   *, train_pairs: list[tuple[str, str]] | None = None):
    """Tokenized datasets, loss on the answer tokens only: the gold solutions, or for training
    the given (prompt, answer) text pairs (RFT's samples). Validation is always on the gold
    solutions.

    mathtune tokenizes the examples itself (task.sequences) and gives TRL `input_ids` with a
    `completion_mask`, which TRL takes as they are (no second tokenization, no added BOS, no
    re-derived prompt boundary) and turns into the labels: so the ids trained on are the
    evaluation prompt's ids followed by the answer's, for every tokenizer.

    Examples longer than data.max_length are dropped, not truncated: a cut answer has no
    '#### N' line and no turn end, so it would teach the model to ramble and never stop."""
    from datasets import Dataset

    if train is None or val is None:
        problems = training_set(config)
        train, val = problems.train, problems.val

    def rows(examples: list[TrainingExample], split: str) -> tuple[list[dict], int]:
        refuse_all_too_long([len(e) for e in examples], config.data.max_length, split)
        kept = [{"input_ids": e.input_ids, "completion_mask": e.loss_mask} for e in examples
                if len(e) <= config.data.max_length]
        return kept, len(examples) - len(kept)

    fewshot = training_fewshot(config)
    train_examples = (gold_examples(config, tokenizer, train, fewshot) if train_pairs is None else
                      [example_from_text(prompt, answer, tokenizer, config.data.prompt) for prompt, answer in train_pairs])
    train_rows, train_dropped = rows(train_examples, "training")
    val_rows, val_dropped = rows(gold_examples(config, tokenizer, val, fewshot), "validation")
    counts = {
        "train_examples": len(train_rows),
        "val_examples": len(val_rows),
        "dropped_too_long": {"train": train_dropped, "validation": val_dropped},
    }
    if train_dropped or val_dropped:
        say(
            f"dropped {train_dropped} training and {val_dropped} validation examples longer than "
            f"data.max_length={config.data.max_length}"
        )
    return Dataset.from_list(train_rows), Dataset.from_list(val_rows), counts


def check_lora_targets(targets: str | list[str], model) -> None:
    """The target modules exist in the model (its real modules, or the weightless ones of
    models.load.meta_model): PEFT only fails when nothing matches, so a typo in one name of a
    list would silently adapt less."""
    if targets == "all-linear":
        return
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, n) for n in names):
            raise MathtuneError(f"lora.target_modules '{targets}' matches no module of the model")
        return
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        examples = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise MathtuneError(
            f"lora.target_modules {missing} match no module of the model "
            f"(its linear layers: {', '.join(examples)})"
        )
    if any(t == "lm_head" or t.endswith(".lm_head") for t in targets):
        raise MathtuneError("lora.target_modules: 'lm_head' cannot be adapted (TRL scores it directly)")


def make_lora_config(config: Config, model):
    """PEFT's LoraConfig for this model, after checking that the target modules exist in it."""
    check_lora_targets(config.lora.target_modules, model)
    return lora_config(config)


def lora_config(config: Config):
    """PEFT's LoraConfig: plain LoRA, DoRA and/or rsLoRA. A combination PEFT refuses, or one that
    cannot train, is one line naming the keys."""
    from peft import LoraConfig

    lora = config.lora
    if lora.use_dora and config.model.quantization == "8bit":
        # PEFT (0.21.2) accepts DoRA on bitsandbytes' 8-bit layers, but after a DoRA forward pass in
        # eval mode (the trainer validates at step 0) the next training step fails inside
        # bitsandbytes 0.50.2: the layer's int8 weights have lost their scales (SCB is None).
        # tests/test_qlora.py keeps a check that it still fails, so this refusal is lifted when it is fixed.
        raise MathtuneError("lora.use_dora with model.quantization 8bit cannot train: after a validation pass, DoRA "
                            f"on bitsandbytes' 8-bit layers fails (PEFT {library_version('peft')}, bitsandbytes "
                            f"{library_version('bitsandbytes') or '(not installed)'}: the layers lose their int8 scales); use model.quantization "
                            "4bit, or DoRA on an unquantized base")
    try:
        return LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            bias=lora.bias,
            target_modules=lora.target_modules,
            use_dora=lora.use_dora,
            use_rslora=lora.use_rslora,
            task_type="CAUSAL_LM",
        )
    except ValueError as err:
        raise MathtuneError(f"lora: PEFT refuses these settings (use_dora {lora.use_dora}, use_rslora "
                            f"{lora.use_rslora}, bias {lora.bias}): {str(err).strip().splitlines()[0]}") from None


def check_before_loading(config: Config) -> None:
    """The model and adapter settings, checked before any weights load: bitsandbytes for a
    quantization (the config refused a quantized .gguf already), the LoRA settings, and named
    target modules against the model's weightless modules (built from its config alone)."""
    from mathtune.models.load import meta_model
    from mathtune.models.quantize import check_bitsandbytes

    check_bitsandbytes(config.model.quantization)
    if config.lora.target_modules != "all-linear":
        check_lora_targets(config.lora.target_modules,
                           meta_model(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code))
    lora_config(config)


def trainer_arguments(config: Config, run_dir: Path) -> dict:
    """The TrainingArguments every method shares (optimizer, schedule, batch, precision,
    checkpoints, logging, devices); SFT and GRPO add their own to these."""
    t = config.train
    dtype = resolve_dtype(config.model.dtype)
    if "tensorboard" in t.report_to:
        # transformers 5 dropped TrainingArguments.logging_dir; this variable replaces it.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "train" / "tensorboard")
    return dict(
        output_dir=str(run_dir / "train" / "checkpoints"),
        run_name=config.name,
        seed=config.seed,
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a share of the steps
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        activation_checkpointing=t.gradient_checkpointing,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # Checkpoints every eval_every_steps; save_total_limit keeps the best and the latest.
        save_strategy="steps",
        save_steps=t.eval_every_steps,
        save_total_limit=2,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        # The Trainer's default replaces a NaN or inf step loss with the mean of the others before
        # logging it: a diverged step must log what it was (train.divergence stops there).
        logging_nan_inf_filter=False,
        report_to=list(t.report_to) or "none",
        # Every LoRA parameter receives a gradient each step, so DDP need not search for unused ones.
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # and so several CPU processes are data-parallel (gloo)
    )


def build_trainer(config, run_dir, model, tokenizer, train_set, val_set, peft_config, *, eval_on_start=True,
                  accuracy: TrainerCallback | None = None):
    """TRL's SFTTrainer for this config. With train.select_by exact_match, `accuracy` (the
    callback of train.accuracy) measures validation exact match at every validation point, and
    that figure picks the kept adapter and drives early stopping."""
    from trl import SFTConfig, SFTTrainer

    t = config.train
    by_exact_match = t.select_by == "exact_match"
    if by_exact_match and accuracy is None:
        raise ValueError("train.select_by exact_match needs the validation exact-match callback")
    args = SFTConfig(
        **trainer_arguments(config, run_dir),
        per_device_eval_batch_size=t.batch_size,
        # Data: tokenized examples with their completion mask (build_datasets), loss on the
        # answer only; packing is TRL's best-fit-decreasing, which keeps examples whole and
        # passes per-example position ids, from which transformers builds a block-diagonal
        # mask (tests/test_train_packing.py).
        max_length=config.data.max_length,
        packing=t.packing,
        packing_strategy="bfd",
        completion_only_loss=True,
        # Validation and the best model. Checkpoints are written at every evaluation, so the
        # best one is always on disk.
        eval_strategy="steps",
        eval_steps=t.eval_every_steps,
        eval_on_start=eval_on_start,  # the untrained model's eval_loss, as the curve's start
        load_best_model_at_end=True,
        metric_for_best_model="exact_match" if by_exact_match else "eval_loss",
        greater_is_better=by_exact_match,
        include_num_input_tokens_seen="non_padding",
    )
    # In this order: a non-finite figure stops training at its step (train.divergence), the
    # exact match joins a validation point's metrics, the metrics file writes them (a diverged
    # step's line included), early stopping reads them.
    callbacks = ([DivergenceCallback()] + ([accuracy] if by_exact_match else [])
                 + [MetricsFileCallback(run_dir / "train" / "metrics.jsonl")])
    if t.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    use_lm_head(trainer.model, "lean")  # score only the answer tokens on every device (train/lm_head.py)
    return trainer


class MetricsFileCallback(TrainerCallback):
    """Writes train/metrics.jsonl: one line per logged step, the train and eval logs of a
    step merged. The Trainer logs a step's training metrics, then evaluates and logs again,
    then saves a checkpoint; so when a checkpoint exists its step's line is complete on
    disk, and a resume that truncates the file after that step leaves no gap and no
    duplicate. Written by hand: the Trainer's own log_history lives inside checkpoints and
    is lost between them."""

    def __init__(self, path: Path, fields_of=None, order: tuple[str, ...] | None = None):
        self.path = path
        # What one log contributes to a line (SFT: the TRAIN_FIELDS and EVAL_FIELDS it has;
        # GRPO: mathtune.grpo.step_fields), and the order of a line's keys.
        self.fields_of = fields_of or (lambda logs: {k: logs[k] for k in TRAIN_FIELDS + EVAL_FIELDS if k in logs})
        self.order = ("step", "epoch") + (order or TRAIN_FIELDS + EVAL_FIELDS + tuple(ACCURACY_FIELDS.values())) + (
            "elapsed_s",)
        self.elapsed_before = 0.0  # training time of earlier sessions of a resumed run
        self.started = time.monotonic()
        self.lines: list[dict] = []  # the file's lines, kept here so a log never re-reads it

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.lines = read_jsonl_until_torn(self.path) if self.path.is_file() else []
        self.elapsed_before = self.lines[-1].get("elapsed_s", 0.0) if self.lines else 0.0

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def on_log(self, args, state, control, logs=None, **kwargs):
        # "train_loss" marks the end-of-training summary log, which is not a step.
        if not state.is_world_process_zero or not logs or "train_loss" in logs:
            return
        fields = self.fields_of(logs)
        if not fields:
            return
        lines = self.lines
        merged = bool(lines) and lines[-1]["step"] == state.global_step
        record = lines.pop() if merged else {"step": state.global_step}
        record.update(fields)
        record["epoch"] = round(state.epoch or 0.0, 4)
        record["elapsed_s"] = round(self.elapsed(), 3)
        lines.append({k: record[k] for k in self.order if k in record} | record)
        if merged:  # the eval log of a step already written for training: replace its line
            self._rewrite()
        else:
            with self.path.open("a") as fh:
                fh.write(json.dumps(lines[-1]) + "\n")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Validation exact match (train.accuracy adds it to the metrics after the Trainer logged
        the validation loss) joins the line of its step."""
        fields = {ours: metrics[theirs] for theirs, ours in ACCURACY_FIELDS.items() if theirs in (metrics or {})}
        if not state.is_world_process_zero or not fields:
            return
        lines = self.lines
        record = lines.pop() if lines and lines[-1]["step"] == state.global_step else {
            "step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update(fields)
        lines.append({k: record[k] for k in self.order if k in record} | record)
        self._rewrite()

    def _rewrite(self) -> None:
        write_atomic(self.path, "".join(json.dumps(line) + "\n" for line in self.lines))
