"""Report: renders analysis.json as report.md and a self-contained report.html.

    mathtune report RUN_DIR        (rebuilds analysis.json, then this report)

The report computes nothing: every number it prints is a value of analysis.json printed
as stored (analysis.json keeps the rounded display values), so a reader can find each one
again. The page is built once as a list of blocks and rendered twice, so the Markdown and
the HTML cannot disagree. Model text is escaped in the HTML and fenced in the Markdown.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathtune.errors import MathtuneError
from mathtune.runfiles import write_atomic

FIGURE_NAMES = (
    "loss.png", "token_accuracy.png", "accuracy.png", "error_categories.png", "accuracy_by_steps.png",
    "contamination.png", "grpo.png", "self_consistency.png", "probe.png",  # the last two: report_followups
)
MODEL_COLORS = {"base": "#8c8c8c", "tuned": "#1f77b4"}


# --- blocks: the report's content, independent of the output format --------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    caption: str


@dataclass
class ModelText:
    """Text a model (or the dataset) wrote: shown verbatim, never interpreted as markup."""

    label: str
    text: str


def sentence(text: str) -> str:
    """First letter upper-cased, the rest as written (str.capitalize would lower 'KL', 'GRPO')."""
    return text[:1].upper() + text[1:]


def show(value: Any) -> str:
    """A stored value as text, unchanged; the report formats, it does not compute."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def show_pct(value: Any) -> str:
    return "n/a" if value is None else f"{value}%"


def show_interval(pair: list | None, unit: str = "%") -> str:
    if not pair or pair[0] is None:
        return "n/a"
    return f"[{pair[0]}{unit}, {pair[1]}{unit}]"


def show_signed(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"+{value}{unit}" if value > 0 else f"{value}{unit}"


# --- the content --------------------------------------------------------------------------------


def training_blocks(training: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, "Training")]
    if not training.get("available"):
        return blocks + [Para(sentence(training.get("reason", "no training in this run")) + ".")]
    d, dec, stretch, trend = training["definitions"], training["loss_decrease"], training["final_stretch"], training["trend"]
    if len(training.get("data_sources") or []) > 1:  # a data.mix: where the training examples came from
        blocks.append(Table(["training source", "split", "weight", "problems", "examples taken"],
                            [[s["source"], s["split"], show(s["weight"]), show(s["problems"]), show(s["examples"])]
                             for s in training["data_sources"]]))
    blocks.append(Table(
        ["", "train loss", "validation loss"],
        [
            ["smoothed first window", show(dec["train"]["first_window_mean"]), show(dec["validation"]["first_window_mean"])],
            ["smoothed last window", show(dec["train"]["last_window_mean"]), show(dec["validation"]["last_window_mean"])],
            ["decrease", show_pct(dec["train"]["decrease_pct"]), show_pct(dec["validation"]["decrease_pct"])],
            ["decrease over the final stretch", show_pct(stretch.get("train_decrease_pct")),
             show_pct(stretch.get("validation_decrease_pct"))],
            ["logged points (window size)", f"{dec['train']['points']} ({dec['train']['window_points']})",
             f"{dec['validation']['points']} ({dec['validation']['window_points']})"],
        ],
    ))
    stretch_text = (
        f" The final stretch is steps {stretch['from_step']} to {stretch['to_step']}: {d['final_stretch']}."
        if stretch.get("available") else ""
    )
    blocks.append(Para(f"Loss decrease: {d['loss_decrease']}.{stretch_text} Sign: {d.get('sign', 'n/a')}."))
    if "loss.png" in figures:
        blocks.append(Figure("loss.png", "Training and validation loss per step (dotted line: best step)."))
    rule = trend["definition"]
    # The verdict with the points it used; what to do about it is under Recommendations.
    blocks.append(Para(
        f"Trend verdict: **{trend['verdict']}**. Validation: decrease {show_pct(trend.get('validation_decrease_pct'))} "
        f"over the last {show(trend.get('validation_points_used'))} evaluations (the window needs "
        f"{rule['validation_window_points']}); training: decrease {show_pct(trend.get('train_decrease_pct'))} over "
        f"{show(trend.get('train_points_used'))} logged points of the final stretch (needs "
        f"{show(rule.get('min_train_points'))}). Threshold {rule['threshold_pct']}%. Rule: {rule['rule']}."
    ))
    acc = training["token_accuracy"]
    blocks.append(Table(
        ["mean token accuracy (teacher-forced next-token accuracy, NOT problem-solving accuracy)", "start", "end"],
        [
            ["train", show_pct(acc["train"]["start_pct"]), show_pct(acc["train"]["end_pct"])],
            ["validation", show_pct(acc["validation"]["start_pct"]), show_pct(acc["validation"]["end_pct"])],
        ],
    ))
    blocks.append(Para(f"Token accuracy: {d['token_accuracy']}."))
    if "token_accuracy.png" in figures:
        blocks.append(Figure("token_accuracy.png",
                             "Mean token accuracy (teacher-forced next-token accuracy, not problem-solving accuracy)."))
    cost = show(training["cost_usd"]) if training["cost_usd"] is None else f"${training['cost_usd']}"
    note = f" ({training['cost_note']})" if training.get("cost_note") else ""
    blocks.append(Table(
        ["training fact", "value"],
        [
            ["best step (validation loss)", f"{show(training['best_step'])} ({show(training['best_eval_loss'])})"],
            ["stopped early (patience)", f"{show(training['stopped_early'])} ({show(training['early_stopping_patience'])})"],
            ["optimizer steps", show(training["global_step"])],
            ["wall time", f"{show(training['wall_time_s'])} s ({show(training['wall_time_min'])} min)"],
            ["tokens seen", show(training["tokens_seen"])],
            ["tokens/s", show(training["tokens_per_s"])],
            ["peak memory", f"{show(training['peak_memory_gib'])} GiB"],
            ["trainable / total parameters", f"{show(training['trainable_params'])} / {show(training['total_params'])}"],
            ["device", show(training["device"])],
            ["estimated cost", cost + note],
        ],
    ))
    return blocks


def benchmark_blocks(benchmark: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, f"Benchmark: {benchmark['data_name']}" if benchmark.get("available") else "Benchmark")]
    if not benchmark.get("available"):
        return blocks + [Para(sentence(benchmark.get("reason", "no evaluation in this run")) + ".")]
    level = benchmark["ci_level_pct"]
    blocks.append(Para(f"Protocol: {benchmark['protocol']}."))
    if not benchmark["same_protocol"]:
        blocks.append(Para("Warning: the models were evaluated under different protocols; their accuracies are not comparable."))
    rows = []
    for name, m in benchmark["models"].items():
        rows.append([
            name, show(m["model"]) + (f" + {m['adapter']}" if m.get("adapter") else ""), show(m["n"]),
            f"{show_pct(m['strict']['accuracy_pct'])} {show_interval(m['strict']['ci95_pct'])}",
            f"{show_pct(m['flexible']['accuracy_pct'])} {show_interval(m['flexible']['ci95_pct'])}",
            show(m["truncated"]),
        ])
    blocks.append(Table(
        ["run", "model", "problems", f"exact match, strict ({level}% Wilson)", f"exact match, flexible ({level}% Wilson)",
         "truncated"],
        rows,
    ))
    paired = benchmark["paired"]
    if paired.get("available"):
        prow = []
        for kind in ("strict", "flexible"):
            p = paired[kind]
            prow.append([
                kind, f"{show_signed(p['difference_pp'])} points", show_interval(p["ci95_pp"], ""),
                p["mcnemar_p_display"], show(p["improved"]), show(p["regressed"]), show(p["both_right"]),
                show(p["both_wrong"]),
            ])
        blocks.append(Table(
            ["tuned - base", "difference", f"paired bootstrap {level}% interval (points)", "exact McNemar p",
             "improved", "regressed", "both right", "both wrong"],
            prow,
        ))
        blocks.append(Para(
            f"{paired['verdict']} Paired on {paired['n_paired']} problems joined on '{paired['joined_on']}'; "
            f"{paired['bootstrap_resamples']} bootstrap resamples (seed {paired['bootstrap_seed']})."
        ))
    else:
        blocks.append(Para(f"No paired comparison: {paired.get('reason')}."))
    if "accuracy.png" in figures:
        blocks.append(Figure("accuracy.png", f"Exact match on {benchmark['data_name']} with {level}% Wilson intervals."))
    return blocks


def recipe_blocks(recipe: dict, figures: set[str]) -> list:
    """The training method, and what RFT kept or how GRPO's reward moved."""
    method = recipe.get("method", "sft")
    blocks: list = [Heading(2, f"Training method: {method}"), Para(sentence(recipe.get("description", method)) + ".")]
    if method == "rft":
        r = recipe["rft"]
        if not r.get("available"):
            return blocks + [Para(sentence(r["reason"]) + ".")]
        blocks.append(Table(["RFT", "value"], [
            ["training problems", show(r["problems"])],
            ["samples per problem (temperature, max new tokens)",
             f"{show(r['samples_per_problem'])} ({show(r['temperature'])}, {show(r['max_new_tokens'])})"],
            ["strictly correct samples", f"{show(r['strictly_correct_samples'])} of {show(r['sampled_solutions'])} "
                                         f"({show_pct(r['sample_accuracy_strict_pct'])})"],
            ["problems with at least one strictly correct sample",
             f"{show(r['problems_with_correct_sample'])} ({show_pct(r['problems_with_correct_sample_pct'])})"],
            ["distinct correct samples left out as longer than data.max_length",
             f"{show(r.get('correct_samples_too_long'))} ({show(r.get('max_length'))} tokens)"],
            ["solutions kept for training (at most per problem)", f"{show(r['solutions_kept'])} ({show(r['keep_per_problem'])})"],
            ["from the model / from the gold solutions", f"{show(r['kept_from_model'])} / {show(r['kept_from_gold'])}"],
            ["share from the model", show_pct(r["share_from_model_pct"])],
            ["sampling: generated tokens, wall time",
             f"{show(r['sampling_generated_tokens'])}, {show(r['sampling_wall_time_s'])} s"
             + (" (sampled earlier; this run reused the samples file)" if r.get("sampling_reused") else "")],
        ]))
        d = r["definitions"]
        blocks.append(Para(f"Kept: {d['kept']}. Share from the model: {d['share_from_model']}. "
                           f"Every sample is in {r['samples_file']}."))
    elif method == "grpo":
        g = recipe["grpo"]
        if not g.get("available"):
            return blocks + [Para(sentence(g["reason"]) + ".")]
        settings = g.get("settings") or {}
        rows = [
            ["steps (prompts per step x group size)",
             f"{show(g['steps'])} ({show(g['prompts_per_step'])} x {show(settings.get('group_size'))})"],
            ["rewards (weights)", show(", ".join(f"{k}: {v}" for k, v in (settings.get("rewards") or {}).items()))],
            ["KL coefficient beta, temperature, learning rate",
             f"{show(settings.get('beta'))}, {show(settings.get('temperature'))}, {show(g['learning_rate'])}"],
            ["mean reward, start -> end", f"{show(g['reward']['start'])} -> {show(g['reward']['end'])}"],
        ]
        for name, ends in g["per_reward"].items():
            rows.append([f"reward '{name}', start -> end", f"{show(ends['start'])} -> {show(ends['end'])}"])
        rows += [
            ["groups with mixed rewards (mean over steps)", show_pct(g["mixed_groups_mean_pct"])],
            ["KL to the base model, start -> end",
             f"{show(g['kl']['start'])} -> {show(g['kl']['end'])}" if g.get("kl") else "not computed (beta 0)"],
            ["completion length in tokens, start -> end",
             f"{show(g['completion_length']['start'])} -> {show(g['completion_length']['end'])}"],
            ["completions cut by max_completion_length, start -> end",
             f"{show(g['truncated_share']['start'])} -> {show(g['truncated_share']['end'])}"],
            ["wall time (per step)", f"{show(g['wall_time_s'])} s ({show(g['wall_time_per_step_s'])} s)"],
            ["tokens (prompts and completions)", show(g["tokens_seen"])],
            ["device", show(g["device"])],
            ["estimated cost", (f"${g['cost_usd']}" if g.get("cost_usd") is not None else "n/a")
             + (f" ({g['cost_note']})" if g.get("cost_note") else "")],
        ]
        blocks.append(Table(["GRPO", "value"], rows))
        d = g["definitions"]
        blocks.append(Para(f"Reward: {d['reward']}. Mixed groups: {d['mixed_groups']}. KL: {d['kl']}. "
                           f"Windows: {d['window']}. The adapter is the one of the last step."))
        if "grpo.png" in figures:
            blocks.append(Figure("grpo.png", "GRPO per step: mean reward and share of mixed groups (left), "
                                             "completion length (right)."))
    return blocks


def seed_claim_blocks(claim: dict) -> list:
    blocks: list = [Heading(2, "Token accuracy is not problem-solving accuracy")]
    if not claim.get("available"):
        return blocks + [Para(f"Not available: {claim.get('reason')}.")]
    blocks.append(Table(
        ["measure", "value"],
        [
            ["mean token accuracy at the end of training, train (teacher-forced)", show_pct(claim["token_accuracy_train_end_pct"])],
            ["mean token accuracy at the end of training, validation (teacher-forced)",
             show_pct(claim["token_accuracy_validation_end_pct"])],
            [f"exact match of the tuned model on {claim['data_name']}, strict",
             show_pct(claim["gsm8k_exact_match_strict_pct"])],
        ],
    ))
    return blocks + [Para(claim["why_they_differ"])]


def error_blocks(errors: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, "Error analysis")]
    if not errors.get("available"):
        return blocks + [Para(f"Not available: {errors.get('reason')}.")]
    models = list(errors["counts"])
    blocks.append(Para(
        "Every wrong answer (strict) is put in exactly one category; the rules are tried in this order and "
        "the first that applies wins: " + ", ".join(c.replace("_", " ") for c in errors["precedence"]) + "."
    ))
    blocks.append(Bullets([f"{c.replace('_', ' ')}: {errors['rules'][c]}" for c in errors["precedence"]]))
    blocks.append(Table(
        ["category"] + models,
        [[c.replace("_", " ")] + [show(errors["counts"][m][c]) for m in models] for c in errors["categories"]],
    ))
    if "error_categories.png" in figures:
        blocks.append(Figure("error_categories.png", "Wrong answers per category."))
    blocks.append(Heading(3, "Accuracy by number of reasoning steps"))
    blocks.append(Para(
        f"Steps = the calculator annotations in the gold solution; problems with {errors['step_bucket_max']} or more "
        "share the last bucket. Strict exact match, Wilson intervals."
    ))
    for m in models:
        blocks.append(Table(
            [f"{m}: steps", "problems", "correct", "accuracy", "interval"],
            [[r["steps"], show(r["n"]), show(r["correct"]), show_pct(r["accuracy_pct"]), show_interval(r["ci95_pct"])]
             for r in errors["accuracy_by_steps"][m]],
        ))
    if "accuracy_by_steps.png" in figures:
        blocks.append(Figure("accuracy_by_steps.png", "Strict exact match by number of reasoning steps."))
    blocks.append(Heading(3, "Examples"))
    for c in errors["categories"]:
        examples = errors["examples"][c]
        blocks.append(Heading(4, c.replace("_", " ")))
        if not examples:
            blocks.append(Para("No wrong answer in this category."))
        for ex in examples:
            evidence = f" Evidence: {ex['evidence']}." if ex.get("evidence") else ""
            blocks.append(Para(
                f"{ex['model']} model, problem {ex['id']} ({ex['steps']} steps): gold {show(ex['gold'])}, strict "
                f"answer {show(ex['pred_strict'])}, last number {show(ex['pred_flexible'])}.{evidence}"
            ))
            blocks.append(ModelText("question", ex["question"] or ""))
            blocks.append(ModelText("completion", ex["completion"]))
    return blocks


def contamination_blocks(c: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, "Contamination check")]
    if not c.get("available"):
        return blocks + [Para(f"Not available: {c.get('reason')}.")]
    blocks.append(Para(
        f"Definition: {c['definition']}. Training questions: {c['train_questions']}; test questions: "
        f"{c['test_questions']}. Test questions sharing any {c['n']}-gram: {c['test_questions_with_any_overlap']} "
        f"({c['test_questions_with_any_overlap_pct']}%); sharing at least half: "
        f"{c['test_questions_half_overlapping']} ({c['test_questions_half_overlapping_pct']}%)."
    ))
    blocks.append(Table(["overlap share", "test questions"],
                        [[label, show(n)] for label, n in zip(c["histogram_labels"], c["histogram_counts"])]))
    if len(c.get("per_source") or []) > 1:
        blocks.append(Table(["training source", "questions", f"test questions sharing any {c['n']}-gram",
                             "sharing at least half"],
                            [[s["source"], show(s["train_questions"]),
                              f"{s['test_questions_with_any_overlap']} ({s['test_questions_with_any_overlap_pct']}%)",
                              f"{s['test_questions_half_overlapping']} ({s['test_questions_half_overlapping_pct']}%)"]
                             for s in c["per_source"]]))
    if "contamination.png" in figures:
        blocks.append(Figure("contamination.png", f"Test questions by share of {c['n']}-grams found in training questions."))
    return blocks


def provenance_blocks(provenance: dict) -> list:
    """What each stage ran with, as its summary recorded it."""
    stages = provenance.get("stages") or []
    if not stages:
        return []

    def versions(v: dict) -> str:
        return ", ".join(f"{k} {v[k]}" for k in ("mathtune", "torch", "transformers", "peft", "trl") if v.get(k)) or "n/a"

    rows = [[s["stage"], show(s["model"] if s["adapter"] is None else f"{s['model']} + {s['adapter']}"), show(s["data"]),
             show(s["device"]), show(s["dtype"]), show(s["attention"]), show(s["batch_size"]), versions(s["versions"])]
            for s in stages]
    remote = provenance.get("remote_code_stages") or []
    said = (f"trust_remote_code was on for {', '.join(remote)}: Python code shipped with the model ran in that stage."
            if remote else "trust_remote_code was off: no code shipped with the model ran.")
    return [Table(["stage", "model", "data", "device", "dtype", "attention", "batch", "versions"], rows), Para(said)]


@dataclass
class Contents:
    """The table of contents: every level-2 heading after it, linked by its anchor."""


def anchor(text: str) -> str:
    """The id of a heading: lower case, words joined by '-' (GitHub's Markdown rule for plain text)."""
    import re

    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")


def summary_blocks(analysis: dict) -> list:
    """One screen: base vs tuned with intervals and the paired test, time and cost, verdicts."""
    blocks: list = [Heading(2, "Summary")]
    benchmark, training = analysis["benchmark"], analysis["training"]
    rows = []
    if benchmark.get("available"):
        for name, m in benchmark["models"].items():
            rows.append([f"{name}: exact match on {benchmark['data_name']}, strict",
                         f"{show_pct(m['strict']['accuracy_pct'])} {show_interval(m['strict']['ci95_pct'])} "
                         f"of {show(m['n'])}"])
        paired = benchmark["paired"]
        if paired.get("available"):
            p = paired["strict"]
            rows.append(["tuned - base, strict, paired",
                         f"{show_signed(p['difference_pp'])} points {show_interval(p['ci95_pp'], '')}, "
                         f"McNemar p {p['mcnemar_p_display']}"])
        for name, m in benchmark["models"].items():
            rows.append([f"evaluation time, {name}", f"{show(m.get('wall_time_s'))} s"])
    if training.get("available"):
        rows.append(["training time", f"{show(training['wall_time_min'])} min on {show(training['device'])}"])
        cost = training.get("cost_usd")
        rows.append(["training cost", f"${cost}" if cost is not None else show(training.get("cost_note"))])
    if rows:
        blocks.append(Table(["", "measured"], rows))
    plan = analysis.get("plan") or {}
    if plan.get("available"):
        blocks.append(Table([f"plan ({plan['device']}) and actual", "planned", "actual"],
                            [[r["figure"], show(r["planned"]), show(r["actual"])] for r in plan["rows"]]))
        blocks.append(Para(f"Plan basis: {plan['basis']}; {plan['note']}."))
    verdicts = []
    if training.get("available") and training.get("trend", {}).get("verdict"):
        verdicts.append(f"Training trend: {training['trend']['verdict']}.")
    if benchmark.get("available") and benchmark.get("paired", {}).get("verdict"):
        verdicts.append(benchmark["paired"]["verdict"])
    if verdicts:
        blocks.append(Bullets(verdicts))
    return blocks


def report_blocks(analysis: dict, figures: set[str]) -> list:
    run = analysis["run"]
    blocks: list = [Heading(1, f"mathtune report: {run['name']}")]
    blocks.append(Para(f"Base model: {show(run['base_model'])}. Data: {show(run['data_source'])}."))
    blocks += summary_blocks(analysis)
    blocks.append(Contents())
    blocks.append(Heading(2, "What ran"))
    blocks += provenance_blocks(run.get("provenance") or {})
    blocks.append(Heading(2, "Recommendations"))
    blocks.append(Bullets(analysis["recommendations"] or ["Nothing to recommend: the run holds too little data."]))
    if analysis.get("recipe", {}).get("method", "sft") != "sft":
        blocks += recipe_blocks(analysis["recipe"], figures)
    blocks += training_blocks(analysis["training"], figures)
    blocks += benchmark_blocks(analysis["benchmark"], figures)
    from mathtune.report_followups import followup_blocks  # it builds on this module's blocks

    blocks += followup_blocks(analysis, figures)
    blocks += seed_claim_blocks(analysis["seed_claim"])
    blocks += error_blocks(analysis["errors"], figures)
    blocks += contamination_blocks(analysis["contamination"], figures)
    return blocks


# --- figures --------------------------------------------------------------------------------------


def _figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _error_bars(values: list, intervals: list) -> list[list[float]]:
    # Drawing only: matplotlib wants distances from the bar top, not the interval ends.
    lows = [0 if v is None or i[0] is None else v - i[0] for v, i in zip(values, intervals)]
    highs = [0 if v is None or i[1] is None else i[1] - v for v, i in zip(values, intervals)]
    return [lows, highs]


def make_figures(analysis: dict) -> dict[str, bytes]:
    """PNG bytes per figure name, drawn from the arrays analysis.json holds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    training, benchmark, errors = analysis["training"], analysis["benchmark"], analysis["errors"]
    if training.get("available"):
        curves = training["curves"]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(curves["train"]["step"], curves["train"]["loss"], label="train loss", color="#1f77b4", lw=1)
        if curves["validation"]["step"]:
            ax.plot(curves["validation"]["step"], curves["validation"]["loss"], "o-", label="validation loss",
                    color="#d62728")
        if training.get("best_step") is not None:
            ax.axvline(training["best_step"], ls=":", color="k", label="best step")
        ax.set(xlabel="optimizer step", ylabel="loss", title=f"Loss (verdict: {training['trend']['verdict']})")
        ax.legend()
        out["loss.png"] = _figure_bytes(fig)

        def as_pct(values):
            return [float("nan") if v is None else v * 100 for v in values]  # a gap in the line

        fig, ax = plt.subplots(figsize=(8, 4))
        ax.plot(curves["train"]["step"], as_pct(curves["train"]["mean_token_accuracy"]), label="train", lw=1)
        if curves["validation"]["step"]:
            ax.plot(curves["validation"]["step"], as_pct(curves["validation"]["mean_token_accuracy"]), "o-",
                    label="validation", color="#d62728")
        claim = analysis["seed_claim"]
        if claim.get("available") and claim["gsm8k_exact_match_strict_pct"] is not None:
            ax.axhline(claim["gsm8k_exact_match_strict_pct"], ls="--", color="#2ca02c",
                       label=f"exact match of the tuned model on {claim['data_name']} (strict)")
        ax.set(xlabel="optimizer step", ylabel="%", ylim=(0, 100),
               title="Mean token accuracy: teacher-forced, NOT problem-solving accuracy")
        ax.legend(loc="lower right")
        out["token_accuracy.png"] = _figure_bytes(fig)

    if benchmark.get("available"):
        models = list(benchmark["models"])
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(models)
        for i, name in enumerate(models):
            m = benchmark["models"][name]
            values = [m[k]["accuracy_pct"] for k in ("strict", "flexible")]
            xs = [j + i * width for j in range(2)]
            ax.bar(xs, [v or 0 for v in values], width,
                   yerr=_error_bars(values, [m[k]["ci95_pct"] for k in ("strict", "flexible")]),
                   capsize=4, label=name, color=MODEL_COLORS.get(name))
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(2)], ["strict", "flexible"])
        ax.set(ylabel="exact match %", ylim=(0, 100), title=f"{benchmark['data_name']}: accuracy ({benchmark['ci_level_pct']}% Wilson)")
        ax.legend()
        out["accuracy.png"] = _figure_bytes(fig)

    if errors.get("available"):
        models = list(errors["counts"])
        cats = errors["categories"]
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(models)
        for i, name in enumerate(models):
            ax.bar([j + i * width for j in range(len(cats))], [errors["counts"][name][c] for c in cats], width,
                   label=name, color=MODEL_COLORS.get(name))
        ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(cats))],
                      [c.replace("_", "\n") for c in cats])
        ax.set(ylabel="wrong answers", title="Error categories")
        ax.legend()
        out["error_categories.png"] = _figure_bytes(fig)

        fig, ax = plt.subplots(figsize=(8, 4))
        for name in models:
            rows = errors["accuracy_by_steps"][name]
            values = [r["accuracy_pct"] for r in rows]
            ax.errorbar([r["steps"] for r in rows], values, yerr=_error_bars(values, [r["ci95_pct"] for r in rows]),
                        marker="o", capsize=4, label=name, color=MODEL_COLORS.get(name))
        ax.set(xlabel="reasoning steps in the gold solution", ylabel="strict exact match %", ylim=(0, 105),
               title="Accuracy by number of reasoning steps")
        ax.legend()
        out["accuracy_by_steps.png"] = _figure_bytes(fig)

    from mathtune.report_followups import followup_figures

    out.update(followup_figures(analysis, plt))

    grpo = analysis.get("recipe", {}).get("grpo", {})
    if grpo.get("available"):
        c = grpo["curves"]

        def series(key):
            return [float("nan") if v is None else v for v in c[key]]

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        left.plot(c["step"], series("reward"), "o-", label="mean reward", color="#1f77b4")
        left.plot(c["step"], series("mixed_groups"), "s--", label="groups with mixed rewards", color="#ff7f0e")
        left.set(xlabel="optimizer step", ylabel="reward / share", ylim=(-0.05, 1.05), title="GRPO reward")
        left.legend()
        right.plot(c["step"], series("completion_length"), "o-", color="#2ca02c")
        right.set(xlabel="optimizer step", ylabel="tokens", title="Mean completion length")
        out["grpo.png"] = _figure_bytes(fig)

    contamination = analysis["contamination"]
    if contamination.get("available"):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(contamination["histogram_labels"], contamination["histogram_counts"], color="#9467bd")
        ax.set(xlabel=f"share of the test question's {contamination['n']}-grams found in training questions",
               ylabel="test questions", title="Contamination check")
        out["contamination.png"] = _figure_bytes(fig)
    return out


# --- rendering ------------------------------------------------------------------------------------


def _md_fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return fence


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _contents(blocks: list, after: int) -> list[Heading]:
    return [b for b in blocks[after + 1:] if isinstance(b, Heading) and b.level == 2]


def render_markdown(blocks: list) -> str:
    parts = []
    for i, b in enumerate(blocks):
        if isinstance(b, Contents):
            parts.append("Contents: " + " · ".join(f"[{h.text}](#{anchor(h.text)})" for h in _contents(blocks, i)))
        elif isinstance(b, Heading):
            parts.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            parts.append("\n".join(lines))
        elif isinstance(b, Figure):
            parts.append(f"![{b.caption}](figures/{b.name})")
        elif isinstance(b, ModelText):
            fence = _md_fence(b.text)
            parts.append(f"{b.label}:\n\n{fence}text\n{b.text}\n{fence}")
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #eee; }
figure { margin: 1em 0; }
pre { background: #f7f7f7; padding: 0.6em; white-space: pre-wrap; word-wrap: break-word; border-left: 3px solid #ccc; }
.label { font-size: 0.85em; color: #666; margin-bottom: 0; }
nav.toc ol { columns: 2; margin-top: 0.3em; }
@media print {
  body { max-width: none; margin: 0; font-size: 10.5pt; }
  nav.toc { display: none; }
  h1, h2, h3 { break-after: avoid; page-break-after: avoid; }
  table, figure, pre, tr { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-before: auto; }
  img { max-width: 100%; max-height: 9cm; border: none; }
  a { color: inherit; text-decoration: none; }
}
"""


def _html_inline(text: str) -> str:
    # Only **bold** is used by the report's own sentences; everything is escaped first.
    escaped = html.escape(text)
    pieces = escaped.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(pieces))


def render_html(blocks: list, title: str, figures: dict[str, bytes]) -> str:
    body = []
    for i, b in enumerate(blocks):
        if isinstance(b, Contents):
            links = "".join(f'<li><a href="#{anchor(h.text)}">{html.escape(h.text)}</a></li>' for h in _contents(blocks, i))
            body.append(f'<nav class="toc"><p class="label">Contents</p><ol>{links}</ol></nav>')
        elif isinstance(b, Heading):
            body.append(f'<h{b.level} id="{anchor(b.text)}">{html.escape(b.text)}</h{b.level}>')
        elif isinstance(b, Para):
            body.append(f"<p>{_html_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
            # <wbr> after each '/': a long path may break there instead of widening the table
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace('/', '/<wbr>')}</td>" for c in row) + "</tr>"
                           for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(figures[b.name]).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                        f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
        elif isinstance(b, ModelText):
            body.append(f'<p class="label">{html.escape(b.label)}:</p><pre>{html.escape(b.text)}</pre>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def build_report(run_dir: Path) -> list[Path]:
    """Write report.md, report.html (as config report.formats asks) and figures/*.png from
    RUN_DIR/analysis.json; returns the paths written."""
    run_dir = Path(run_dir)
    analysis_path = run_dir / "analysis.json"
    if not analysis_path.is_file():
        raise MathtuneError(f"no analysis.json in {run_dir}; run `mathtune report {run_dir}` to build it")
    try:
        analysis = json.loads(analysis_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MathtuneError(f"{analysis_path}: malformed JSON ({err.msg})") from None

    figures = make_figures(analysis)
    figure_dir = run_dir / "figures"
    figure_dir.mkdir(exist_ok=True)
    written = []
    for name in FIGURE_NAMES:
        path = figure_dir / name
        if name in figures:
            write_atomic(path, figures[name])
            written.append(path)
        else:
            path.unlink(missing_ok=True)  # a figure from an earlier build would no longer match

    blocks = report_blocks(analysis, set(figures))
    formats = analysis["run"].get("report_formats") or ["md", "html"]
    if "md" in formats:
        path = run_dir / "report.md"
        write_atomic(path, render_markdown(blocks).encode("utf-8"))
        written.append(path)
    if "html" in formats:
        path = run_dir / "report.html"
        title = f"mathtune report: {analysis['run']['name']}"
        write_atomic(path, render_html(blocks, title, figures).encode("utf-8"))
        written.append(path)
    return written
