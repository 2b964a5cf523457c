"""LoRA fine-tuning on GSM8K: the training stage of a run.

    mathtune train CONFIG [--set key=value ...] [--out DIR] [--overwrite]
    torchrun --nproc-per-node 2 -m mathtune train CONFIG [--out DIR]      (data parallel)

TRL's SFTTrainer does the training and PEFT the LoRA adapter (train.trainer builds them, and
train.rft and train.grpo the other methods' inputs); this module drives a run: it keeps the run
folder consistent and writes what later stages read:

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

import json
import os
import resource
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from transformers import TrainerCallback

from mathtune.config import Config, config_from_yaml_text, config_to_yaml, with_prompt_date
from mathtune.core.errors import MathtuneError
from mathtune.core.finished import finished_stage
from mathtune.core.processes import Process, this_process
from mathtune.core.provenance import ADAPTER_CONTENT, describe_adapter, library_versions
from mathtune.core.runfiles import disk_full_is_one_line, read_jsonl_until_torn, write_atomic
from mathtune.core.terminal import duration, run_log, say
from mathtune.models.load import load_model, load_tokenizer, process_device
from mathtune.models.quantize import prepare_for_training, quantization_record
from mathtune.task.training_set import training_set
from mathtune.task.train_summary import ExactMatch, TrainSummary, write_train_summary
from mathtune.train.accuracy import ANSWERS_FILE
from mathtune.train.checkpoints import (checkpoint_step, complete_checkpoints, file_problem, last_complete_checkpoint,
                                       repoint_best)
from mathtune.train.divergence import DivergenceCallback, Diverged, divergence_message
from mathtune.train.lm_head import use_lm_head
from mathtune.train.methods import TRAINING_METHOD_TABLE, TrainingData, TrainingMethod
from mathtune.train.progress import replace_progress
from mathtune.train.selfcheck import checked_training_paths
from mathtune.train.trainer import check_before_loading, check_trackers, make_lora_config

# The sections that decide what gets trained; eval.* and report.* may change between a
# training run and a later evaluation of it.
TRAINING_KEYS = ("seed", "model", "data", "lora", "train")




def run_train(config: Config, out_dir: Path, overwrite: bool = False, *, checked: bool = False) -> Path:
    """Train (or resume, or skip) the run in out_dir; returns the run folder. `checked`: the
    caller's preflight has run check_before_loading already (`mathtune run`)."""
    run_dir = Path(out_dir)
    config = with_prompt_date(config, run_dir)  # one date for every prompt of this run folder
    here = this_process()  # under torchrun: joins the process group

    # --- setup: every user mistake is raised here, before the run folder is touched ---
    status = inspect_run_dir(run_dir, config, overwrite)
    if status == "done":
        if here.is_first:
            say(f"training already finished in {run_dir} (adapter/ and train/summary.json exist); skipping")
        return run_dir
    # Library warnings and logs go to run.log, not the terminal; held until the checks pass.
    with disk_full_is_one_line(run_dir), run_log(run_dir, start=False) as log:
        return _train(config, run_dir, here, log, checked, overwrite)


def _train(config: Config, run_dir: Path, here: Process, log, checked: bool, overwrite: bool) -> Path:
    """The training steps, in order: data, model, resume, (RFT's samples), fit, save."""
    check_trackers(config.train.report_to)
    if not checked:
        check_before_loading(config)  # quantization, LoRA settings, target modules: before data or weights load
    method = TRAINING_METHOD_TABLE.get(config.train.method)
    data = _data(config, method)
    model, peft_config, head, fast_paths = _model(config, method)
    checkpoint = _resume(config, run_dir, here, log, overwrite)
    # A method that trains on the model's own samples draws them first; their counts are saved with the summary.
    sampled = method.samples_first(config, run_dir, model, data) if method.samples_first else None
    trainer = method.trainer(config, run_dir, model, data, peft_config, checkpoint)
    if here.is_first:
        trainer.add_callback(DropReplacedRun(run_dir))
    if method.fused_head:
        head = use_lm_head(trainer.model, head)  # lean unless its check failed here (then TRL's own)
    # The adapter's dtype while it trains: TRL keeps a quantized base's adapter in bf16, as the
    # QLoRA paper did (the best checkpoint's adapter is read back in fp32 at the end).
    adapter_dtype = next((str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters() if p.requires_grad),
                         None)
    _fit(trainer, run_dir, config, checkpoint)
    _save(config, run_dir, here, trainer, data, checkpoint, adapter_dtype,
          {} if sampled is None else {method.saves: sampled}, {"lm_head": head, "fast_paths": fast_paths})
    return run_dir


def _data(config: Config, method: TrainingMethod) -> TrainingData:
    """Data first (no network for a local folder), then the tokenizer (no weights yet)."""
    problems = training_set(config)  # the main source's split, data.mix's sources beside it
    tokenizer = load_tokenizer(config.model.name_or_path, trust_remote_code=config.model.trust_remote_code)
    data = TrainingData(problems.train, problems.val, problems.sources, tokenizer, problems.forms, problems.identity,
                        problems.answer_form)
    data.train_set, data.val_set, data.counts = method.datasets(config, data)
    return data


def _model(config: Config, method: TrainingMethod):
    """The base model, ready for its adapter, and the adapter's configuration."""
    quantized = config.model.quantization != "none"
    # GRPO trains on unpacked, padded batches. Each fast path is checked here before its first use.
    attention, head, fast_paths = checked_training_paths(config, config.train.packing and method.packs, method.fused_head)
    model, _ = load_model(
        config.model,
        attn_implementation=attention,
        # The Trainer moves a full-precision model to this process's device; a quantized one
        # is quantized on it and cannot move.
        device=process_device() if quantized else "cpu",
    )
    if quantized:
        model = prepare_for_training(model, gradient_checkpointing=config.train.gradient_checkpointing)
    return model, make_lora_config(config, model), head, fast_paths


def _resume(config: Config, run_dir: Path, here: Process, log, overwrite: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh start), with the run folder made ready for it:
    checkpoints cut short are named and removed (the resumed run writes them again), and an
    overwritten run's outputs are set aside before anything new is written."""
    newest, passed = (None, []) if overwrite else complete_checkpoints(run_dir / "train" / "checkpoints")
    here.wait()  # every process has read the folder before the first one changes it
    if here.is_first:
        for path, problem in passed:
            say(f"{path} skipped: {problem}")
        if overwrite:
            set_aside_run(run_dir)
        prepare_run_dir(run_dir, config, fresh=newest is None)
        for path, _ in passed:
            shutil.rmtree(path, ignore_errors=True)
        log.start()
        if newest is not None:
            repoint_best(newest)
            drop_replaced_run(run_dir)
            for kept in ("metrics.jsonl", ANSWERS_FILE):  # what the resumed run will log again goes
                truncate_metrics(run_dir / "train" / kept, checkpoint_step(newest))
            say(f"resuming from {newest}")
        elif passed:
            say("no complete checkpoint to resume from: training starts over")
    here.wait()
    return newest


def _fit(trainer, run_dir: Path, config: Config, checkpoint: Path | None) -> None:
    """Train; a run that diverged (train.divergence) ends here, exit 1, with no adapter written."""
    replace_progress(trainer, run_dir / "run.log", f"train ({config.train.method})")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    watch = next(c for c in trainer.callback_handler.callbacks if isinstance(c, DivergenceCallback))
    if watch.found is not None:
        kept = last_complete_checkpoint(run_dir / "train" / "checkpoints")
        raise Diverged(divergence_message(watch.found, config, kept))


def _save(config: Config, run_dir: Path, here: Process, trainer, data: TrainingData, checkpoint: Path | None,
          adapter_dtype: str | None, sampled: dict, paths: dict) -> None:
    """The adapter and train/summary.json. load_best_model_at_end has put the best checkpoint's
    adapter back into the model."""
    refuse_non_finite_adapter(trainer.model)
    if here.is_first:
        save_adapter(trainer.model, run_dir / "adapter")
        drop_replaced_run(run_dir)
        summary = make_summary(config, trainer, data.counts | {"sources": data.sources, "answer_forms": data.forms,
                                                              "data_identity": data.identity,
                                                              "prompt_answer_form": data.answer_form},
                               resumed_from=checkpoint)
        summary.adapter_settings = describe_adapter(run_dir / "adapter") | {"trained_dtype": adapter_dtype}
        summary = replace(summary, **paths)  # which fast paths ran, and why
        summary = replace(summary, **sampled)  # the counts of the model's own samples, under the method's key
        write_train_summary(run_dir / "train" / "summary.json", summary)
        em = summary.best_val_exact_match
        best = ("adapter of the last step" if summary.best_step is None else
                f"best step {summary.best_step} (validation exact match {em.correct}/{em.n}, "
                f"eval_loss {summary.best_eval_loss:.4f})" if em else
                f"best step {summary.best_step} (eval_loss {summary.best_eval_loss:.4f})")
        steps = summary.global_step
        say(f"training done ({config.train.method}): {best}, {steps} step{'' if steps == 1 else 's'} in "
            f"{duration(summary.wall_time_s)}")  # the adapter's path: the command's final line
    here.wait()


# ---------------------------------------------------------------------------------------
# The run folder


def training_part(config: Config) -> dict:
    return config.model_dump(mode="json", include=set(TRAINING_KEYS))


def training_outputs(run_dir: Path) -> list[Path]:
    """What the training stage wrote into train/. RFT's samples are not among them: they
    carry their own settings and are reused only when those match (train.rft), so a folder
    may be seeded with them and a fresh start keeps them."""
    folder = run_dir / "train"
    return [f for f in folder.iterdir() if not f.name.startswith("rft_samples.")] if folder.is_dir() else []


def inspect_run_dir(run_dir: Path, config: Config, overwrite: bool) -> str:
    """'done', 'resume' or 'fresh', without writing anything. A folder holding another
    config's training is an error unless overwrite is set."""
    config = with_prompt_date(config, run_dir)  # an unset date is the one the folder holds
    adapter_done = all(whole(run_dir / "adapter" / name) for name in ADAPTER_CONTENT)
    summary_done = whole(run_dir / "train" / "summary.json")
    has_training = bool(training_outputs(run_dir)) or (run_dir / "adapter").exists()
    saved = run_dir / "config.yaml"
    if overwrite:
        return "fresh"
    held = None
    if saved.is_file():
        try:
            held = training_part(config_from_yaml_text(saved.read_text(), str(saved)))
        except MathtuneError:
            raise MathtuneError(f"{saved} is not a valid mathtune config; use --overwrite or another --out") from None
    elif has_training:
        raise MathtuneError(f"{run_dir} holds training output but no config.yaml; use --overwrite or another --out")
    # Another config's training, finished or not, is refused: a resume would mix the two.
    same = finished_stage(held, training_part(config), where=str(run_dir), what="a run of a different config",
                          overwrite=False)
    if same and adapter_done and summary_done:
        return "done"
    return "resume" if last_complete_checkpoint(run_dir / "train" / "checkpoints") else "fresh"


def whole(path: Path) -> bool:
    """A finished training's output is there and whole; one cut short (a power cut after its
    rename) is said, and made again from the last complete checkpoint."""
    if not path.is_file():
        return False
    problem = file_problem(path)
    if problem:
        say(f"{path} is {problem}: training's last stage is done again")
    return problem is None


# Where `--overwrite` moves the outputs of the run it replaces, before anything new is written;
# removed once the new run has its first checkpoint (or its adapter). Nothing reads it: an
# interrupted overwrite leaves nothing of the old run that a resume could take as its own.
REPLACED = ".replaced"
# A run's outputs, by name; run.log (appended to) and RFT's samples (reused only when their own
# settings match) stay.
RUN_OUTPUTS = ("config.yaml", "plan.json", "adapter", "adapter.tmp", "eval", "probe", "extra", "figures",
               "analysis.json", "report.md", "report.html")


def set_aside_run(run_dir: Path) -> None:
    """Move every output of the run in run_dir into run_dir/.replaced (an earlier one set aside
    goes first)."""
    aside = run_dir / REPLACED
    shutil.rmtree(aside, ignore_errors=True)
    moving = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()] + training_outputs(run_dir)
    if not moving:
        return
    aside.mkdir(parents=True)
    for path in moving:
        target = aside / path.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    say(f"--overwrite: the earlier run's outputs set aside in {aside} until this run's first checkpoint")


def drop_replaced_run(run_dir: Path) -> None:
    shutil.rmtree(run_dir / REPLACED, ignore_errors=True)


class DropReplacedRun(TrainerCallback):
    """The run's first checkpoint is written: what --overwrite set aside can go."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_save(self, args, state, control, **kwargs):
        drop_replaced_run(self.run_dir)


def prepare_run_dir(run_dir: Path, config: Config, fresh: bool) -> None:
    """Write config.yaml; on a fresh start, clear what an earlier attempt of this stage left,
    except RFT's samples (they are reused only when their settings match, see train.rft)."""
    if fresh:
        shutil.rmtree(run_dir / "adapter", ignore_errors=True)
        for stale in training_outputs(run_dir):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    (run_dir / "train" / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / "config.yaml", config_to_yaml(config))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the lines of steps after the checkpoint we resume from: the resumed run logs
    them again, and the file must have no duplicates."""
    if not path.is_file():
        return
    kept = [line for line in read_jsonl_until_torn(path) if line["step"] <= step]
    write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept))


# ---------------------------------------------------------------------------------------
# Outputs


def refuse_non_finite_adapter(model) -> None:
    """An adapter with a non-finite weight is never written as the run's (a divergence the logs
    did not show). Every process checks, so under torchrun all of them stop together."""
    trained = [p for p in model.parameters() if p.requires_grad]
    bad = sum(int((~torch.isfinite(p)).sum()) for p in trained)
    if bad:
        total = sum(p.numel() for p in trained)
        raise Diverged(f"training diverged: {bad:,} of the adapter's {total:,} weights are not finite, so no adapter "
                       "was written; try a lower train.learning_rate, or model.dtype bfloat16 or float32")


def save_adapter(model, target: Path) -> None:
    """Save into a sibling folder and rename, so adapter/ is never half-written."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # on a full disk, the space it took is given back
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def peak_memory() -> tuple[int, str]:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "cuda_max_allocated"
    # ru_maxrss is in KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_max_rss"


def make_summary(config: Config, trainer, data_counts: dict, resumed_from: Path | None) -> TrainSummary:
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
    by_exact_match = config.train.select_by == "exact_match"
    at_best = next((line for line in lines if line["step"] == best_step and "eval_loss" in line), {})
    return TrainSummary(**{
        "method": config.train.method,
        "model": config.model.name_or_path,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs_completed": round(state.epoch or 0.0, 4),
        "select_by": config.train.select_by,
        "best_step": best_step,
        # By exact match the Trainer's best metric is the accuracy; the loss is that step's own.
        "best_eval_loss": at_best.get("eval_loss") if by_exact_match else state.best_metric,
        "best_val_exact_match": ExactMatch(correct=at_best["val_exact_match_correct"],
                                           n=at_best["val_exact_match_problems"]) if by_exact_match and at_best else None,
        "best_checkpoint": os.path.relpath(state.best_model_checkpoint, metrics_path.parent.parent)
        if state.best_model_checkpoint
        else None,
        "stopped_early": state.global_step < state.max_steps,
        "early_stopping_patience": config.train.early_stopping_patience,
        "train_examples": data_counts["train_examples"],
        "val_examples": data_counts["val_examples"],
        "dropped_too_long": data_counts["dropped_too_long"],
        "data_sources": data_counts.get("sources"),
        "answer_forms": data_counts.get("answer_forms"),
        "prompt_answer_form": data_counts["prompt_answer_form"],
        "wall_time_s": wall,
        "tokens_seen": tokens,
        "tokens_seen_kind": "input tokens (prompt + answer, no padding) of all training steps, all processes",
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "trainable_params": trainable,
        "base_params": total - trainable,
        "total_params": total,  # the base model's and the adapter's, as the plan counts them
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "world_size": world,
        # What ran: the base weights' dtype and the attention the model was built with.
        "dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "dtype_requested": config.model.dtype,
        "attention": getattr(trainer.model.config, "_attn_implementation", None),
        # The base weights as loaded (None: full precision).
        "quantization_record": quantization_record(trainer.model),
        "batch_size": config.train.batch_size,
        "trust_remote_code": config.model.trust_remote_code,
        "data_identity": data_counts["data_identity"],
        "gpu_hourly_usd": hourly,
        "cost_usd": round(hourly * world * wall / 3600, 4) if on_gpu else None,
        "cost_note": f"{world} GPU(s) x {wall / 3600:.3f} h x ${hourly}/h" if on_gpu else "not applicable on CPU",
        "resumed_from_step": checkpoint_step(resumed_from) if resumed_from else None,
        **({"rate_note": "wall time and tokens/s count the steps kept from every session, each timed when it "
                         "ran; steps lost after the last checkpoint were redone and count once"}
           if resumed_from else {}),
        "versions": library_versions(),
    })


