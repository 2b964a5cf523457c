"""Side-by-side table of finished runs.

    mathtune compare RUN_DIR RUN_DIR ...

Reads each run's config.yaml, eval/*.jsonl, eval/*.summary.json, train/summary.json and
train/metrics.jsonl (never a model) and returns a Markdown table: the training method and
the config keys that differ between the runs; accuracies with their 95% intervals as the
evaluation stage recorded them; each tuned model's paired difference against its base and
against the first run's tuned model (same problems, joined on id); what RFT kept and how
GRPO's reward moved; wall time and cost, RFT's sampling included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathtune.analysis.benchmark import paired_comparison
from mathtune.analysis.followup_measures import probe_analysis
from mathtune.analysis.recipe import analyze_recipe
from mathtune.config import config_from_yaml_text
from mathtune.core.errors import MathtuneError
from mathtune.core.method_kinds import METHOD_KIND_TABLE
from mathtune.core.probe_kinds import PROBE_KIND_TABLE
from mathtune.core.provenance import adapter_label, quantization_label
from mathtune.core.runfiles import read_eval_records
from mathtune.core.stats import counted, signed
from mathtune.core.terminal import duration
from mathtune.evaluation.summary import EvalSummary, read_eval_summary
from mathtune.task.train_summary import TrainSummary, read_train_summary
from mathtune.task.variants import PROBE_SUFFIX

MODELS = ("base", "tuned")
MISSING = "-"  # the one marker of the table for a value a run does not have, or that does not apply to it


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def load_run_facts(run_dir: Path) -> dict[str, Any]:
    """The facts one column of the table needs; MathtuneError for a folder that is not a
    finished run (no config.yaml, or no evaluation summary yet)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MathtuneError(f"run folder not found: {run_dir}")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise MathtuneError(f"{run_dir} is not a run folder (no config.yaml)")
    config = config_from_yaml_text(config_path.read_text(encoding="utf-8"), str(config_path))
    evals = {m: run_dir / "eval" / f"{m}.summary.json" for m in MODELS}
    evals = {m: read_eval_summary(p) for m, p in evals.items() if p.is_file()}
    if not evals:
        raise MathtuneError(f"{run_dir} is unfinished: no eval/base.summary.json or eval/tuned.summary.json yet")
    train_path = run_dir / "train" / "summary.json"
    records = {m: run_dir / "eval" / f"{m}.jsonl" for m in MODELS}
    probe_records = {name: read_eval_records(run_dir / "eval" / f"{name}.jsonl") for m in MODELS
                     for name in (m, m + PROBE_SUFFIX) if (run_dir / "eval" / f"{name}.jsonl").is_file()}
    return {
        "probe": probe_analysis(run_dir, probe_records),
        "dir": run_dir,
        "config": _flatten(config.model_dump(mode="json")),
        "evals": evals,
        "records": {m: read_eval_records(p) for m, p in records.items() if p.is_file()},
        "train": read_train_summary(train_path) if train_path.is_file() else None,
        "recipe": analyze_recipe(run_dir, config),
    }


def _paired_cell(a: list[dict] | None, b: list[dict] | None) -> str:
    """b - a on strict exact match, paired on problem id: points, bootstrap 95% interval, McNemar p."""
    if not a or not b:
        return MISSING
    paired = paired_comparison(a, b)
    if not paired.get("available"):
        return f"{MISSING} (no common problems)"
    s = paired["strict"]
    lo, hi = s["ci95_pp"]
    return (f"{signed(s['difference_pp'])} [{signed(lo)}, {signed(hi)}], p {s['mcnemar_p_display']}, "
            f"+{s['improved']}/-{s['regressed']} of {paired['n_paired']}")


def _probe_cell(probe: dict, kind: str, model: str) -> str:
    m = probe.get("kinds", {}).get(kind, {}).get("models", {}).get(model)
    if not m:
        return MISSING
    lo, hi = m["gap"]["ci95_points"]
    return (f"{signed(m['gap']['points'])} [{signed(lo)}, {signed(hi)}], p {m['mcnemar_p']:.3f}, "
            f"{counted(m['problems'], 'problem')}")


def _same_results(a: list[dict] | None, b: list[dict] | None) -> str:
    if not a or not b:
        return MISSING
    key = lambda rs: {r["id"]: (r.get("completion"), r.get("correct_strict")) for r in rs}  # noqa: E731
    return "yes" if key(a) == key(b) else "no"


def _rft_cell(r: dict) -> str:
    return (f"kept {r['solutions_kept']} solutions, {r['kept_from_model']} from the model "
            f"({r['share_from_model_pct']}%); {r['problems_with_correct_sample']} of {counted(r['problems'], 'problem')} "
            "had a correct sample")


def _grpo_cell(g: dict) -> str:
    return (f"mean reward {g['reward']['start']} -> {g['reward']['end']} over {g['steps']} steps; "
            f"mixed groups {g['mixed_groups_mean_pct']}%")


RECIPE_CELLS = {"rft": _rft_cell, "grpo": _grpo_cell}  # a method's own section of analysis.json, in one cell


def _recipe_cell(recipe: dict) -> str:
    method = recipe.get("method", "sft")
    section = recipe.get(method) if method in RECIPE_CELLS else None
    if section and section.get("available"):
        return RECIPE_CELLS[method](section)
    entry = METHOD_KIND_TABLE.find(method)
    return (entry.data_text if entry else None) or MISSING


def _weights_cell(r: dict) -> str:
    """The base weights as each stage loaded them (quantization and its library version); one
    label where training and every evaluation agree."""
    summaries = [s for s in [r["train"], *r["evals"].values()] if s]
    labels = sorted({quantization_label(s.quantization_record) for s in summaries})
    return "; ".join(labels) if labels else MISSING


def _adapter_cell(r: dict) -> str:
    """The adapter's variant, rank, alpha and target modules, as training recorded them."""
    return _show(adapter_label(r["train"].adapter_settings if r["train"] else None))


def _sampling_seconds(r: dict) -> float:
    # The samples are this run's own even when a resumed attempt reused them: count them once.
    rft = (r["train"].rft if r["train"] else None) or {}
    return float(rft.get("sampling_wall_time_s") or 0.0)


def _sampling_cell(r: dict) -> str:
    """RFT's sampling time; a run of another method did no sampling, which is not '0 s'."""
    rft = r["train"].rft if r["train"] else None
    return duration(_sampling_seconds(r)) if rft and rft.get("sampling_wall_time_s") is not None else MISSING


def _accuracy_cell(summary: EvalSummary | None, kind: str) -> str:
    if summary is None:
        return MISSING
    accuracy, ci = ((summary.accuracy_strict, summary.ci95_strict) if kind == "strict"
                    else (summary.accuracy_flexible, summary.ci95_flexible))
    if accuracy is None:
        return MISSING
    interval = f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if ci else ""
    return f"{accuracy * 100:.1f}%{interval}"


def _show(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value).replace("|", "\\|")


def _evaluated_on(summary: EvalSummary) -> str:
    """The data and protocol an accuracy was measured on, as one comparable string."""
    ident = summary.data_identity or {}
    data = (f"{ident.get('path')} sha256 {ident.get('sha256')}" if ident.get("kind") == "local"
            else f"{ident.get('id') or summary.data} revision {ident.get('revision')}")
    return f"{data} | split {summary.split} | {summary.protocol}"


def compare_runs(run_dirs: list[Path], *, force: bool = False) -> str:
    """A Markdown table with one column per run."""
    return render_markdown(compare_table(run_dirs, force=force))


def compare_table(run_dirs: list[Path], *, force: bool = False) -> dict[str, Any]:
    """The table as data: header, rows of cells, and the protocol note; plus each run's raw
    accuracy figures. Accuracies measured on different data (another file, split, problem
    count or prompt) are refused unless force is set, and then marked."""
    if not run_dirs:
        raise MathtuneError("compare needs at least one run folder")
    runs = [load_run_facts(Path(d)) for d in run_dirs]
    measured = {}
    for r in runs:
        for model, summary in r["evals"].items():
            measured.setdefault(_evaluated_on(summary), []).append(f"{r['dir'].name}/{model}")
    if len(measured) > 1 and not force:
        listing = "; ".join(f"{', '.join(names)}: {key}" for key, names in measured.items())
        raise MathtuneError(f"the runs' accuracies were measured on different data or protocols ({listing}); "
                            "pass --force to compare them anyway")
    header = ["", *(r["dir"].name or str(r["dir"]) for r in runs)]
    rows: list[list[str]] = []

    rows.append(["method", *(_show(r["config"].get("train.method", "sft")) for r in runs)])

    def setting(r: dict, key: str) -> Any:
        # train.rft.* and train.grpo.* mean something only in a run of that method.
        for method in METHOD_KIND_TABLE.names():
            if key.startswith(f"train.{method}.") and r["config"].get("train.method") != method:
                return MISSING
        return r["config"].get(key)

    keys = sorted({k for r in runs for k in r["config"]} - {"train.method"})
    differing = [k for k in keys if len({json.dumps(setting(r, k), sort_keys=True) for r in runs}) > 1]
    for key in differing:
        rows.append([f"config: {key}", *(_show(setting(r, key)) for r in runs)])
    if not differing and len(runs) > 1:
        rows.append(["config", *("identical" for _ in runs)])

    for model in MODELS:
        if not any(model in r["evals"] for r in runs):
            continue
        for kind in ("strict", "flexible"):
            rows.append([f"{model} accuracy, {kind} (95% CI)", *(_accuracy_cell(r["evals"].get(model), kind) for r in runs)])
    protocols = [_show(_protocol(r["evals"].get("tuned") or r["evals"].get("base"))) for r in runs]
    shared_protocol = len(set(protocols)) == 1
    if not shared_protocol:
        rows.append(["protocol", *protocols])
    first = runs[0]
    rows.append(["tuned - base, strict, paired (points [95% CI], McNemar p, improved/regressed)",
                 *(_paired_cell(r["records"].get("base"), r["records"].get("tuned")) for r in runs)])
    if len(runs) > 1:
        name = first["dir"].name
        rows.append([f"base results identical to {name}'s", MISSING,
                     *(_same_results(first["records"].get("base"), r["records"].get("base")) for r in runs[1:])])
        rows.append([f"tuned - {name} tuned, strict, paired", MISSING,
                     *(_paired_cell(first["records"].get("tuned"), r["records"].get("tuned")) for r in runs[1:])])
    kinds = [k for k in PROBE_KIND_TABLE.names() if any(k in r["probe"].get("kinds", {}) for r in runs)]
    for kind in kinds:  # the robustness probe's gap, per kind of variant
        for model in MODELS:
            rows.append([f"{model} probe, {kind}: variants - originals, strict (points [95% CI], McNemar p)",
                         *(_probe_cell(r["probe"], kind, model) for r in runs)])
    rows.append(["base weights (training and evaluation)", *(_weights_cell(r) for r in runs)])
    rows.append(["adapter (variant, rank, alpha, target modules)", *(_adapter_cell(r) for r in runs)])
    rows.append(["training data / reward", *(_recipe_cell(r["recipe"]) for r in runs)])
    rows += _training_rows(runs)
    # A base evaluation reused from the cache (evaluation.base_cache) took this run no time.
    eval_seconds = [sum(s.wall_time_s or 0 for s in r["evals"].values() if not s.reused_from) for r in runs]
    if any(r["evals"]["base"].reused_from for r in runs if "base" in r["evals"]):
        rows.append(["base evaluation", *(_base_made_cell(r) for r in runs)])
    rows.append(["evaluation wall time", *(duration(e) for e in eval_seconds)])
    rows.append([
        "total wall time",
        *(duration(_sampling_seconds(r) + ((r["train"].wall_time_s if r["train"] else None) or 0) + e)
          for r, e in zip(runs, eval_seconds)),
    ])

    if shared_protocol and len(measured) <= 1:
        note = f"Protocol{' of every run' if len(runs) > 1 else ''}: {protocols[0]}."
    else:
        note = ("Warning (--force): the runs were evaluated on different data or under different protocols; "
                "their accuracies are not comparable.")
    raw = [{"dir": str(r["dir"]), "evals": {m: {
        "n": s.n, "accuracy_strict": s.accuracy_strict, "accuracy_flexible": s.accuracy_flexible,
        "ci95_strict": s.ci95_strict, "ci95_flexible": s.ci95_flexible, "protocol": s.protocol,
        "data_identity": s.data_identity, "wall_time_s": s.wall_time_s} for m, s in r["evals"].items()}} for r in runs]
    return {"header": header, "rows": rows, "note": note, "comparable": len(measured) <= 1, "runs": raw,
            "verdicts": pair_verdicts(runs)}


def _base_made_cell(r: dict) -> str:
    base = r["evals"].get("base")
    if base is None:
        return MISSING
    reused = base.reused_from
    return f"reused from the cache (made by {Path(str(reused.made_in)).name})" if reused else "decoded here"


def _protocol(summary: EvalSummary | None) -> str | None:
    return summary.protocol if summary else None


def _train_value(r: dict, key: str, fmt=str) -> str:
    """One field of a run's training summary (a TrainSummary field name), as a cell."""
    value = getattr(r["train"], key) if r["train"] else None
    return MISSING if value is None else fmt(value)


def _trainable(r: dict) -> str:
    t: TrainSummary | None = r["train"]
    if t is None or t.trainable_params is None:
        return MISSING
    share = f" ({100 * t.trainable_params / t.base_params:.2f}% of the base)" if t.base_params else ""
    return f"{t.trainable_params:,}{share}"


def _cost(r: dict) -> str:
    t: TrainSummary | None = r["train"]
    if t is None or t.cost_usd is None:
        return MISSING
    # RFT's sampling ran on the same GPUs before training; price it the same way.
    sampling = (t.gpu_hourly_usd or 0) * (t.world_size or 1) * _sampling_seconds(r) / 3600
    return f"${t.cost_usd + sampling:.2f}"


def _training_rows(runs: list[dict]) -> list[list[str]]:
    """What training did: the best validation loss (where runs of one evaluation differ most
    often), its step, time, speed, trainable parameters and cost."""
    rows = [["best validation loss", *(_train_value(r, "best_eval_loss", lambda v: f"{v:.4f}") for r in runs)],
            ["best step", *(_train_value(r, "best_step") for r in runs)],
            ["trainable parameters", *(_trainable(r) for r in runs)]]
    if any(_sampling_seconds(r) for r in runs):
        rows.append(["RFT sampling wall time", *(_sampling_cell(r) for r in runs)])
    rows.append(["training wall time", *(_train_value(r, "wall_time_s", duration) for r in runs)])
    rows.append(["training tokens/s", *(_train_value(r, "tokens_per_s", lambda v: f"{v:,.1f}") for r in runs)])
    rows.append(["training cost (RFT sampling included)", *(_cost(r) for r in runs)])
    return rows


def pair_verdicts(runs: list[dict]) -> list[str]:
    """One line per pair of runs: the later run's tuned model against the earlier one's, strict,
    paired on the same problems, with its bootstrap interval and McNemar p, and what it says."""
    lines = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            x, y = a["records"].get("tuned"), b["records"].get("tuned")
            name_a, name_b = a["dir"].name, b["dir"].name
            if not x or not y:
                continue
            paired = paired_comparison(x, y)
            if not paired.get("available"):
                lines.append(f"{name_b} against {name_a}: no common problems")
                continue
            s = paired["strict"]
            lo, hi = s["ci95_pp"]
            reading = {"better": f"{name_b} is better", "worse": f"{name_a} is better",
                       "no reliable difference": "no reliable difference (the interval contains 0)"}[paired["verdict"]]
            lines.append(f"{name_b} against {name_a}, tuned, strict: {signed(s['difference_pp'])} points "
                         f"[{signed(lo)}, {signed(hi)}], McNemar p {s['mcnemar_p_display']}, "
                         f"{counted(paired['n_paired'], 'problem')}: {reading}")
    return lines


def render_markdown(table: dict[str, Any]) -> str:
    header, rows = table["header"], table["rows"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    verdicts = table.get("verdicts") or []
    if verdicts:
        lines += ["", "Tuned against tuned, each pair (paired bootstrap 95% interval, points):"]
        lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines + ["", table["note"]])
