"""The whole experiment in one run folder: train, evaluate base and tuned, analyze, report.

    mathtune run configs/qwen2-1.5b-gsm8k-lora.yaml [--set key=value ...] [--out DIR]

Stages talk through files (the run folder README.md describes). Each stage is skipped when its outputs
already exist for the same resolved config, so a crashed run started again with the same
command continues where it stopped: training from its last checkpoint, evaluation from its
last finished batch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mathtune.analysis.analyze import check_not_hand_edited, run_analysis
from mathtune.config import Config, config_to_yaml, with_prompt_date
from mathtune.core.errors import MathtuneError
from mathtune.core.finished import REPLACE_ADVICE, finished_stage
from mathtune.core.probe_kinds import PROBE_KIND_TABLE
from mathtune.core.runfiles import (disk_full_is_one_line, free_bytes, size_text, sweep_stale_temps,
                                    write_atomic)
from mathtune.core.terminal import run_log, say
from mathtune.evaluation.base_cache import keep_base_evaluation, reuse_base_evaluation
from mathtune.evaluation.evaluate import evaluate
from mathtune.evaluation.records import EvalPaths, finished_evaluation, finished_summary, held_summary
from mathtune.evaluation.regression import ExtraSpec, check_extra, extra_finished, run_extra_tasks
from mathtune.evaluation.request import EvalRequest, default_name, load_problems
from mathtune.evaluation.resolve import resolve_request
from mathtune.models.attention import training_attention  # unpacked rows: what decoding runs
from mathtune.models.load import attach_adapter, check_adapter_folder, load_model, resolve_model_path
from mathtune.plan import disk_parts, format_plan, make_plan, record_measured_rates, write_plan
from mathtune.report.build import build_report
from mathtune.task.data import GSM8K_FORMAT
from mathtune.task.plan_record import Plan, read_plan
from mathtune.task.probe_summary import ProbeSummary, read_probe_summary
from mathtune.task.training_set import training_set
from mathtune.task.variants import PROBE_FOLDER, PROBE_SUFFIX, RULES_VERSION, write_variants
from mathtune.task.prompts import NoCleanBoundary
from mathtune.train.run import run_train
from mathtune.train.trainer import AllTooLong, check_before_loading


# The adapter is training's product, not an evaluation setting: a finished evaluation of another
# adapter (matched by content, EvalRequest.identity) is evaluated again, never refused or reused.
ADAPTER_KEYS = ("adapter", "adapter_sha256")


def check_eval_settings(config: Config, run_dir: Path, problems: list) -> None:
    """Finished evaluations are never replaced in silence: a run whose eval.* settings differ
    from its finished records (the benchmarks, the probe's variants and evaluations, the extra
    tasks) is refused (before anything runs or is written) unless --overwrite."""
    for name, req in eval_stages(config, run_dir):
        finished_evaluation(EvalPaths.for_name(run_dir, name), req, overwrite=False, where=str(run_dir),
                            what=f"a finished eval/{name}.jsonl with other settings", advice=REPLACE_ADVICE,
                            ignored=ADAPTER_KEYS, say_torn=False)
    if config.eval.probe is not None:
        variants_finished(run_dir, problems, variants=config.eval.probe.variants, seed=config.seed,
                          source=EvalRequest.from_config(config).data, overwrite=False, kinds=config.eval.probe.kinds)
    if config.eval.extra:
        spec = ExtraSpec.from_config(config.eval)
        for name in ("base", "tuned"):
            extra_finished(run_dir, name, spec, overwrite=False)


def of_another_adapter(paths: EvalPaths, request: EvalRequest) -> bool:
    """A finished evaluation under these paths that differs from the request in its adapter alone."""
    held = held_summary(paths, say_torn=False)
    differs = request.differing_settings(held, paths.home) if held is not None else []
    return bool(differs) and all(k in ADAPTER_KEYS for k in differs)


def eval_stages(config: Config, run_dir: Path) -> list[tuple[str, EvalRequest]]:
    """The evaluations of a run, by name, in the order they run: base and tuned, each followed by
    its probe's when eval.probe is set."""
    base_req = EvalRequest.from_config(config)
    tuned_req = EvalRequest.from_config(config, run_dir / "adapter")
    if config.eval.probe is None:
        return [("base", base_req), ("tuned", tuned_req)]
    return [("base", base_req), ("base" + PROBE_SUFFIX, probe_request(config, run_dir, None)),
            ("tuned", tuned_req), ("tuned" + PROBE_SUFFIX, probe_request(config, run_dir, run_dir / "adapter"))]


def evaluate_base_and_tuned(config: Config, run_dir: Path, overwrite: bool = False) -> None:
    """Both benchmarks on one loaded base model, base first: the tuned one is the same
    weights plus the adapter (merged in float32, see attach_adapter), so the comparison
    isolates the adapter."""
    # base and tuned settled at their door here; the probe's once its variants exist
    stages = [(name, req if name.endswith(PROBE_SUFFIX) else resolve_request(req, EvalPaths.for_name(run_dir, name)))
              for name, req in eval_stages(config, run_dir)]
    base_req = stages[0][1]
    reuse_cached_base(base_req, run_dir)
    todo = [(name, req) for name, req in stages
            if finished_summary(EvalPaths.for_name(run_dir, name), req, say_torn=False) is None]
    spec = None
    if config.eval.extra:  # the regression check: lm-eval tasks on the same loaded models, after their benchmark
        spec = ExtraSpec.from_config(config.eval)
        todo += [(name, None) for name in ("base", "tuned")
                 if not extra_finished(run_dir, name, spec, overwrite=overwrite)]
        todo.sort(key=lambda item: item[0].startswith("tuned"))  # base first: the adapter is merged once
    if not todo:
        say("eval: " + ", ".join(name for name, _ in stages) + " already finished")
        return
    if config.eval.probe is not None:
        problems, _ = load_problems(base_req)
        ensure_variants(run_dir, problems, variants=config.eval.probe.variants, seed=config.seed,
                        source=base_req.data, overwrite=overwrite, kinds=config.eval.probe.kinds)
    # One load for both: with model.quantization the tuned model is this same quantized base with
    # the adapter beside it (attach_adapter merges only into float32 weights).
    model, tokenizer = load_model(config.model,
                                  attn_implementation=training_attention(config.model.attn_implementation, False))
    attached = False
    for name, req in todo:
        if name.startswith("tuned") and not attached:
            model = attach_adapter(model, str(run_dir / "adapter"), merge=True)
            model.eval()
            attached = True
        if req is None:
            say(f"extra: lm-evaluation-harness tasks {', '.join(spec.tasks)} on {name}")
            run_extra_tasks(model, tokenizer, name, run_dir, spec, overwrite=overwrite)
        else:
            paths = EvalPaths.for_name(run_dir, name)
            req = resolve_request(req, paths)  # the probe's variants exist by now
            evaluate(req, run_dir, name=name, model=model, tokenizer=tokenizer,
                     overwrite=overwrite or of_another_adapter(paths, req))
            say_paths(paths)
            if name == "base":
                keep_cached_base(req, run_dir)


def reuse_cached_base(request: EvalRequest, run_dir: Path) -> None:
    """The base evaluation from the cache when another run made the same one (evaluation.base_cache)."""
    paths = EvalPaths.for_name(run_dir, "base")
    if finished_summary(paths, request) is not None:
        return
    reused = reuse_base_evaluation(request, paths)
    if reused is not None:
        made = reused.reused_from
        say(f"eval/base: reused from the cache ({made.cache}), made by {made.made_in}: the same model content, "
            "problems, prompt, decoding settings, limit and mathtune version; not decoded again")


def keep_cached_base(request: EvalRequest, run_dir: Path) -> None:
    """A finished base evaluation kept in the cache for the next run that asks the same one; a
    cache that cannot be written costs the next run its reuse, never this run."""
    try:
        kept = keep_base_evaluation(request, EvalPaths.for_name(run_dir, "base"), run_dir)
    except OSError as err:
        say(f"eval/base: not kept in the cache ({err})")
        return
    if kept is not None:
        say(f"eval/base: kept in the cache for runs that ask the same evaluation ({kept})")


def say_paths(paths: EvalPaths) -> None:
    """An evaluation's files, as progress: the final paths of `run` and `probe` are the report's."""
    say(f"records: {paths.records}\nsummary: {paths.summary}")


def ensure_variants(out_dir: Path, problems: list, *, variants: int, seed: int, source: str, overwrite: bool,
                    kinds: list[str] | tuple[str, ...] = ("numbers",)) -> None:
    """The probe's variants in OUT/probe/, built once; variants of other settings already there
    are refused (their records would no longer match) unless overwrite, which makes them anew."""
    if variants_finished(out_dir, problems, variants=variants, seed=seed, source=source, overwrite=overwrite,
                         kinds=kinds):
        return
    folder = write_variants(out_dir, problems, variants=variants, seed=seed, source=source, kinds=kinds)
    say(variants_line(read_probe_summary(folder / "summary.json"), folder))


def variants_finished(out_dir: Path, problems: list, *, variants: int, seed: int, source: str, overwrite: bool,
                      kinds: list[str] | tuple[str, ...]) -> bool:
    """Whether OUT/probe/ holds these variants (core.finished: other settings are refused unless
    overwrite; variants made under older rules too, their golds not all checked)."""
    summary_path = out_dir / PROBE_FOLDER / "summary.json"
    if overwrite or not summary_path.is_file():
        return False
    wanted = {"problems": len(problems), "variants_per_problem": variants, "seed": seed, "source": source,
              "kinds": list(kinds), "rules_version": RULES_VERSION}
    have = read_probe_summary(summary_path)
    if have.rules_version != RULES_VERSION:
        raise MathtuneError(f"{summary_path.parent} holds variants made under older rules (version "
                            f"{have.rules_version or 'before 3'}; these are version {RULES_VERSION}), whose golds "
                            "were not all checked: their results are not mixed with new ones; use --overwrite to "
                            "make the variants and the probe's records anew, or another --out")
    return finished_stage({k: getattr(have, k) for k in wanted}, wanted, where=str(summary_path.parent),
                          what="variants made with other settings", overwrite=False,
                          advice="use --overwrite to replace them, or another --out")


def variants_line(summary: ProbeSummary, folder: Path) -> str:
    """'probe: 7 variants of 7 problems in OUT/probe; 1 of 8 skipped (...)': what was kept, and
    what was not, as probe/summary.json counts them; a line for each kind of change."""
    lines = []
    for kind, counts in summary.by_kind.items():
        skipped = summary.problems - counts["kept"]
        line = f"probe: {counts['variants']} variant{'' if counts['variants'] == 1 else 's'} of {counts['kept']} " \
               f"problem{'' if counts['kept'] == 1 else 's'}" + (f" ({kind})" if PROBE_KIND_TABLE.get(kind).named_in_line else "") + \
               f" in {folder}"
        if skipped:
            reasons = "; ".join(f"{n} {counts['skip_reasons'][k]}" for k, n in counts["skipped"].items())
            line += f"; {skipped} of {summary.problems} skipped ({reasons})"
        lines.append(line)
    return "\n".join(lines)


def run_probe(request: EvalRequest, out_dir: Path, *, variants: int, name: str | None = None,
              overwrite: bool = False, kinds: list[str] | tuple[str, ...] = ("numbers",)) -> Path:
    """`mathtune probe`: the model on the test problems and on seeded variants of them with
    changed numbers (OUT/probe/test.jsonl), one model load for both; then the folder's
    analysis and report, whose probe section pairs the two."""
    out_dir = Path(out_dir)
    name = name or default_name(request)
    request = resolve_request(request, EvalPaths.for_name(out_dir, name))  # one date for the problems and variants
    problems, _ = load_problems(request)  # data errors before anything is written or loaded
    variant_req = variants_request(request, out_dir)
    done = [finished_evaluation(EvalPaths.for_name(out_dir, n), r, overwrite=overwrite) for n, r in
            ((name, request), (name + PROBE_SUFFIX, variant_req))]  # other settings: refused before anything is written
    resolve_model_path(request.model)  # a wrong model is one line before the variants are written
    if request.adapter is not None:
        check_adapter_folder(request.adapter)
    ensure_variants(out_dir, problems, variants=variants, seed=request.seed, source=request.data, overwrite=overwrite,
                    kinds=kinds)
    if None in done:
        model, tokenizer = load_model(request.model_section(), adapter=request.adapter, merge_adapter=True)
        for n, r in ((name, request), (name + PROBE_SUFFIX, variant_req)):
            with disk_full_is_one_line(out_dir):
                r = resolve_request(r, EvalPaths.for_name(out_dir, n))  # the variants exist by now
                evaluate(r, out_dir, name=n, model=model, tokenizer=tokenizer, overwrite=overwrite)
            say_paths(EvalPaths.for_name(out_dir, n))
    return rebuild_report(out_dir)


def variants_request(request: EvalRequest, out_dir: Path) -> EvalRequest:
    """The evaluation of the probe's variants (OUT/probe/test.jsonl), otherwise as `request`:
    every variant (no limit), read as a test set in GSM8K's own format, whatever the source's
    split and fields were."""
    return replace(request, data=str(out_dir / PROBE_FOLDER), split="test", limit=None, data_format=GSM8K_FORMAT)


def probe_request(config: Config, run_dir: Path, adapter: Path | None) -> EvalRequest:
    return variants_request(EvalRequest.from_config(config, adapter), run_dir)


def run_experiment(config: Config, run_dir: Path, *, overwrite: bool = False) -> Path:
    """`mathtune run`, step by step; returns the path of the main report file. A disk that fills
    up on the way is one line naming the file, and the same command then resumes."""
    run_dir = Path(run_dir)
    with disk_full_is_one_line(run_dir):
        config = with_prompt_date(config, run_dir)  # one date for every prompt of this run folder, on any day
        preflight(config, run_dir, overwrite=overwrite)
        plan = plan_before_training(config, run_dir, overwrite=overwrite)
        check_free_space(plan, run_dir)
        run_train(config, run_dir, overwrite=overwrite, checked=True)  # checks the folder before anything is removed
        say(f"adapter: {run_dir / 'adapter'}")
        keep_run_files(config, run_dir, plan)
        with run_log(run_dir):  # library warnings and logs to run.log, not the terminal
            evaluate_base_and_tuned(config, run_dir, overwrite=overwrite)
        record_rates(run_dir)
        return rebuild_report(run_dir)


def preflight(config: Config, run_dir: Path, *, overwrite: bool) -> None:
    """Every check a run can make before hours of work, each once: the training and test data
    (a bad record is said here once, not by the plan and again by training), the model settings,
    lm-eval's tasks, finished evaluations of other settings and a hand-edited analysis.json."""
    training_set(config)
    problems, _ = load_problems(resolve_request(EvalRequest.from_config(config)))  # the test data too, before hours of training
    check_before_loading(config)  # quantization, LoRA settings and target modules, before the plan
    if config.eval.extra:  # lm-eval installed and every task's data reachable, before hours of training
        check_extra(ExtraSpec.from_config(config.eval))
    if not overwrite:
        check_eval_settings(config, run_dir, problems)
        check_not_hand_edited(run_dir)


def keep_run_files(config: Config, run_dir: Path, plan: Plan | None) -> None:
    """After training: the plan it was started under, and the config as the evaluation uses it
    (an overwritten run's later stages were set aside before training wrote anything)."""
    if plan is not None:
        write_plan(plan, run_dir)
    # Training only reads the training keys; eval.* and report.* may have changed since, and
    # config.yaml must say what this run actually used.
    write_atomic(run_dir / "config.yaml", config_to_yaml(config))


def record_rates(run_dir: Path) -> None:
    """The rates this finished run reached, for the next plan on this machine. A cache that
    cannot be written costs the next plan its calibration, never this run."""
    try:
        written = record_measured_rates(run_dir)
    except OSError as err:
        say(f"measured rates: not kept ({err})")
        return
    if written is not None:
        say(f"measured rates: kept in {written} for the next plan on this machine")


def check_free_space(plan: Plan | None, run_dir: Path) -> None:
    """Before training writes anything: the plan's estimate of what the run writes (less what
    its folder already holds, on a resume) against the free space of the folder's disk. Refused
    when it does not fit, said when it is close; no estimate (a plan not available), no check."""
    if plan is None and (run_dir / "plan.json").is_file():
        plan = read_plan(run_dir / "plan.json")
    disk = plan.disk_bytes if plan else None
    free = free_bytes(run_dir)
    if not disk or free is None:
        return
    held = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file()) if run_dir.is_dir() else 0
    need = disk["total"] - held
    if need > free:
        raise MathtuneError(f"not enough space for this run in {run_dir}: it writes about {size_text(need)} "
                            f"more ({disk_parts(disk)}) and {size_text(free)} is free there; make room, or choose "
                            "another --out")
    if need > free / CLOSE_TO_FULL:
        say(f"disk: {size_text(free)} free in {run_dir} for about {size_text(need)} this run writes (estimate): "
            "close to full")


# A run whose estimate takes more than 1/CLOSE_TO_FULL of the free space is told it is close:
# the estimate is rough (the report's size, the records' length) by a third or so.
CLOSE_TO_FULL = 1.5


def plan_before_training(config: Config, run_dir: Path, *, overwrite: bool = False) -> Plan | None:
    """The plan, printed before anything runs (kept from an earlier start of the same run; an
    overwritten run's plan is set aside with the rest of it)."""
    saved = run_dir / "plan.json"
    if saved.is_file() and not overwrite:
        try:
            read_plan(saved)
            return None  # planned when this run first started; a resume keeps that plan
        except MathtuneError as err:
            say(f"plan: {err}; planned again")
    try:
        plan = make_plan(config)
    except (AllTooLong, NoCleanBoundary):
        raise  # training would refuse it too: refused now, before anything is written
    except MathtuneError as err:
        say(f"plan: not available ({err})")
        return None
    say(format_plan(plan))
    return plan


def rebuild_report(run_dir: Path, *, overwrite: bool = False) -> Path:
    """analysis.json and the report from the files in run_dir; never runs a model."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MathtuneError(f"run folder not found: {run_dir}")
    sweep_stale_temps(run_dir)  # what a write killed before its rename left behind
    with disk_full_is_one_line(run_dir):
        run_analysis(run_dir, overwrite=overwrite)
        written = build_report(run_dir)
    main = next((p for p in written if p.suffix == ".html"), written[0] if written else run_dir)
    figures = [p for p in written if p.suffix == ".png"]
    for path in written:
        if path.suffix != ".png":
            print(f"report: {path}")  # a final path: printed under --quiet too
    if figures:
        say(f"figures: {len(figures)} in {figures[0].parent}")
    return main
