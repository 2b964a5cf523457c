"""The report's figures: PNG bytes drawn with matplotlib from the arrays analysis.json holds.

    make_figures(analysis) -> {figure name: PNG bytes}   (report.followup_sections draws the follow-ups')
"""

from __future__ import annotations

import io

from mathtune.core.analysis_record import Analysis

FIGURE_NAMES = (
    "loss.png", "val_exact_match.png", "token_accuracy.png", "accuracy.png", "error_categories.png", "accuracy_by_steps.png",
    "contamination.png", "grpo.png", "self_consistency.png", "probe.png",  # the last two: report.followup_sections
)

MODEL_COLORS = {"base": "#8c8c8c", "tuned": "#1f77b4"}



def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display is needed or opened)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_bytes(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def error_bars(values: list, intervals: list) -> list[list[float]]:
    # Drawing only: matplotlib wants distances from the bar top, not the interval ends.
    lows = [0 if v is None or i[0] is None else v - i[0] for v, i in zip(values, intervals)]
    highs = [0 if v is None or i[1] is None else i[1] - v for v, i in zip(values, intervals)]
    return [lows, highs]


def make_figures(analysis: Analysis) -> dict[str, bytes]:
    """PNG bytes per figure name, drawn from the arrays analysis.json holds."""
    plt = pyplot()
    out: dict[str, bytes] = {}
    if analysis.training.get("available"):
        out |= training_figures(plt, analysis.training, analysis.seed_claim)
    if analysis.benchmark.get("available"):
        out["accuracy.png"] = accuracy_figure(plt, analysis.benchmark)
    if analysis.errors.get("available"):
        out |= error_figures(plt, analysis.errors)
    grpo = analysis.recipe.get("grpo", {})
    if grpo.get("available"):
        out["grpo.png"] = grpo_figure(plt, grpo)
    contamination = analysis.contamination
    if contamination.get("available"):
        out["contamination.png"] = contamination_figure(plt, contamination)
    return out


def training_figures(plt, training: dict, claim: dict) -> dict[str, bytes]:
    """The loss curves, validation exact match where it was measured, and token accuracy."""
    out: dict[str, bytes] = {}
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
    out["loss.png"] = figure_bytes(fig)

    em = training.get("exact_match") or {}
    if em.get("available"):
        points = em["points"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        steps, values = [p["step"] for p in points], [p["accuracy_pct"] for p in points]
        left.errorbar(steps, values, yerr=error_bars(values, [p["ci95_pct"] for p in points]), fmt="o-",
                      capsize=4, color="#2ca02c")
        for step, style, label in ((em["best_step_by_exact_match"], "--", "best by exact match"),
                                   (em["best_step_by_loss"], ":", "best by validation loss")):
            if step is not None:
                left.axvline(step, ls=style, color="k", label=label)
                right.axvline(step, ls=style, color="k", label=label)
        left.set(xlabel="optimizer step", ylabel="strict exact match %", ylim=(0, 100),
                 title=f"Validation exact match ({em['problems']} problems)")
        left.legend()
        right.plot(steps, [p["eval_loss"] for p in points], "o-", color="#d62728")
        right.set(xlabel="optimizer step", ylabel="validation loss", title="Validation loss")
        out["val_exact_match.png"] = figure_bytes(fig)

    def as_pct(values):
        return [float("nan") if v is None else v * 100 for v in values]  # a gap in the line

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(curves["train"]["step"], as_pct(curves["train"]["mean_token_accuracy"]), label="train", lw=1)
    if curves["validation"]["step"]:
        ax.plot(curves["validation"]["step"], as_pct(curves["validation"]["mean_token_accuracy"]), "o-",
                label="validation", color="#d62728")
    if claim.get("available") and claim["gsm8k_exact_match_strict_pct"] is not None:
        ax.axhline(claim["gsm8k_exact_match_strict_pct"], ls="--", color="#2ca02c",
                   label=f"exact match of the tuned model on {claim['data_name']} (strict)")
    ax.set(xlabel="optimizer step", ylabel="%", ylim=(0, 100),
           title="Mean token accuracy: teacher-forced, NOT problem-solving accuracy")
    ax.legend(loc="lower right")
    out["token_accuracy.png"] = figure_bytes(fig)
    return out


def accuracy_figure(plt, benchmark: dict) -> bytes:
    models = list(benchmark["models"])
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        m = benchmark["models"][name]
        values = [m[k]["accuracy_pct"] for k in ("strict", "flexible")]
        xs = [j + i * width for j in range(2)]
        ax.bar(xs, [v or 0 for v in values], width,
               yerr=error_bars(values, [m[k]["ci95_pct"] for k in ("strict", "flexible")]),
               capsize=4, label=name, color=MODEL_COLORS.get(name))
    ax.set_xticks([j + width * (len(models) - 1) / 2 for j in range(2)], ["strict", "flexible"])
    ax.set(ylabel="exact match %", ylim=(0, 100), title=f"{benchmark['data_name']}: accuracy ({benchmark['ci_level_pct']}% Wilson)")
    ax.legend()
    return figure_bytes(fig)


def error_figures(plt, errors: dict) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
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
    out["error_categories.png"] = figure_bytes(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    for name in models:
        rows = errors["accuracy_by_steps"][name]
        values = [r["accuracy_pct"] for r in rows]
        ax.errorbar([r["steps"] for r in rows], values, yerr=error_bars(values, [r["ci95_pct"] for r in rows]),
                    marker="o", capsize=4, label=name, color=MODEL_COLORS.get(name))
    ax.set(xlabel="reasoning steps in the gold solution", ylabel="strict exact match %", ylim=(0, 105),
           title="Accuracy by number of reasoning steps")
    ax.legend()
    out["accuracy_by_steps.png"] = figure_bytes(fig)
    return out


def grpo_figure(plt, grpo: dict) -> bytes:
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
    return figure_bytes(fig)


def contamination_figure(plt, contamination: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(contamination["histogram_labels"], contamination["histogram_counts"], color="#9467bd")
    ax.set(xlabel=f"share of the test question's {contamination['n']}-grams found in training questions",
           ylabel="test questions", title="Contamination check")
    return figure_bytes(fig)
