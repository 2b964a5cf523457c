"""LoRA fine-tuning on GSM8K: the training stage of a run.

    mathtune train CONFIG [--set key=value ...] [--out DIR] [--overwrite]
    torchrun --nproc-per-node 2 -m mathtune train CONFIG [--out DIR]      (data parallel)

TRL's SFTTrainer does the training and PEFT the LoRA adapter; this module builds their
inputs from the config, keeps the run folder consistent, and writes what later stages read:

    RUN_DIR/config.yaml            the resolved config
    RUN_DIR/train/metrics.jsonl    one line per logged step (train and eval fields merged)
    RUN_DIR/train/summary.json     wall time, tokens, memory, parameters, best step, cost
    RUN_DIR/train/checkpoints/     resumable checkpoints (the best and the latest are kept)
    RUN_DIR/train/tensorboard/     TensorBoard events (when train.report_to has tensorboard)
    RUN_DIR/adapter/               the adapter with the best eval_loss (PEFT format)

Running the same command again skips a finished run and resumes a killed one from its last
complete checkpoint, continuing the same metrics file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import shutil
import time
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, TrainerCallback

from mathtune.attention import training_attention
from mathtune.config import Config, config_from_yaml_text, config_to_yaml
from mathtune.data import Problem, data_identity, training_splits
from mathtune.errors import MathtuneError, listing
from mathtune.runfiles import read_jsonl_until_torn, write_atomic, write_json_atomic
from mathtune.models import load_model, load_tokenizer, resolve_dtype
from mathtune.prompts import training_pair
from mathtune.provenance import library_versions
from mathtune.terminal import run_log, say
from mathtune.train_progress import replace_progress

# The sections that decide what gets trained; eval.* and report.* may change between a
# training run and a later evaluation of it.
TRAINING_KEYS = ("seed", "model", "data", "lora", "train")

# The fields of one metrics.jsonl line, in order. Train steps carry the first group, eval
# steps the second; a step that is both carries both (merged into one line).
TRAIN_FIELDS = ("loss", "mean_token_accuracy", "learning_rate", "grad_norm", "entropy", "num_input_tokens_seen")
EVAL_FIELDS = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy")

TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


def run_train(config: Config, out_dir: Path, overwrite: bool = False) -> Path:
    """Train (or resume, or skip) the run in out_dir; returns the run folder."""
    from accelerate import PartialState

    run_dir = Path(out_dir)
    # Under torchrun this joins the process group (gloo on CPU, nccl on GPU); in a plain
    # process it is a no-op. Without cpu=True accelerate does not treat several CPU
    # processes as data-parallel.
    state = PartialState(cpu=not torch.cuda.is_available())

    # --- setup: every user mistake is raised here, before the run folder is touched ---
    status = inspect_run_dir(run_dir, config, overwrite)
    if status == "done":
        if state.is_main_process:
            say(f"training already finished in {run_dir} (adapter/ and train/summary.json exist); skipping")
        return run_dir
    # Library warnings and logs go to run.log, not the terminal; held until the checks pass.
    with run_log(run_dir, start=False) as log:
        return _train(config, run_dir, state, status, log)


def _train(config: Config, run_dir: Path, state, status: str, log) -> Path:
    check_trackers(config.train.report_to)
    method = config.train.method
    # Data first (no network for a local folder), then the tokenizer (no weights yet).
    train_problems, val_problems = training_splits(
        config.data.source, val_fraction=config.data.val_fraction, seed=config.seed, train_limit=config.data.train_limit,
        fmt=config.data.format(),
    )
    from mathtune.mix import mix_training_problems

    extra, mixed = mix_training_problems(config)  # data.mix: extra training sources, counted per source
    sources = [{"source": config.data.source, "split": "train (after the seeded split)", "weight": 1.0,
                "problems": len(train_problems), "examples": len(train_problems)}] + mixed
    train_problems = train_problems + extra
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    if method == "grpo":
        from datasets import Dataset

        from mathtune.grpo import prompt_rows

        train_set, val_set = Dataset.from_list(prompt_rows(config, tokenizer, train_problems)), None
        data_counts = {"train_examples": len(train_set), "val_examples": 0,
                       "dropped_too_long": {"train": 0, "validation": 0}}
    else:
        train_set, val_set, data_counts = build_datasets(config, tokenizer, train_problems, val_problems)
    model, _ = load_model(
        config.model.name_or_path,
        dtype=config.model.dtype,
        # GRPO trains on unpacked, padded batches
        attn_implementation=training_attention(config.model.attn_implementation,
                                               config.train.packing and method != "grpo"),
        device="cpu",  # the Trainer moves it to this process's device
        trust_remote_code=config.model.trust_remote_code,
    )
    peft_config = make_lora_config(config, model)

    checkpoint = last_complete_checkpoint(run_dir / "train" / "checkpoints") if status == "resume" else None
    state.wait_for_everyone()  # every process has read the folder before the main one changes it
    if state.is_main_process:
        prepare_run_dir(run_dir, config, fresh=checkpoint is None)
        log.start()
        if checkpoint is not None:
            truncate_metrics(run_dir / "train" / "metrics.jsonl", checkpoint_step(checkpoint))
            say(f"resuming from {checkpoint}")
    state.wait_for_everyone()

    recipe_stats = None
    if method == "rft":
        from mathtune.rft import rft_training_pairs

        def fits(prompt: str, completion: str) -> bool:
            return text_length(tokenizer, prompt, completion) <= config.data.max_length

        pairs, recipe_stats = rft_training_pairs(config, run_dir, model, tokenizer, train_problems, fits)
        train_set, val_set, data_counts = build_datasets(config, tokenizer, train_problems, val_problems,
                                                         train_pairs=pairs)

    data_counts["sources"] = sources
    if method == "grpo":
        from mathtune.grpo import build_grpo_trainer, step_fields, FIELD_ORDER

        callbacks = [MetricsFileCallback(run_dir / "train" / "metrics.jsonl", step_fields, FIELD_ORDER)]
        trainer = build_grpo_trainer(config, run_dir, model, tokenizer, train_set, peft_config, callbacks)
    else:
        trainer = build_trainer(
            config, run_dir, model, tokenizer, train_set, val_set, peft_config, eval_on_start=checkpoint is None
        )

    # --- train ---
    replace_progress(trainer, run_dir / "run.log", f"train ({method})")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # --- save ---
    # load_best_model_at_end has put the best checkpoint's adapter back into the model.
    if state.is_main_process:
        save_adapter(trainer.model, run_dir / "adapter")
        summary = make_summary(config, trainer, data_counts, resumed_from=checkpoint)
        if recipe_stats is not None:
            summary["rft"] = recipe_stats
        write_json_atomic(run_dir / "train" / "summary.json", summary)
        best = (f"best step {summary['best_step']} (eval_loss {summary['best_eval_loss']:.4f})"
                if summary["best_step"] is not None else "adapter of the last step")
        say(f"training done ({method}): {best}, {summary['global_step']} steps in {summary['wall_time_s']:.0f} s; "
              f"adapter in {run_dir / 'adapter'}")
    state.wait_for_everyone()
    return run_dir


# ---------------------------------------------------------------------------------------
# The run folder


def training_part(config: Config) -> dict:
    return config.model_dump(mode="json", include=set(TRAINING_KEYS))


def training_outputs(run_dir: Path) -> list[Path]:
    """What the training stage wrote into train/. RFT's samples are not among them: they
    carry their own settings and are reused only when those match (rft.py), so a folder
    may be seeded with them and a fresh start keeps them."""
    folder = run_dir / "train"
    return [f for f in folder.iterdir() if not f.name.startswith("rft_samples.")] if folder.is_dir() else []


def inspect_run_dir(run_dir: Path, config: Config, overwrite: bool) -> str:
    """'done', 'resume' or 'fresh', without writing anything. A folder holding another
    config's training is an error unless overwrite is set."""
    adapter_done = (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    summary_done = (run_dir / "train" / "summary.json").is_file()
    has_training = bool(training_outputs(run_dir)) or (run_dir / "adapter").exists()
    saved = run_dir / "config.yaml"
    if overwrite:
        return "fresh"
    if saved.is_file():
        try:
            previous = config_from_yaml_text(saved.read_text(), str(saved))
        except MathtuneError:
            raise MathtuneError(f"{saved} is not a valid mathtune config; use --overwrite or another --out") from None
        if training_part(previous) != training_part(config):
            keys = differing_keys(training_part(previous), training_part(config))
            raise MathtuneError(
                f"{run_dir} holds a run of a different config (differs in {listing(keys)}); "
                "use --overwrite to replace it, or another --out"
            )
    elif has_training:
        raise MathtuneError(f"{run_dir} holds training output but no config.yaml; use --overwrite or another --out")
    if adapter_done and summary_done:
        return "done"
    return "resume" if last_complete_checkpoint(run_dir / "train" / "checkpoints") else "fresh"


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += differing_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


def prepare_run_dir(run_dir: Path, config: Config, fresh: bool) -> None:
    """Write config.yaml; on a fresh start, clear what an earlier attempt of this stage left,
    except RFT's samples (they are reused only when their settings match, see rft.py)."""
    if fresh:
        shutil.rmtree(run_dir / "adapter", ignore_errors=True)
        for stale in training_outputs(run_dir):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (run_dir / "train" / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", config_to_yaml(config))


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: Path) -> int:
    return int(_CHECKPOINT.match(path.name).group(1))


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint that was written to the end. Hand-written because
    transformers' get_last_checkpoint takes the newest folder even when a kill interrupted
    its writing; trainer_state.json is the last file the Trainer writes into it."""
    if not folder.is_dir():
        return None
    complete = [
        p for p in folder.iterdir() if _CHECKPOINT.match(p.name) and (p / "trainer_state.json").is_file()
    ]
    return max(complete, key=checkpoint_step, default=None)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of steps after the checkpoint we resume from: the resumed run logs
    them again, and the file must have no duplicates."""
    if not path.is_file():
        return
    kept = [line for line in read_jsonl_until_torn(path) if line["step"] <= step]
    write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept))


# ---------------------------------------------------------------------------------------
# Data, LoRA, trainer


def check_trackers(report_to: list[str]) -> None:
    for name in report_to:
        if name not in TRACKERS:
            raise MathtuneError(f"train.report_to: unknown tracker '{name}' (expected {', '.join(TRACKERS)})")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise MathtuneError(f"train.report_to: '{name}' is not installed (pip install {name})")


def text_length(tokenizer, prompt: str, completion: str) -> int:
    """Tokens of one training example as TRL tokenizes it, including the eos it appends
    to a completion that lacks one."""
    if tokenizer.eos_token and not completion.endswith(tokenizer.eos_token):
        completion += tokenizer.eos_token
    return len(tokenizer(text=prompt + completion)["input_ids"])


def build_datasets(config: Config, tokenizer, train: list[Problem] | None = None, val: list[Problem] | None = None,
                   *, train_pairs: list[tuple[str, str]] | None = None):
    """Prompt/completion datasets (TRL then puts the loss on completion tokens only): the
    gold solutions, or for training the given (prompt, completion) pairs (RFT's samples).
    Validation is always on the gold solutions.

    Examples longer than data.max_length are dropped, not truncated: a cut answer has no
    '#### N' line and no turn end, so it would teach the model to ramble and never stop."""
    from datasets import Dataset

    if train is None or val is None:
        train, val = training_splits(config.data.source, val_fraction=config.data.val_fraction, seed=config.seed,
                                     train_limit=config.data.train_limit, fmt=config.data.format())

    def rows(pairs: list[tuple[str, str]], split: str) -> tuple[list[dict], int]:
        kept, lengths = [], []
        for prompt, completion in pairs:
            n = text_length(tokenizer, prompt, completion)
            lengths.append(n)
            if n <= config.data.max_length:
                kept.append({"prompt": prompt, "completion": completion})
        if not kept:
            raise MathtuneError(
                f"data.max_length {config.data.max_length} cuts the answer of every {split} example "
                f"(the shortest needs {min(lengths)} tokens)"
            )
        return kept, len(pairs) - len(kept)

    def gold(problems: list[Problem]) -> list[tuple[str, str]]:
        return [training_pair(problem, tokenizer, config.data.prompt) for problem in problems]

    train_rows, train_dropped = rows(gold(train) if train_pairs is None else train_pairs, "training")
    val_rows, val_dropped = rows(gold(val), "validation")
    counts = {
        "train_examples": len(train_rows),
        "val_examples": len(val_rows),
        "dropped_too_long": {"train": train_dropped, "validation": val_dropped},
    }
    if train_dropped or val_dropped:
        print(
            f"dropped {train_dropped} training and {val_dropped} validation examples longer than "
            f"data.max_length={config.data.max_length}"
        )
    return Dataset.from_list(train_rows), Dataset.from_list(val_rows), counts


def make_lora_config(config: Config, model):
    """PEFT's LoraConfig, after checking that the target modules exist: PEFT only fails
    when nothing matches, so a typo in one name of a list would silently adapt less."""
    from peft import LoraConfig

    lora = config.lora
    targets = lora.target_modules
    names = [name for name, _ in model.named_modules() if name]
    if targets != "all-linear":
        if isinstance(targets, str):
            matched = [n for n in names if re.fullmatch(targets, n)]
            if not matched:
                raise MathtuneError(f"lora.target_modules '{targets}' matches no module of the model")
        else:
            missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
            if missing:
                examples = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
                raise MathtuneError(
                    f"lora.target_modules {missing} match no module of the model "
                    f"(its linear layers: {', '.join(examples)})"
                )
            if any(t == "lm_head" or t.endswith(".lm_head") for t in targets):
                raise MathtuneError("lora.target_modules: 'lm_head' cannot be adapted (TRL scores it directly)")
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias=lora.bias,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


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
        report_to=list(t.report_to) or "none",
        # Every LoRA parameter receives a gradient each step, so DDP need not search for unused ones.
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),  # and so several CPU processes are data-parallel (gloo)
    )


def build_trainer(config, run_dir, model, tokenizer, train_set, val_set, peft_config, *, eval_on_start=True):
    from trl import SFTConfig, SFTTrainer

    t = config.train
    args = SFTConfig(
        **trainer_arguments(config, run_dir),
        per_device_eval_batch_size=t.batch_size,
        # Data: prompt/completion form, loss on the completion only; packing is TRL's
        # best-fit-decreasing, which keeps examples whole and passes per-example position
        # ids, from which transformers builds a block-diagonal mask (tests/test_train_packing.py).
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
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        include_num_input_tokens_seen="non_padding",
    )
    callbacks = [MetricsFileCallback(run_dir / "train" / "metrics.jsonl")]
    if t.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


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
        self.order = ("step", "epoch") + (order or TRAIN_FIELDS + EVAL_FIELDS) + ("elapsed_s",)
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
            write_atomic(self.path, "".join(json.dumps(line) + "\n" for line in lines))
        else:
            with self.path.open("a") as fh:
                fh.write(json.dumps(lines[-1]) + "\n")


# ---------------------------------------------------------------------------------------
# Outputs


def save_adapter(model, target: Path) -> None:
    """Save into a sibling folder and rename, so adapter/ is never half-written."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def peak_memory() -> tuple[int, str]:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


def make_summary(config: Config, trainer, data_counts: dict, resumed_from: Path | None) -> dict:
    state, metrics_path = trainer.state, Path(trainer.args.output_dir).parent / "metrics.jsonl"
    lines = read_jsonl_until_torn(metrics_path) if metrics_path.is_file() else []
    wall = lines[-1]["elapsed_s"] if lines else 0.0
    tokens = int(state.num_input_tokens_seen)
    memory, memory_kind = peak_memory()
    on_gpu = torch.cuda.is_available()
    world = trainer.args.world_size
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    best_step = state.best_global_step
    hourly = config.train.gpu_hourly_usd
    return {
        "method": config.train.method,
        "model": config.model.name_or_path,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs_completed": round(state.epoch or 0.0, 4),
        "best_step": best_step,
        "best_eval_loss": state.best_metric,
        "best_checkpoint": os.path.relpath(state.best_model_checkpoint, metrics_path.parent.parent)
        if state.best_model_checkpoint
        else None,
        "stopped_early": state.global_step < state.max_steps,
        "early_stopping_patience": config.train.early_stopping_patience,
        "train_examples": data_counts["train_examples"],
        "val_examples": data_counts["val_examples"],
        "dropped_too_long": data_counts["dropped_too_long"],
        "data_sources": data_counts.get("sources"),
        "wall_time_s": wall,
        "tokens_seen": tokens,
        "tokens_seen_kind": "input tokens (prompt + answer, no padding) of all training steps, all processes",
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "trainable_params": trainable,
        "total_params": total,
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "world_size": world,
        # What ran: the base weights' dtype and the attention the model was built with.
        "dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "dtype_requested": config.model.dtype,
        "attention": getattr(trainer.model.config, "_attn_implementation", None),
        "batch_size": config.train.batch_size,
        "trust_remote_code": config.model.trust_remote_code,
        "data_identity": data_identity(config.data.source, "train", config.data.format()),
        "gpu_hourly_usd": hourly,
        "cost_usd": round(hourly * world * wall / 3600, 4) if on_gpu else None,
        "cost_note": f"{world} GPU(s) x {wall / 3600:.3f} h x ${hourly}/h" if on_gpu else "not applicable on CPU",
        "resumed_from_step": checkpoint_step(resumed_from) if resumed_from else None,
        **({"rate_note": "wall time and tokens/s count the steps kept from every session, each timed when it "
                         "ran; steps lost after the last checkpoint were redone and count once"}
           if resumed_from else {}),
        "versions": library_versions(),
    }


