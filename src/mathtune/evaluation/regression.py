"""What the fine-tune cost elsewhere: general benchmarks through lm-evaluation-harness.

    spec = ExtraSpec.from_config(config.eval)
    run_extra_tasks(model, tokenizer, name, out_dir, spec) -> summary   (OUT/extra/NAME.*)

The model in memory (the base, or the base with the adapter) is handed to lm-evaluation-
harness's HF wrapper, never reloaded from disk; lm-eval builds the prompts, runs the
log-likelihoods and scores them, with its own metric (`acc`). MMLU can be read from a local
folder in the original CSV layout (dev/, val/, test/, one SUBJECT_SPLIT.csv each, rows
question,A,B,C,D,answer): mathtune writes one lm-eval task per subject with the prompt,
choices and description of lm-eval's own `mmlu` task, so the score means the same. Every
other task comes from the hub through lm-eval's own task definitions.

Per problem, OUT/extra/NAME.jsonl keeps which document of which task was right, so base and
tuned are paired on the same documents (analysis.followup_measures): the difference gets a paired
bootstrap interval and McNemar's exact test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mathtune.config import EvalConfig
from mathtune.core.errors import MathtuneError
from mathtune.core.finished import finished_stage
from mathtune.core.record_json import to_json
from mathtune.core.runfiles import jsonl_text, write_atomic
from mathtune.core.stats import wilson_share as share
from mathtune.core.terminal import say
from mathtune.evaluation.extra_summary import (ExtraIdentity, ExtraSummary, ExtraTaskResult, read_extra_summary,
                                               write_extra_summary)

EXTRA_FOLDER = "extra"
LOCAL_TASKS = ("mmlu",)  # the tasks whose data may come from a local folder (eval.extra_data)
METRIC = "acc"  # lm-eval's accuracy of the highest-likelihood choice, for every multiple-choice task
INSTALL = "pip install -c constraints.txt -e '.[extra]' (lm-evaluation-harness; in a clone of mathtune)"

MMLU_DOC_TO_TEXT = "{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\nAnswer:"


@dataclass(frozen=True)
class ExtraSpec:
    tasks: tuple[str, ...]
    data: dict[str, str] = field(default_factory=dict)
    subjects: tuple[str, ...] | None = None
    limit: int | None = None
    batch_size: int = 8

    @classmethod
    def from_config(cls, e: EvalConfig) -> "ExtraSpec":
        """eval.extra, eval.extra_data, eval.extra_subjects and eval.extra_limit of a run's config."""
        return cls(tasks=tuple(e.extra), data=dict(e.extra_data),
                   subjects=tuple(e.extra_subjects) if e.extra_subjects else None, limit=e.extra_limit)

    def identity(self) -> dict:
        return {"tasks": list(self.tasks), "data": dict(sorted(self.data.items())),
                "subjects": list(self.subjects) if self.subjects else None, "limit": self.limit}


def _mmlu_subjects(folder: Path, wanted: tuple[str, ...] | None) -> list[str]:
    found = sorted(p.name.removesuffix("_test.csv") for p in (folder / "test").glob("*_test.csv"))
    if not found:
        raise MathtuneError(f"task mmlu: no test/SUBJECT_test.csv in {folder} (MMLU's original CSV layout)")
    if wanted:
        missing = [s for s in wanted if s not in found]
        if missing:
            raise MathtuneError(f"task mmlu: no subject {', '.join(missing)} in {folder} (it has {', '.join(found[:5])}, ...)")
        return list(wanted)
    return found


def check_extra(spec: ExtraSpec) -> None:
    """Everything that can be known before a model is loaded: lm-eval installed, each task's
    data reachable (a local folder, or the hub), subjects present."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise MathtuneError(f"eval.extra needs lm-evaluation-harness: {INSTALL}")
    for task, path in spec.data.items():
        if task not in spec.tasks:
            raise MathtuneError(f"eval.extra_data names task '{task}', which is not in eval.extra")
        if task not in LOCAL_TASKS:
            raise MathtuneError(f"task {task}: local data is read for {', '.join(LOCAL_TASKS)} only; "
                                f"{task} comes from the hub through lm-eval")
        if not Path(path).is_dir():
            raise MathtuneError(f"task {task}: data folder not found: {path}")
        _mmlu_subjects(Path(path), spec.subjects)
    remote = [t for t in spec.tasks if t not in spec.data]
    if remote:
        from mathtune.core.hub import hub_reachable

        if not hub_reachable():
            raise MathtuneError(f"task {remote[0]}: its data comes from the hub, which cannot be reached from this "
                                "machine" + (f"; give a local copy with eval.extra_data: {{{remote[0]}: PATH}}"
                                             if remote[0] in LOCAL_TASKS else ""))


def _yaml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML string


def write_mmlu_tasks(folder: Path, subjects: list[str], task_dir: Path) -> list[str]:
    """One lm-eval task per subject over the local CSVs, prompted as lm-eval's own mmlu."""
    task_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for subject in subjects:
        name = f"mathtune_mmlu_{subject}"
        description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        files = {"test": folder / "test" / f"{subject}_test.csv", "dev": folder / "dev" / f"{subject}_dev.csv"}
        text = "\n".join([
            f"task: {name}",
            "dataset_path: csv",
            "dataset_kwargs:",
            "  data_files:",
            *[f"    {split}: {_yaml_str(str(path))}" for split, path in files.items() if path.is_file()],
            "  column_names: [question, A, B, C, D, answer]",
            "  header: null",
            "test_split: test",
            "fewshot_split: dev",
            "fewshot_config:\n  sampler: first_n",
            "output_type: multiple_choice",
            f"description: {_yaml_str(description)}",
            f"doc_to_text: {_yaml_str(MMLU_DOC_TO_TEXT)}",
            'doc_to_choice: ["A", "B", "C", "D"]',
            "doc_to_target: \"{{['A', 'B', 'C', 'D'].index(answer.strip())}}\"",
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true",
            "metadata:\n  version: 1.0",
        ]) + "\n"
        write_atomic(task_dir / f"{name}.yaml", text)
        names.append(name)
    return names


def lmeval_tasks(spec: ExtraSpec, out_dir: Path) -> tuple[dict[str, str], Path]:
    """(lm-eval task name -> the task it belongs to, the folder of mathtune's task files)."""
    task_dir = out_dir / EXTRA_FOLDER / "tasks"
    names: dict[str, str] = {}
    for task in spec.tasks:
        if task in spec.data:
            folder = Path(spec.data[task])
            for name in write_mmlu_tasks(folder, _mmlu_subjects(folder, spec.subjects), task_dir):
                names[name] = task
        else:
            names[task] = task
    return names, task_dir


def _paths(out_dir: Path, name: str) -> tuple[Path, Path]:
    folder = Path(out_dir) / EXTRA_FOLDER
    return folder / f"{name}.jsonl", folder / f"{name}.summary.json"


# The settings of ExtraSpec.identity(), named as the config names them (eval.extra, eval.extra_data, ...).
SETTING_NAMES = {"tasks": "extra", "data": "extra_data", "subjects": "extra_subjects", "limit": "extra_limit"}


def extra_finished(out_dir: Path, name: str, spec: ExtraSpec, *, overwrite: bool = False,
                   replacing: Callable[[list[str]], None] | None = None) -> bool:
    """Whether OUT/extra/NAME holds the finished results of this spec (reused). Results of another
    spec are refused unless overwrite, which replaces them (core.finished)."""
    summary_path = _paths(out_dir, name)[1]
    held = to_json(read_extra_summary(summary_path).spec) if summary_path.is_file() else None

    def named(identity: dict) -> dict:
        return {SETTING_NAMES.get(k, k): v for k, v in identity.items()}

    return finished_stage(None if held is None else named(held), named(spec.identity()), where=str(out_dir),
                          what=f"finished {EXTRA_FOLDER}/{name} results with other settings",
                          advice="use --overwrite to replace them, or another --out", overwrite=overwrite,
                          replacing=replacing)


def run_extra_tasks(model, tokenizer, name: str, out_dir: Path, spec: ExtraSpec, *,
                    overwrite: bool = False) -> ExtraSummary:
    """Score the loaded model on spec.tasks with lm-eval; writes OUT/extra/NAME.jsonl (one
    line per document) and NAME.summary.json; a finished run of the same spec is kept, one of
    another spec refused unless overwrite."""
    records_path, summary_path = _paths(out_dir, name)

    def replacing(differs: list[str]) -> None:
        say(f"{EXTRA_FOLDER}/{name}: replacing the finished results in {records_path} (differs in {', '.join(differs)})")

    if extra_finished(out_dir, name, spec, overwrite=overwrite, replacing=replacing):
        return read_extra_summary(summary_path)
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names, task_dir = lmeval_tasks(spec, Path(out_dir))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    manager = TaskManager(include_path=str(task_dir)) if task_dir.is_dir() else TaskManager()
    results = simple_evaluate(model=lm, tasks=list(names), task_manager=manager, limit=spec.limit, log_samples=True,
                              bootstrap_iters=0)
    records = []
    for lm_task, samples in results["samples"].items():
        for s in samples:
            records.append({"task": names.get(lm_task, lm_task), "subtask": lm_task, "doc_id": s["doc_id"],
                            "target": s.get("target"), "correct": bool(s[METRIC])})
    per_task = {}
    for task in spec.tasks:
        mine = [r for r in records if r["task"] == task]
        per_task[task] = ExtraTaskResult(
            **share(sum(r["correct"] for r in mine), len(mine)), metric=METRIC,
            subtasks=sorted({r["subtask"] for r in mine}),
            versions={t: results.get("versions", {}).get(t) for t in sorted({r["subtask"] for r in mine})},
            n_shot=sorted({str(v) for t, v in results.get("n-shot", {}).items() if names.get(t) == task}),
            data=spec.data.get(task) or "the hub (lm-eval's task definition)")
    summary = ExtraSummary(name=name, spec=ExtraIdentity(**spec.identity()),
                           lm_eval_version=getattr(lm_eval, "__version__", None), tasks=per_task)
    write_atomic(records_path, jsonl_text(records))
    write_extra_summary(summary_path, summary)
    return summary
