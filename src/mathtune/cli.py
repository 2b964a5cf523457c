"""Command line: parses arguments and dispatches to one stage module each. No logic here.

    mathtune run CONFIG [--set key=value ...] [--out DIR]
    mathtune train CONFIG [--set ...] [--out DIR] [--overwrite]
    mathtune plan CONFIG [--set ...] [--device h100|a100|cpu] [--json]
    mathtune eval --model M [--adapter DIR] [--data SOURCE] [--split test] [--limit N]
                  [--prompt chat|cot8|plain5] [--samples K] [--out DIR]
    mathtune score FILE.jsonl [--out FILE]
    mathtune report RUN_DIR
    mathtune compare RUN_DIR RUN_DIR ...
    mathtune export RUN_DIR --merged OUT
    mathtune demo
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import get_args

from mathtune import __version__
from mathtune.analysis.compare import compare_table, render_markdown
from mathtune.config import (EVAL_PROMPTS, PROBE_KINDS, QUANTIZATIONS, Config, EvalConfig, ModelConfig,
                             ProbeConfig, absolute_if_local, config_to_yaml, load_config, sampling_setting_error)
from mathtune.core import terminal
from mathtune.core.cpu_share import share_cpu
from mathtune.core.errors import MathtuneError
from mathtune.core.processes import this_process
from mathtune.core.record_json import to_json
from mathtune.core.runfiles import check_output_folder, disk_full_is_one_line, disk_full_message, is_disk_full
from mathtune.core.stats import counted
from mathtune.core.terminal import say
from mathtune.demo import run_demo
from mathtune.evaluation.regression import EXTRA_FOLDER, ExtraSpec, check_extra, extra_finished, run_extra_tasks
from mathtune.evaluation.request import EvalRequest, default_name, load_problems
from mathtune.evaluation.rescore import score_file
from mathtune.plan import format_plan, make_plan
from mathtune.task.data import DataFormat


def _probe_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in PROBE_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(PROBE_KINDS)}")
    return [k for k in PROBE_KINDS if k in kinds]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user mistake
        self.exit(2, f"{self.prog}: error: {message}\n")


HELP_WIDTH = 80  # --help wraps at 80 columns, or the terminal's width where it is narrower


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help shows each option's default (where it has one and the text does not already say
    it), and the examples as written (each written to fit HELP_WIDTH); the description is
    wrapped here, since the raw formatter keeps it as given."""

    def __init__(self, prog: str, **kwargs):
        kwargs["width"] = min(HELP_WIDTH, shutil.get_terminal_size().columns)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


EXAMPLES = {
    "run": "examples:\n  mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml\n"
           "  mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml --set train.epochs=1 \\\n"
           "      --set eval.limit=200 --out runs/quick\n"
           "  mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml --print-config",
    "plan": "examples:\n  mathtune plan configs/qwen2-1.5b-gsm8k-lora.yaml --device h100\n"
            "  mathtune plan configs/qwen2-1.5b-gsm8k-lora.yaml --set train.epochs=1 --json\n"
            "  mathtune plan configs/qwen2-1.5b-gsm8k-lora.yaml --show-example 3",
    "train": "examples:\n  mathtune train configs/qwen2-1.5b-gsm8k-rft.yaml --out runs/rft\n"
             "  mathtune train configs/qwen2-1.5b-gsm8k-lora.yaml \\\n      --set train.learning_rate=1e-4",
    "eval": "examples:\n  mathtune eval --model Qwen/Qwen2-1.5B --limit 200\n"
            "  mathtune eval --model Qwen/Qwen2-1.5B --prompt cot8 \\\n"
            "      --adapter runs/qwen2-1.5b-gsm8k-lora/adapter\n"
            "  mathtune eval --model ./my-model --data ../gsm8k --samples 8 --temperature 0.7\n"
            "  mathtune eval --model ./my-model --data ../gsm8k --prompt chat-verify \\\n      --limit 100",
    "probe": "examples:\n  mathtune probe --model Qwen/Qwen2-1.5B --limit 200 --variants 2\n"
             "  mathtune probe --model Qwen/Qwen2-1.5B --out runs/probe-tuned \\\n"
             "      --adapter runs/qwen2-1.5b-gsm8k-lora/adapter",
    "score": "examples:\n  mathtune score runs/eval/eval/base.jsonl\n"
             "  mathtune score samples_gsm8k_2026-11-27.jsonl --out rescored.jsonl",
    "report": "example:\n  mathtune report runs/qwen2-1.5b-gsm8k-lora",
    "compare": "example:\n  mathtune compare runs/sft runs/rft runs/grpo",
    "sweep": "examples:\n  mathtune sweep configs/qwen2-1.5b-gsm8k-lora.yaml --grid lora.r=8,32\n"
             "  mathtune sweep my.yaml --grid lora.r=8,32 \\\n"
             "      --grid train.learning_rate=1e-4,2e-4 --out runs/r-lr",
    "export": "example:\n  mathtune export runs/qwen2-1.5b-gsm8k-lora --merged merged/qwen2-1.5b-gsm8k",
    "demo": "example:\n  mathtune demo",
    "doctor": "examples:\n  mathtune doctor\n  mathtune doctor --device cpu --json",
}


def _choices(section, key: str) -> tuple:
    """The values a config key's Literal allows."""
    return get_args(section.model_fields[key].annotation)


def _config_args(sp, *, writes: bool = True):
    sp.add_argument("config", help="YAML config (every key optional, an empty file included; "
                                   "defaults = the reference experiment)")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key, e.g. --set train.epochs=1")
    if writes:  # plan writes nothing: it prints the plan, and that is its output
        sp.add_argument("--out", type=Path, help="run directory (default runs/<name>)")
    sp.add_argument("--print-config", action="store_true",
                    help="print the resolved config, every default filled in, and exit")
    if writes:
        sp.add_argument("--quiet", action="store_true", help="print only errors and the final paths")


def _model_args(sp, *, sampling: bool):
    """What names a model and its benchmark: shared by eval and probe. Defaults and choices are
    the config's, so a flag and its config key cannot disagree."""
    defaults = Config()
    sp.add_argument("--model", required=True, help="hub id, local folder, or .gguf file")
    sp.add_argument("--adapter", help="PEFT adapter folder to attach")
    sp.add_argument("--data", default=defaults.data.source,
                    help="hub dataset id, folder with train.jsonl/test.jsonl, or one JSONL file (a test set)")
    sp.add_argument("--split", default=defaults.eval.split, choices=_choices(EvalConfig, "split"),
                    help="which split to benchmark: test (the source's test split, named by --data-split), or "
                         "train or validation as a run splits the source's train split (seeded)")
    sp.add_argument("--question-field", default=defaults.data.fields.question, help="the record field holding the question")
    sp.add_argument("--answer-field", default=defaults.data.fields.answer,
                    help="the record field holding the answer (a solution ending in '#### N', or a bare number)")
    sp.add_argument("--data-config", help="hub dataset config (default: 'main' for openai/gsm8k)")
    sp.add_argument("--data-split", default=defaults.data.split,
                    help="the name of the source's split that --split test reads: a hub split name, or a file "
                         "stem in a folder (e.g. testmini for GSM-Plus)")
    sp.add_argument("--limit", type=_positive_int, help="only the first N problems")
    sp.add_argument("--prompt", default=defaults.eval.prompt, choices=EVAL_PROMPTS,
                    help="prompt format (chat-verify: chat, then a self-check turn, scored on the final turn)")
    if sampling:
        sp.add_argument("--samples", type=_positive_int, default=defaults.eval.samples,
                        help="completions per problem (majority vote; maj@k and pass@k in the report)")
        sp.add_argument("--temperature", type=_nonneg_float,
                        help="sampling temperature (default 0; 0.7 when --samples > 1)")
    sp.add_argument("--max-new-tokens", type=_positive_int, default=defaults.eval.max_new_tokens, help="generation budget per completion")
    sp.add_argument("--batch-size", type=_batch_size, default=defaults.eval.batch_size,
                    help="problems decoded at once; auto fits the GPU's free memory (32 rows on a CPU)")
    sp.add_argument("--dtype", default=defaults.model.dtype, choices=_choices(ModelConfig, "dtype"),
                    help="auto: bfloat16 on a GPU, float32 on a CPU")
    sp.add_argument("--quantization", default=defaults.model.quantization, choices=QUANTIZATIONS,
                    help="load the base weights quantized by bitsandbytes (4bit: NF4, double quantization; "
                         "8bit: LLM.int8()), as a run with model.quantization does; needs bitsandbytes: "
                         "pip install -c constraints.txt -e '.[qlora]'")
    sp.add_argument("--thinking", choices=_choices(ModelConfig, "thinking"),
                    help="the chat template's thinking mode: auto (its default), on, off (model.thinking); default: "
                         "the adapter's run's, else auto")
    sp.add_argument("--seed", type=int, default=defaults.seed, help="seeds the split, the few-shot draw and sampling")
    sp.add_argument("--trust-remote-code", action="store_true",
                    help="run Python code shipped with the model (a custom architecture); off by default")
    sp.add_argument("--name", help="record name: writes OUT/eval/NAME.jsonl (default: from model and prompt)")
    sp.add_argument("--quiet", action="store_true", help="print only errors and the final paths")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace a finished record of the same name made with other settings")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mathtune", description="LoRA fine-tuning and an honest GSM8K benchmark from one config file.",
                formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"mathtune {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    add = sub.add_parser

    def add_parser(name: str, **kwargs):
        description = textwrap.fill(kwargs.get("help") or "", HELP_WIDTH - 2)
        return add(name, formatter_class=_Help, epilog=EXAMPLES[name], description=description, **kwargs)

    sub.add_parser = add_parser

    sp = sub.add_parser("run", help="train, evaluate base and tuned, analyze, report")
    _config_args(sp)
    sp.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds another config's run")

    sp = sub.add_parser("sweep", help="a grid of runs into sibling folders, then their comparison (md and html)")
    _config_args(sp)
    sp.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", required=True,
                    help="a config key and its values, e.g. --grid lora.r=8,32; several --grid make every "
                         "combination (default --out runs/<name>-sweep)")

    sp = sub.add_parser("train", help="LoRA training only (train.method: sft, rft or grpo)")
    _config_args(sp)
    sp.add_argument("--overwrite", action="store_true", help="start over in a DIR that holds another config's run")

    sp = sub.add_parser("plan", help="what a run will do and cost: tokens, steps, FLOPs, time, memory; loads no weights")
    _config_args(sp, writes=False)
    sp.add_argument("--device", help="plan for this device (h100, a100, h200, l4, cpu; default: this machine's)")
    sp.add_argument("--json", action="store_true", help="print the plan as JSON (formulas and rates' derivation included)")
    sp.add_argument("--verbose", action="store_true",
                    help="also print how the rates were measured, and the FLOPs, decoding and memory formulas")
    sp.add_argument("--show-example", nargs="?", type=int, const=0, metavar="N",
                    help="also show training example N (default 0) token by token as the trainer feeds it, "
                         "with its loss mask, and the same question's evaluation prompt")

    sp = sub.add_parser("eval", help="benchmark a model on GSM8K")
    _model_args(sp, sampling=True)
    sp.add_argument("--extra", nargs="+", default=[], metavar="TASK",
                    help="also score lm-evaluation-harness tasks on the same loaded model (e.g. mmlu arc_easy); "
                         "needs lm-evaluation-harness: pip install -c constraints.txt -e '.[extra]'")
    sp.add_argument("--extra-data", action="append", default=[], metavar="TASK=PATH",
                    help="a local data folder for a task, e.g. mmlu=data/mmlu (MMLU's CSV layout)")
    sp.add_argument("--extra-subjects", nargs="+", metavar="SUBJECT", help="MMLU subjects (default: all in the folder)")
    sp.add_argument("--extra-limit", type=_positive_int, help="at most N documents per task (per MMLU subject)")
    sp.add_argument("--out", type=Path, help="output folder (default runs/eval)")
    sp.add_argument("--json", action="store_true", help="print only the summary, as JSON (no progress bar)")

    sp = sub.add_parser("probe", help="robustness probe: test problems and variants (changed numbers, renamed people, "
                        "larger numbers), paired per kind")
    _model_args(sp, sampling=False)
    sp.add_argument("--variants", type=_positive_int, default=ProbeConfig().variants, help="variants per problem and kind")
    sp.add_argument("--kinds", type=_probe_kinds, default=ProbeConfig().kinds,
                    help="what the variants change, comma-separated: numbers (new numbers, gold recomputed), "
                         "names (the people renamed, gold unchanged), magnitudes (numbers x10/x100/x1000, gold "
                         "recomputed); default numbers")
    sp.add_argument("--out", type=Path, help="output folder (default runs/probe); gets a report")

    sp = sub.add_parser("score", help="re-score completions produced anywhere")
    sp.add_argument("file", type=Path, help="JSONL with 'completion' and 'answer' per line, or an "
                    "lm-evaluation-harness --log_samples file (samples_TASK_DATE.jsonl; detected)")
    sp.add_argument("--out", type=Path, help="where to write the scored lines (default: FILE.scored.jsonl beside FILE)")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")

    sp = sub.add_parser("report", help="rebuild analysis.json and the report from a run folder")
    sp.add_argument("run_dir", type=Path, help="a run folder (from run, train or eval)")
    sp.add_argument("--overwrite", action="store_true",
                    help="replace an analysis.json that was edited after mathtune wrote it")

    sp = sub.add_parser("compare", help="side-by-side table of finished runs")
    sp.add_argument("run_dirs", type=Path, nargs="+", help="two or more run folders; the first is the reference")
    sp.add_argument("--force", action="store_true",
                    help="compare accuracies measured on different data or protocols (marked in the output)")
    sp.add_argument("--json", action="store_true", help="print the table and each run's figures as JSON")

    sp = sub.add_parser("export", help="write the base model with the adapter merged in")
    sp.add_argument("run_dir", type=Path, help="a trained run folder (holds adapter/)")
    sp.add_argument("--merged", type=Path, required=True, help="output folder for the merged model")

    sub.add_parser("demo", help="the whole pipeline on a small real model, on CPU, offline")

    sp = sub.add_parser("doctor", help="this machine's environment, and each fast path checked against its reference")
    sp.add_argument("--model", help="hub id or local folder whose config gives the shapes (default: Qwen2-1.5B's)")
    sp.add_argument("--device", choices=["cuda", "cpu"], help="check on this device (default: the GPU if any)")
    sp.add_argument("--json", action="store_true", help="print {device, versions, checks} as JSON")
    return p


def _config(args):
    """The resolved config; with --print-config it is printed and the command stops."""
    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(config_to_yaml(config), end="")
        return None
    return config


def _out(args, default: Path) -> Path:
    """The output folder (--out, or the default), checked before anything is read or printed."""
    out = args.out or default
    check_output_folder(out, "--out" if args.out else "output folder")
    return out


def _cmd_run(args) -> None:
    from mathtune.pipeline import run_experiment

    config = _config(args)
    if config is None:
        return
    run_experiment(config, _out(args, Path("runs") / config.name), overwrite=args.overwrite)


def _cmd_sweep(args) -> None:
    from mathtune.sweep import run_sweep

    config = _config(args)
    if config is None:
        return
    run_sweep(args.config, args.grid, _out(args, Path("runs") / f"{config.name}-sweep"), args.overrides)


def _cmd_train(args) -> None:
    from mathtune.train.run import run_train

    config = _config(args)
    if config is None:
        return
    run_dir = run_train(config, _out(args, Path("runs") / config.name), overwrite=args.overwrite)
    if this_process().is_first:  # the final paths are said once
        print(f"adapter: {run_dir / 'adapter'}")  # a final path: printed under --quiet too


def _cmd_plan(args) -> None:
    config = _config(args)
    if config is None:
        return
    plan = make_plan(config, device=args.device)
    view = None
    if args.show_example is not None:
        from mathtune.train.example_view import JSON_KEYS, format_example, show_example

        view = show_example(config, args.show_example)
        plan.example = {k: view[k] for k in JSON_KEYS}
    if args.json:
        print(json.dumps(to_json(plan)))
        return
    print(format_plan(plan, verbose=args.verbose))
    if not args.verbose:
        print("  (--verbose: how the rates were measured; the FLOPs, decoding and memory formulas)")
    if view is not None:
        print(format_example(view))


def _eval_request(args):
    samples = getattr(args, "samples", 1)
    temperature = getattr(args, "temperature", None)
    if temperature is None:
        temperature = 0.7 if samples > 1 else 0.0
    error = sampling_setting_error(samples, temperature, args.prompt)
    if error:
        raise MathtuneError(f"{error} (given --samples {samples}, --temperature {temperature}, --prompt {args.prompt})")
    from mathtune.models.quantize import check_quantization

    check_quantization(args.quantization, args.model)  # a .gguf, or bitsandbytes missing: before any data is read
    return EvalRequest(  # local paths recorded as absolute paths, so a rerun from elsewhere matches
        model=absolute_if_local(args.model),
        adapter=absolute_if_local(args.adapter) if args.adapter else None,
        data=absolute_if_local(args.data),
        split=args.split,
        limit=args.limit,
        prompt=args.prompt,
        samples=samples,
        temperature=temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        seed=args.seed,
        val_fraction=Config().data.val_fraction,  # the validation split a --split validation reads
        trust_remote_code=args.trust_remote_code,
        data_format=DataFormat(question=args.question_field, answer=args.answer_field, config=args.data_config,
                               test_split=args.data_split),
        quantization=args.quantization,
        prompt_date=None,  # settled at the door (resolve_request): the date its records hold, else today
        # As the adapter's run trained, unless given (settled at the door): an adapter learned one mode's format.
        thinking=args.thinking,
    )


def _extra_spec(args):
    if not args.extra:
        return None
    data = {}
    for item in args.extra_data:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise MathtuneError(f"--extra-data takes TASK=PATH, got '{item}'")
        data[task] = absolute_if_local(path)
    spec = ExtraSpec(tasks=tuple(args.extra), data=data, limit=args.extra_limit,
                     subjects=tuple(args.extra_subjects) if args.extra_subjects else None)
    check_extra(spec)  # before the model is loaded
    return spec


def _cmd_eval(args) -> None:
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.records import EvalPaths
    from mathtune.evaluation.summary import eval_summary_json

    from mathtune.evaluation.resolve import resolve_request

    out = _out(args, Path("runs") / "eval")
    request, spec = _eval_request(args), _extra_spec(args)
    name = args.name or default_name(request)
    request = resolve_request(request, EvalPaths.for_name(out, name))  # the door: nothing below settles these again
    model = tokenizer = None
    # one load for GSM8K and the lm-eval tasks; lm-eval results of another spec refused before it
    if spec is not None and not extra_finished(out, name, spec, overwrite=args.overwrite):
        from mathtune.models.load import load_model

        load_problems(request)  # data errors before the slow load
        model, tokenizer = load_model(request.model_section(), adapter=request.adapter, merge_adapter=True)
    with disk_full_is_one_line(out):
        summary = eval_summary_json(evaluate(request, out_dir=out, name=name, overwrite=args.overwrite,
                                             model=model, tokenizer=tokenizer))
    if spec is not None:
        with disk_full_is_one_line(out):
            # a finished spec is read back, no model needed
            extra = run_extra_tasks(model, tokenizer, name, out, spec, overwrite=args.overwrite)
        summary["extra"] = to_json(extra.tasks)
        if not args.json:
            for task, t in extra.tasks.items():
                lo, hi = t.ci95_pct
                say(f"{task}: {t.metric} {t.accuracy_pct}% [{lo}%, {hi}%] of {t.n} (lm-eval {extra.lm_eval_version})")
    if not this_process().is_first:  # the final paths are said once
        return
    if args.json:
        print(json.dumps(summary))
        return
    paths = EvalPaths.for_name(out, name)  # the final paths: printed under --quiet too
    print(f"records: {paths.records}\nsummary: {paths.summary}")
    if spec is not None:
        print(f"lm-eval records: {out / EXTRA_FOLDER / (name + '.jsonl')}\n"
              f"lm-eval summary: {out / EXTRA_FOLDER / (name + '.summary.json')}")


def _cmd_probe(args) -> None:
    from mathtune.pipeline import run_probe

    out = _out(args, Path("runs") / "probe")
    run_probe(_eval_request(args), out, variants=args.variants, name=args.name, overwrite=args.overwrite,
              kinds=args.kinds)


def _cmd_score(args) -> None:
    s = score_file(args.file, args.out)
    if args.json:
        print(json.dumps(s))
        return
    lo, hi = s["ci95_strict"]
    flo, fhi = s["ci95_flexible"]
    print(f"strict {s['accuracy_strict']:.1%} [{lo:.1%}, {hi:.1%}]  flexible {s['accuracy_flexible']:.1%} "
          f"[{flo:.1%}, {fhi:.1%}]  n={s['n']}")
    for name, figures in (s.get("lm_eval") or {}).items():
        differ = figures.get("exact_match_differ")
        print(f"lm-eval {name}: exact_match {figures.get('exact_match')}"
              + (f", differs from mathtune's {figures.get('compared_with')} on {counted(differ, 'problem')}" if differ is not None else ""))
    print(f"scored lines: {s['out']}")


def _cmd_report(args) -> None:
    from mathtune.pipeline import rebuild_report

    rebuild_report(args.run_dir, overwrite=args.overwrite)


def _cmd_compare(args) -> None:
    table = compare_table(args.run_dirs, force=args.force)
    print(json.dumps(table) if args.json else render_markdown(table))


def _cmd_export(args) -> None:
    from mathtune.models.export import export_merged

    check_output_folder(args.merged, "--merged")
    print(f"merged model: {export_merged(args.run_dir, args.merged)}")


def _cmd_demo(args) -> None:
    run_demo()


def _cmd_doctor(args) -> None:
    from mathtune.train.selfcheck import failed_auto_paths, run_doctor

    report = run_doctor(args.model, args.device, show=None if args.json else lambda line: print(line, flush=True))
    if args.json:
        print(json.dumps(report))
    failed = failed_auto_paths(report)
    if failed:
        raise MathtuneError("a path auto picks here failed its check: " + ", ".join(c["name"] for c in failed))


COMMANDS = {
    "run": _cmd_run,
    "sweep": _cmd_sweep,
    "train": _cmd_train,
    "plan": _cmd_plan,
    "eval": _cmd_eval,
    "probe": _cmd_probe,
    "score": _cmd_score,
    "report": _cmd_report,
    "compare": _cmd_compare,
    "export": _cmd_export,
    "demo": _cmd_demo,
    "doctor": _cmd_doctor,
}


def os_error_line(err: OSError) -> str:
    """'No space left on device: /runs/x/eval/base.partial.jsonl' from an OSError."""
    what = err.strerror or str(err) or type(err).__name__
    where = " -> ".join(str(f) for f in (err.filename, err.filename2) if f is not None)
    return f"{what}: {where}" if where else what


def skip_exit_collection() -> None:
    """Let the process exit without Python's last garbage collection. After torch and
    transformers are imported that collection walks millions of objects: about 1.6 s of a 10 s
    `mathtune eval --limit 1` on 2 CPU cores (bench/startup.py). Frozen objects are left out of
    it; every file mathtune writes is closed (or renamed into place) before the command
    returns, so nothing waits on a finalizer."""
    atexit.unregister(gc.freeze)  # once, however often main runs in one process
    atexit.register(gc.freeze)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    skip_exit_collection()
    if not (sys.argv[1:] if argv is None else argv):  # bare `mathtune`: the usage and the commands
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    share_cpu()  # before anything imports torch: a busy CPU then slows mathtune in proportion
    # Quiet the libraries' own chatter; our progress bars and messages are what users read.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    # The libraries' own bars (loading weights, mapping a dataset) are short; ours show the stages.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # Libraries that give their logger a terminal handler of their own when first imported:
    # only errors there (terminal.quiet_libraries routes the rest, run.log keeps it).
    for variable in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY"):
        os.environ.setdefault(variable, "error")
    if "transformers" in sys.modules:  # imported before main (a test, a notebook): the variable came too late
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    terminal.QUIET = bool(getattr(args, "quiet", False) or getattr(args, "json", False))
    try:
        with terminal.quiet_libraries():  # their warnings reach run.log where there is one, never the terminal
            COMMANDS[args.command](args)
    except MathtuneError as err:
        print(f"mathtune: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mathtune: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mathtune compare ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:  # the machine's answer, not a mistake in mathtune: a full disk, a read-only folder
        line = disk_full_message(err) if is_disk_full(err) else os_error_line(err)
        print(f"mathtune: error: {line}", file=sys.stderr)
        return 1
    finally:
        terminal.QUIET = False  # --quiet is this command's, not the process's (main may run again)
    return 0
