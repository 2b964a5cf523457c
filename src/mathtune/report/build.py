"""Report: renders analysis.json as report.md and a self-contained report.html.

    mathtune report RUN_DIR        (rebuilds analysis.json, then this report)

The report computes nothing: every number it prints is a value of analysis.json printed
as stored (analysis.json keeps the rounded display values), so a reader can find each one
again. The page is built once as a list of blocks (report.blocks) and rendered twice
(report.render), so the Markdown and the HTML cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

from mathtune.core.analysis_record import Analysis, AnalysisRun, read_analysis
from mathtune.core.errors import MathtuneError
from mathtune.core.method_kinds import METHOD_KIND_TABLE
from mathtune.core.runfiles import write_atomic
from mathtune.core.stats import counted
from mathtune.report.blocks import (Bullets, Columns, Contents, Details, Figure, Heading, ModelText, Para, Table,
                                    Verdict, sentence, short_name, show, show_count, show_interval, show_pct,
                                    show_signed)
from mathtune.report.explanations import (GRPO_KL, GRPO_MIXED_GROUPS, GRPO_REWARD, RFT_KEPT,
                                          RFT_SHARE_FROM_MODEL, SIGN, TOKEN_ACCURACY, TREND_RULE,
                                          VALIDATION_EXACT_MATCH, accuracy_trend_text, contamination_definition,
                                          disagreement_text, final_stretch_definition, grpo_window_definition,
                                          loss_decrease_definition, paired_verdict_text, plan_miss_text,
                                          recommendation_text, seed_claim_text)
from mathtune.report.figures import FIGURE_NAMES, make_figures
from mathtune.report.followup_sections import followup_blocks, followup_figures, renamed_people_blocks
from mathtune.report.render import render_html, render_markdown


def reused_sentence(name: str, reused: dict) -> str:
    """Where a reused evaluation came from (analysis.benchmark's reused_from)."""
    return (f"The {name} evaluation was reused, not decoded again: the run {show(reused.get('made_in'))} made it "
            f"({show(reused.get('made'))}) with the same model content, problems, prompt, decoding settings, limit "
            f"and mathtune version, and it is kept in the cache ({show(reused.get('cache'))}). Its time and speed "
            "figures are that run's.")


def forms_text(forms: dict) -> str:
    """"'The answer is: N' 180, '\\boxed{N}' 20": the forms found, most common first."""
    ordered = sorted(forms.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"'{f}' {n}" if " N" in f or "{N}" in f else f"{f} {n}" for f, n in ordered)


def answer_forms_sentence(forms: dict, asked: str | None) -> str:
    """How the training answers state their final number, and the form the chat prompt asked for."""
    text = f"Training answers, by how they state the final number: {forms_text(forms)}."
    if asked:
        text += (f" The chat prompt asked for '{asked}', the training data's form, in training and evaluation "
                 "(the strict score accepts every stated form).")
    return text


def training_blocks(training: dict, figures: set[str]) -> list:
    if training.get("ran") is False:  # an evaluation or probe folder: nothing to say "not available" about
        return []
    blocks: list = [Heading(2, "Training")]
    if not training.get("available"):
        return blocks + [Para(sentence(training.get("reason", "no training in this run")) + ".")]
    d, dec, stretch, trend = training["definitions"], training["loss_decrease"], training["final_stretch"], training["trend"]
    if len(training.get("data_sources") or []) > 1:  # a data.mix: where the training examples came from
        blocks.append(Table(["training source", "split", "weight", "problems", "examples taken"],
                            [[s["source"], s["split"], show(s["weight"]), show(s["problems"]), show(s["examples"])]
                             for s in training["data_sources"]]))
    if training.get("answer_forms"):
        blocks.append(Para(answer_forms_sentence(training["answer_forms"], training.get("prompt_answer_form"))))
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
        f" The final stretch is steps {stretch['from_step']} to {stretch['to_step']}: {final_stretch_definition(d)}."
        if stretch.get("available") else ""
    )
    blocks.append(Para(f"Loss decrease: {loss_decrease_definition(d)}.{stretch_text} Sign: {SIGN}."))
    if "loss.png" in figures:
        blocks.append(Figure("loss.png", "Training and validation loss per step (dotted line: best step)."))
    rule = trend["definition"]
    # The verdict with the points it used; what to do about it is under Recommendations.
    blocks.append(Para(
        f"Trend verdict: **{trend['verdict']}**. Validation: decrease {show_pct(trend.get('validation_decrease_pct'))} "
        f"over the last {show(trend.get('validation_points_used'))} evaluations (the window needs "
        f"{rule['validation_window_points']}); training: decrease {show_pct(trend.get('train_decrease_pct'))} over "
        f"{show(trend.get('train_points_used'))} logged points of the final stretch (needs "
        f"{show(rule.get('min_train_points'))}). Threshold {rule['threshold_pct']}%. Rule: {TREND_RULE}."
    ))
    acc = training["token_accuracy"]
    blocks.append(Table(
        ["mean token accuracy (teacher-forced next-token accuracy, NOT problem-solving accuracy)", "start", "end"],
        [
            ["train", show_pct(acc["train"]["start_pct"]), show_pct(acc["train"]["end_pct"])],
            ["validation", show_pct(acc["validation"]["start_pct"]), show_pct(acc["validation"]["end_pct"])],
        ],
    ))
    blocks.append(Para(f"Token accuracy: {TOKEN_ACCURACY}."))
    if "token_accuracy.png" in figures:
        blocks.append(Figure("token_accuracy.png",
                             "Mean token accuracy (teacher-forced next-token accuracy, not problem-solving accuracy)."))
    blocks += exact_match_blocks(training.get("exact_match") or {}, figures)
    cost = show(training["cost_usd"]) if training["cost_usd"] is None else f"${training['cost_usd']}"
    note = f" ({training['cost_note']})" if training.get("cost_note") else ""
    blocks.append(Table(
        ["training fact", "value"],
        [
            best_step_row(training),
            ["stopped early (patience)", f"{show(training['stopped_early'])} ({show(training['early_stopping_patience'])})"],
            ["optimizer steps", show(training["global_step"])],
            ["wall time", f"{show(training['wall_time_s'])} s ({show(training['wall_time_min'])} min)"],
            ["tokens seen", show(training["tokens_seen"])],
            ["tokens/s", show(training["tokens_per_s"])],
            ["peak memory", f"{show(training['peak_memory_gib'])} GiB"],
            ["trainable / total parameters (total = base model + adapter)",
             f"{show_count(training['trainable_params'])} / {show_count(training['total_params'])} (base model "
             f"{show_count(training.get('base_params'))} + adapter {show_count(training['trainable_params'])})"],
            ["device", show(training["device"])],
            ["estimated cost", cost + note],
        ],
    ))
    return blocks


def best_step_row(training: dict) -> list[str]:
    em = training.get("exact_match") or {}
    if not em.get("available") or em.get("select_by") != "exact_match":
        return ["best step (validation loss)", f"{show(training['best_step'])} ({show(training['best_eval_loss'])})"]
    kept = next((p for p in em["points"] if p["step"] == training["best_step"]), None)
    solved = f"{kept['correct']}/{kept['n']} solved, " if kept else ""
    return ["best step (validation exact match)",
            f"{show(training['best_step'])} ({solved}validation loss {show(training['best_eval_loss'])})"]


def exact_match_blocks(em: dict, figures: set[str]) -> list:
    """Validation exact match during training: the curve, the step each rule keeps, the trend."""
    if not em.get("available"):
        return []
    blocks: list = [Heading(3, "Validation exact match during training")]
    blocks.append(Table(["step", "validation loss", "exact match, strict (95% Wilson)"],
                        [[show(p["step"]), show(p["eval_loss"]),
                          f"{show_pct(p['accuracy_pct'])} {show_interval(p['ci95_pct'])} ({p['correct']}/{p['n']})"]
                         for p in em["points"]]))
    kept_by = "exact match" if em["select_by"] == "exact_match" else "validation loss"
    said = [f"Kept by {kept_by} (train.select_by {em['select_by']}): step {show(em['kept_step'])}. The validation "
            f"loss would keep step {show(em['best_step_by_loss'])}, the exact match step "
            f"{show(em['best_step_by_exact_match'])}."]
    if em.get("disagreement"):
        said.append(disagreement_text(em["disagreement"]))
    trend = em["trend"]
    said.append(sentence(accuracy_trend_text(trend)) + "." if trend.get("available")
                else f"No accuracy trend: {trend['reason']}.")
    said.append(f"Decoding the {em['problems']} validation problems took {show(em['decode_s'])} s in all"
                + (f", {em['decode_share_pct']}% of the training time." if em.get("decode_share_pct") is not None
                   else "."))
    blocks.append(Para(" ".join(said) + f" Definition: {VALIDATION_EXACT_MATCH}."))
    if "val_exact_match.png" in figures:
        blocks.append(Figure("val_exact_match.png", "Validation exact match per validation point, 95% Wilson "
                                                    "intervals, next to the validation loss."))
    return blocks


def benchmark_blocks(benchmark: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, f"Benchmark: {benchmark['data_name']}" if benchmark.get("available") else "Benchmark")]
    if not benchmark.get("available"):
        return blocks + [Para(sentence(benchmark.get("reason", "no evaluation in this run")) + ".")]
    level = benchmark["ci_level_pct"]
    blocks.append(Para(f"Protocol: {benchmark['protocol']}."))
    if not benchmark["same_protocol"]:
        blocks.append(Para("Warning: the models were evaluated under different protocols; their accuracies are not comparable."))
    for name, m in benchmark["models"].items():
        if m.get("reused_from"):
            blocks.append(Para(reused_sentence(name, m["reused_from"])))
    rows = []
    for name, m in benchmark["models"].items():
        rows.append([
            name, short_name(m["model"]) + (" + adapter" if m.get("adapter") else ""), show(m["n"]),
            f"{show_pct(m['strict']['accuracy_pct'])} {show_interval(m['strict']['ci95_pct'])}",
            f"{show_pct(m['flexible']['accuracy_pct'])} {show_interval(m['flexible']['ci95_pct'])}",
            show(m["truncated"]) + f" (budget {show(m['max_new_tokens'])} tokens"
            + (f"; {show(m['truncated_in_think'])} still inside a think block" if m.get("truncated_in_think") else "")
            + ")",
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
        blocks.append(Para(  # the verdict itself is the report's first line
            f"Paired on {counted(paired['n_paired'], 'problem')} joined on '{paired['joined_on']}'; "
            f"{paired['bootstrap_resamples']} bootstrap resamples (seed {paired['bootstrap_seed']})."
        ))
    else:
        blocks.append(Para(f"No paired comparison: {paired.get('reason')}."))
    return blocks  # its figure is on the first screen


def recipe_blocks(recipe: dict, figures: set[str]) -> list:
    """The training method, and its own section (what RFT kept, how GRPO's reward moved)."""
    method = recipe.get("method", "sft")
    entry = METHOD_KIND_TABLE.find(method)
    blocks: list = [Heading(2, f"Training method: {method}"),
                    Para(sentence(entry.description if entry else method) + ".")]
    section = recipe.get(method) if method in RECIPE_SECTIONS else None
    if section is not None:
        blocks += RECIPE_SECTIONS[method](section, figures)
    return blocks


def _rft_blocks(r: dict, figures: set[str]) -> list:
    if not r.get("available"):
        return [Para(sentence(r["reason"]) + ".")]
    blocks: list = [Table(["RFT", "value"], [
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
    ])]
    blocks.append(Para(f"Kept: {RFT_KEPT}. Share from the model: {RFT_SHARE_FROM_MODEL}. "
                       f"Every sample is in {r['samples_file']}."))
    return blocks


def _grpo_blocks(g: dict, figures: set[str]) -> list:
    if not g.get("available"):
        return [Para(sentence(g["reason"]) + ".")]
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
    blocks: list = [Table(["GRPO", "value"], rows)]
    blocks.append(Para(f"Reward: {GRPO_REWARD}. Mixed groups: {GRPO_MIXED_GROUPS}. KL: {GRPO_KL}. "
                       f"Windows: {grpo_window_definition(g)}. The adapter is the one of the last step."))
    if "grpo.png" in figures:
        blocks.append(Figure("grpo.png", "GRPO per step: mean reward and share of mixed groups (left), "
                                         "completion length (right)."))
    return blocks


# The methods whose analysis has a section of their own, under the method's name (analysis.recipe).
RECIPE_SECTIONS = {"rft": _rft_blocks, "grpo": _grpo_blocks}


def seed_claim_blocks(claim: dict) -> list:
    if claim.get("ran") is False:  # no training: no token accuracy to set beside the exact match
        return []
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
    return blocks + [Para(seed_claim_text(claim))]


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
        if not examples:
            blocks.append(Para(f"{sentence(c.replace('_', ' '))}: no wrong answer in this category."))
            continue
        shown: list = []
        blocks.append(Details(f"{sentence(c.replace('_', ' '))}: examples", shown))
        for ex in examples:
            evidence = f" Evidence: {ex['evidence']}." if ex.get("evidence") else ""
            shown.append(Para(
                f"{ex['model']} model, problem {ex['id']} ({ex['steps']} steps): gold {show(ex['gold'])}, strict "
                f"answer {show(ex['pred_strict'])}, last number {show(ex['pred_flexible'])}.{evidence}"
            ))
            shown.append(ModelText("question", ex["question"] or ""))
            shown.append(ModelText("completion", ex["completion"]))
    return blocks


def contamination_blocks(c: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, "Contamination check")]
    if not c.get("available"):
        return blocks + [Para(f"Not available: {c.get('reason')}.")]
    blocks.append(Para(
        f"Definition: {contamination_definition(c)}. Training questions: {c['train_questions']}; test questions: "
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


def provenance_blocks(run: AnalysisRun) -> list:
    """What each stage ran with, as its summary recorded it, collapsed: a table with short names,
    then the full paths and versions, then the fast-path checks."""
    provenance = run.provenance or {}
    stages = provenance.get("stages") or []
    if not stages:
        return [Para(f"Base model: {show(run.base_model)}. Data: {show(run.data_source)}.")]

    def versions(v: dict) -> str:
        return ", ".join(f"{k} {v[k]}" for k in ("mathtune", "torch", "transformers", "peft", "trl") if v.get(k)) or "n/a"

    rows = [[s["stage"], short_name(s["model"]) + ("" if s["adapter"] is None else " + adapter"), short_name(s["data"]),
             show(s["device"]), show(s["dtype"]), show(s.get("weights")), show(s["attention"]), show(s.get("lm_head")),
             show(s.get("decoder")), show(s["batch_size"])]
            for s in stages]
    remote = provenance.get("remote_code_stages") or []
    said = (f"trust_remote_code was on for {', '.join(remote)}: Python code shipped with the model ran in that stage."
            if remote else "trust_remote_code was off: no code shipped with the model ran.")
    table = Table(["stage", "model", "data", "device", "dtype", "base weights", "attention", "LM head", "decoder",
                   "batch"], rows)
    full = [f"{s['stage']}: model {show(s['model'])}" + (f", adapter {s['adapter']}" if s["adapter"] else "")
            + f"; data {show(s['data'])}; {versions(s['versions'])}" for s in stages]
    shown: list = [table, Bullets(full)]
    for a in provenance.get("adapters") or []:
        trained = f"; its weights trained in {a['trained_dtype']}" if a.get("trained_dtype") else ""
        shown.append(Para(f"Adapter ({', '.join(a['stages'])}): {a['adapter']}{trained}."))
    if provenance.get("weights"):
        shown.append(Para(provenance["weights"]))
    shown.append(Para(said))
    blocks: list = [Details("Each stage's model, data, device, paths and versions", shown)]
    checks = [f"{s['stage']}: {line}" for s in stages for line in s.get("path_checks") or []]
    if checks:
        blocks.append(Details("Fast paths, each checked against its reference on the device before its first use",
                              [Bullets(checks)]))
    return blocks


def verdict_text(analysis: Analysis) -> str:
    """The report's answer in one sentence: the paired test of tuned against base where there is
    one, else what there is."""
    benchmark, training = analysis.benchmark, analysis.training
    if training.get("diverged"):  # first: no figure of this run is a finished training's
        d = training["diverged"]
        return (f"Training diverged at step {d['step']} ({d['metric']} {d['value']}): it was stopped there and no "
                "adapter was kept from it.")
    if benchmark.get("available") and benchmark["paired"].get("available"):
        return paired_verdict_text(benchmark["paired"])
    if benchmark.get("available") and len(benchmark["models"]) == 1:  # an evaluation folder: its one accuracy
        (name, m), = benchmark["models"].items()
        return (f"{name}: strict exact match {show_pct(m['strict']['accuracy_pct'])} "
                f"{show_interval(m['strict']['ci95_pct'])} ({benchmark['ci_level_pct']}% Wilson) on {show(m['n'])} "
                f"problems of {benchmark['data_name']}.")
    if benchmark.get("available"):
        return f"No paired comparison of tuned and base: {benchmark['paired'].get('reason')}."
    if training.get("available") and training.get("trend", {}).get("verdict"):
        return f"Training trend: {training['trend']['verdict']}; {benchmark.get('reason', 'no evaluation in this run')}."
    return sentence(benchmark.get("reason", "no evaluation in this run")) + "."


def summary_table(analysis: Analysis) -> Table:
    """The short summary beside the figure: short names, each figure once."""
    run, benchmark, training = analysis.run, analysis.benchmark, analysis.training
    rows = [["base model", short_name(run.base_model)]]
    if benchmark.get("available"):
        rows.append(["data", f"{benchmark['data_name']}, {show(next(iter(benchmark['models'].values()))['n'])} problems"])
        for name, m in benchmark["models"].items():
            rows.append([f"{name}, strict", f"{show_pct(m['strict']['accuracy_pct'])} {show_interval(m['strict']['ci95_pct'])}"])
        paired = benchmark["paired"]
        if paired.get("available"):
            p = paired["strict"]
            rows.append(["tuned - base", f"{show_signed(p['difference_pp'])} points {show_interval(p['ci95_pp'], '')}, "
                                         f"McNemar p {p['mcnemar_p_display']}"])
        rows.append(["evaluation time", ", ".join(f"{name} {show(m.get('wall_time_s'))} s"
                                                  for name, m in benchmark["models"].items())])
    else:
        rows.append(["data", short_name(run.data_source)])
    if run.eval_source:  # trained on one source, evaluated on another
        rows.append(["evaluated on", short_name(run.eval_source)])
    if training.get("available"):
        rows.append(["training", f"{show(training['wall_time_min'])} min on {show(training['device'])}, trend "
                                 f"{show(training.get('trend', {}).get('verdict'))}"])
        cost = training.get("cost_usd")
        rows.append(["training cost", f"${cost}" if cost is not None else show(training.get("cost_note"))])
    return Table(["summary", ""], rows)


def plan_blocks(plan: dict) -> list:
    """The plan set beside what happened, collapsed: its basis is long and the answer comes first."""
    if not plan.get("available"):
        return []
    return [Details(f"The plan ({plan['device']}) against what happened", [
        Table(["figure", "planned", "actual", "missed by"],
              [[r["figure"], show(r["planned"]), show(r["actual"]), plan_miss_text(r.get("missed_by"))]
               for r in plan["rows"]]),
        Para(f"Plan basis: {plan['basis']}. An estimate, not a bound."),
    ])]


def first_screen_blocks(analysis: Analysis, figures: set[str]) -> list:
    """The answer first: the verdict in one sentence, the summary beside the base-versus-tuned
    figure, then the plan against what happened, collapsed."""
    right = []
    if "accuracy.png" in figures:
        benchmark = analysis.benchmark
        right.append(Figure("accuracy.png", f"Exact match on {benchmark['data_name']} with "
                                            f"{benchmark['ci_level_pct']}% Wilson intervals."))
    blocks: list = [Verdict(verdict_text(analysis)), Columns([summary_table(analysis)], right)]
    return blocks + plan_blocks(analysis.plan)


def report_blocks(analysis: Analysis, figures: set[str]) -> list:
    run = analysis.run
    blocks: list = [Heading(1, f"mathtune report: {run.name}")]
    blocks += first_screen_blocks(analysis, figures)
    blocks.append(Contents())
    blocks.append(Heading(2, "Recommendations"))
    # The paired verdict is the report's first line; the list holds what to do.
    advice = [recommendation_text(item, analysis) for item in analysis.recommendations if item["advice"] != "paired"]
    blocks.append(Bullets(advice or ["Nothing to recommend beyond the verdict above."]))
    method = METHOD_KIND_TABLE.find(analysis.recipe.get("method", "sft"))
    if method is None or method.recipe_section:
        blocks += recipe_blocks(analysis.recipe, figures)
    blocks += training_blocks(analysis.training, figures)
    blocks += benchmark_blocks(analysis.benchmark, figures)
    blocks += followup_blocks(analysis, figures)
    blocks += seed_claim_blocks(analysis.seed_claim)
    blocks += error_blocks(analysis.errors, figures)
    blocks += contamination_blocks(analysis.contamination, figures)
    blocks += renamed_people_blocks(analysis, figures)
    blocks.append(Heading(2, "What ran"))
    blocks += provenance_blocks(run)
    return blocks


def build_report(run_dir: Path) -> list[Path]:
    """Write report.md, report.html (as config report.formats asks) and figures/*.png from
    RUN_DIR/analysis.json; returns the paths written."""
    run_dir = Path(run_dir)
    analysis_path = run_dir / "analysis.json"
    if not analysis_path.is_file():
        raise MathtuneError(f"no analysis.json in {run_dir}; run `mathtune report {run_dir}` to build it")
    analysis = read_analysis(analysis_path)

    figures = {**make_figures(analysis), **followup_figures(analysis)}
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
    formats = analysis.run.report_formats or ["md", "html"]
    if "md" in formats:
        path = run_dir / "report.md"
        write_atomic(path, render_markdown(blocks).encode("utf-8"))
        written.append(path)
    if "html" in formats:
        path = run_dir / "report.html"
        title = f"mathtune report: {analysis.run.name}"
        write_atomic(path, render_html(blocks, title, figures).encode("utf-8"))
        written.append(path)
    return written
