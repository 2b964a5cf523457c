"""The report's follow-up sections: self-consistency, the robustness probe, the self-check
turn. Renders what analysis.json holds (see analysis.followup_measures), its verdict codes in
words, and computes nothing.

    followup_blocks(analysis, figures)        -> report blocks
    renamed_people_blocks(analysis, figures)  -> the names probe, for beside the contamination check
    followup_figures(analysis)         -> {figure name: PNG bytes}
"""

from __future__ import annotations

from mathtune.core.analysis_record import Analysis
from mathtune.core.probe_kinds import PROBE_KIND_TABLE
from mathtune.core.stats import counted, p_value_text, points_text
from mathtune.report.blocks import Bullets, Figure, Heading, Para, Table, show, show_interval, show_signed
from mathtune.report.figures import error_bars, figure_bytes, pyplot


def _acc(cell: dict) -> str:
    if cell.get("accuracy_pct") is None:
        return "n/a"
    return f"{cell['accuracy_pct']}% {show_interval(cell['ci95_pct'])} ({cell['correct']}/{cell['n']})"


def _points(p: dict | None) -> str:
    if not p:
        return "n/a"
    return f"{show_signed(p['points'])} {show_interval(p['ci95_points'], '')}"


MAJ_AT_K = ("the most common strict answer among a problem's first k samples (ties: the one drawn first) equals the "
            "gold answer")
PASS_AT_K = ("at least one of the first k samples is strictly right: what a perfect verifier choosing among them "
             "would reach")

def probe_verdict_text(kind: str, model: dict) -> str:
    """What a model's gap on one kind of variant means (analysis.followup_measures' verdict code)."""
    entry = PROBE_KIND_TABLE.find(kind) or next(iter(PROBE_KIND_TABLE))  # a kind unknown here: read as the first
    surface, same, changed = entry.surface
    return {"lower on variants": ("the drop is outside the interval: part of what this model solves rests on the "
                                  f"surface of the original problems ({surface}), not on reasoning that carries "
                                  f"over to {same}"),
            "higher on variants": "the variants came out easier for this model, beyond the interval",
            "no difference shown": f"the interval covers zero: no drop on {changed} is shown at this size",
            }[model["verdict"]]


def regression_verdict_texts(reg: dict) -> list[str]:
    """Per general benchmark, what tuning did to it (analysis.followup_measures' verdict codes)."""
    texts = []
    for task, p in reg["paired"].items():
        change = points_text(p["difference"])
        texts.append({"lower": f"{task}: the fine-tune cost general ability beyond the interval: {change} on "
                               f"{p['n']} documents.",
                      "higher": f"{task}: the tuned model scored higher beyond the interval: {change}.",
                      "no difference shown": f"{task}: no cost to general ability is shown beyond the interval: "
                                             f"{change} on {p['n']} documents."}[p["verdict"]])
    return texts


def _self_consistency(sc: dict, figures: set[str]) -> list:
    blocks: list = [Heading(2, "Self-consistency: majority vote and pass@k")]
    blocks.append(Para(f"maj@k: {MAJ_AT_K}. pass@k: {PASS_AT_K}. Intervals: 95% Wilson score interval over "
                       "problems."))
    for name, m in sc["models"].items():
        s = m["sampling"]
        blocks.append(Para(f"{name}: {counted(m['n'], 'problem')}, {m['samples']} samples each at temperature "
                           f"{show(s['temperature'])}, top-p {show(s['top_p'])}, seed {show(s['seed'])}, "
                           f"max_new_tokens {show(s['max_new_tokens'])}."))
        blocks.append(Table(["k", "maj@k (strict)", "pass@k (strict)", "maj@k (flexible)", "pass@k (flexible)"],
                            [[str(a["k"]), _acc(a["maj"]), _acc(a["pass"]), _acc(b["maj"]), _acc(b["pass"])]
                             for a, b in zip(m["strict"], m["flexible"])]))
        g = m.get("greedy")
        if g:
            blocks.append(Para(f"Against the greedy answers of {g['records']} on the same {g['n']} problems: the "
                               f"{m['samples']}-sample vote differs from the greedy answer on {g['vote_differs']} "
                               f"({show(g['vote_differs_pct'])}%); greedy {_acc(g['greedy'])}, vote {_acc(g['vote'])}."))
        else:
            blocks.append(Para(f"No greedy evaluation of {name}'s model on these problems in this folder, so the "
                               "vote is not compared with greedy decoding."))
    if "self_consistency.png" in figures:
        blocks.append(Figure("self_consistency.png", "maj@k and pass@k against k, strict, with 95% Wilson intervals"))
    return blocks


def _draw_rules(g: dict) -> str:
    """The draws each rule turned down (drawn again) and the numbers held, as the generator counted them."""
    rejected = g.get("draws_rejected") or {}
    rules = g.get("draw_rules") or {"numbers_collapse": "two distinct numbers of the question made equal"}
    text = "; ".join(f"{n} {rules.get(k, k)}" for k, n in rejected.items() if n)
    held = "; ".join(f"{n} {(g.get('held_rules') or {}).get(k, k)}" for k, n in (g.get("held") or {}).items() if n)
    return (f" Draws turned down, and drawn again: {text}." if text else "") + \
        (f" Numbers of the questions held as they are: {held}." if held else "")


def _audit_text(audit: dict | None) -> str:
    """The hand audit of this kind's golds, or that there is none for these variants."""
    if not audit:
        return ("Gold answers: no hand audit was made of variants written under these rules; a wrong gold would "
                "count a right answer as wrong.")
    wrong = f"{audit['wrong']} had a wrong gold" if audit["wrong"] else "none had a wrong gold"
    return (f"Gold answers audited by hand ({audit['date']}): {audit['checked']} variants of this kind, drawn at random "
            f"(seed {audit['sample_seed']}) from the probe's variants of {audit['drawn_from']}, each solved from its "
            f"text alone; {wrong}. The wrong-gold rate is below {audit['upper95_pct']}% (exact one-sided 95% bound).")


def _probe(kind: str, probe: dict, figures: set[str]) -> list:
    """One kind of variant: what was kept and skipped, and each model's paired accuracy."""
    entry = PROBE_KIND_TABLE.find(kind)
    blocks: list = [Heading(2, entry.title if entry else f"Robustness: {kind}")]
    g, k = probe["generator"], probe["kinds"][kind]
    counts = k["generator"]
    skipped = "; ".join(f"{n} {counts['skip_reasons'][r]}" for r, n in counts.get("skipped", {}).items()) or "none"
    blocks.append(Para(f"Variants of {counts.get('kept')} of {g.get('problems')} test problems "
                       f"({g.get('variants_per_problem')} per problem, seed {g.get('seed')}): "
                       f"{entry.changes if entry else kind}. Skipped: {skipped}." + _draw_rules(counts)))
    blocks.append(Para(_audit_text(k.get("hand_audit"))))
    rows = []
    for name, m in k["models"].items():
        rows.append([name, _acc(m["original"]), _acc(m["variant"]), _points(m["gap"]),
                     f"{m['pairs']['solved_original_lost_variant']} / {m['pairs']['failed_original_solved_variant']}",
                     p_value_text(m["mcnemar_p"])])
    blocks.append(Table(["model", "originals (strict)", "variants (strict)", "variants - originals, points [95%]",
                         "solved original, lost variant / the reverse", "McNemar p"], rows))
    blocks.append(Para(f"strict accuracy on the variants minus on their originals, points; 95% interval from "
                       f"{probe['bootstrap_resamples']:,} bootstrap resamples of the original problems (a problem's "
                       "variants stay together); exact McNemar test over (original, variant) pairs."))
    blocks.append(Bullets([f"{name}: {probe_verdict_text(kind, m)}." for name, m in k["models"].items()]))
    tb = k.get("tuned_minus_base")
    if tb:
        blocks.append(Para(f"Tuned minus base, points [95% paired bootstrap]: on the originals "
                           f"{_points(tb['originals'])}, on the variants {_points(tb['variants'])}."))
    if entry and entry.figure and entry.figure in figures:
        blocks.append(Figure(entry.figure, "strict accuracy on the original problems and on their variants, 95% Wilson"))
    return blocks


def renamed_people_blocks(analysis: Analysis, figures: set[str]) -> list:
    """The names probe, which the report puts beside the contamination check."""
    probe = analysis.probe
    if not probe.get("available"):
        return []
    return [b for kind in probe.get("kinds", {}) if _beside_contamination(kind) for b in _probe(kind, probe, figures)]


def _beside_contamination(kind: str) -> bool:
    entry = PROBE_KIND_TABLE.find(kind)
    return bool(entry and entry.beside_contamination)


def _self_check(check: dict) -> list:
    blocks: list = [Heading(2, "Self-check turn")]
    blocks.append(Para("After its first answer the model was asked, in the same conversation, to check its work and "
                       "restate the final answer; the benchmark scores the final turn. Fixed: strictly wrong after "
                       "the first turn, strictly right after the check. Broken: strictly right after the first turn, "
                       "strictly wrong after the check. Net: final-turn minus first-turn strict accuracy, points, "
                       f"with a paired bootstrap 95% interval ({check['bootstrap_resamples']:,} resamples of the "
                       "problems)."))
    rows = [[name, _acc(m["first_turn"]), _acc(m["final_turn"]), str(m["fixed"]), str(m["broken"]),
             str(m["answer_changed"]), _points(m["net_change"]), p_value_text(m["mcnemar_p"])]
            for name, m in check["models"].items()]
    blocks.append(Table(["model", "first turn", "final turn", "fixed", "broken", "answer changed",
                         "net, points [95%]", "McNemar p"], rows))
    blocks.append(Bullets([f"{name}: {m['verdict']}" for name, m in check["models"].items()]))
    return blocks


def _regression(reg: dict) -> list:
    blocks: list = [Heading(2, "General benchmarks: what the fine-tune cost elsewhere")]
    blocks.append(Para(f"Scored by lm-evaluation-harness {show(reg['lm_eval_version'])} on the models in memory. "
                       "Metric: lm-eval's acc: the choice of highest log-likelihood is the gold one. Difference: tuned "
                       "minus base, points, paired on the same documents; 95% interval from "
                       f"{reg['bootstrap_resamples']:,} bootstrap resamples; exact McNemar test."))
    rows = []
    for name, tasks in reg["models"].items():
        for task, t in tasks.items():
            rows.append([name, task, f"{t['metric']} {_acc(t)}", ", ".join(str(v) for v in t.get("n_shot") or []) or "n/a",
                         str(len(t.get("subtasks") or [])), show(t.get("data"))])
    blocks.append(Table(["model", "task", "accuracy [95% Wilson]", "shots", "lm-eval tasks", "data"], rows))
    if reg.get("paired"):
        blocks.append(Table(["task", "documents", "tuned - base, points [95%]", "improved", "regressed", "McNemar p"],
                            [[task, str(p["n"]), _points(p["difference"]), str(p["improved"]), str(p["regressed"]),
                              p_value_text(p["mcnemar_p"])] for task, p in reg["paired"].items()]))
        blocks.append(Bullets(regression_verdict_texts(reg)))
    return blocks


def followup_blocks(analysis: Analysis, figures: set[str]) -> list:
    blocks: list = []
    if analysis.regression.get("available"):
        blocks += _regression(analysis.regression)
    if analysis.self_consistency.get("available"):
        blocks += _self_consistency(analysis.self_consistency, figures)
    probe = analysis.probe
    if probe.get("available"):
        for kind in probe.get("kinds", {}):
            if not _beside_contamination(kind):  # beside the contamination check: renamed_people_blocks
                blocks += _probe(kind, probe, figures)
    if analysis.self_check.get("available"):
        blocks += _self_check(analysis.self_check)
    return blocks


def followup_figures(analysis: Analysis) -> dict[str, bytes]:
    plt = pyplot()
    out: dict[str, bytes] = {}
    sc = analysis.self_consistency
    if sc.get("available"):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, m in sc["models"].items():
            ks = [row["k"] for row in m["strict"]]
            for key, style in (("maj", "o-"), ("pass", "s--")):
                values = [row[key]["accuracy_pct"] for row in m["strict"]]
                ax.errorbar(ks, values, yerr=error_bars(values, [row[key]["ci95_pct"] for row in m["strict"]]),
                            fmt=style, capsize=3, label=f"{name} {key}@k")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="samples k", ylabel="strict exact match %", ylim=(0, 100), title="Self-consistency")
        ax.legend()
        out["self_consistency.png"] = figure_bytes(fig)
    kinds = analysis.probe.get("kinds", {})
    figured = [(entry.figure, kinds[name]) for name in kinds if (entry := PROBE_KIND_TABLE.find(name)) and entry.figure]
    figure, probe = figured[0] if figured else (None, {})
    if probe.get("models"):
        models = list(probe["models"])
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / 2
        for i, key in enumerate(("original", "variant")):
            values = [probe["models"][m][key]["accuracy_pct"] for m in models]
            ax.bar([j + i * width for j in range(len(models))], [v or 0 for v in values], width,
                   yerr=error_bars(values, [probe["models"][m][key]["ci95_pct"] for m in models]), capsize=4,
                   label="originals" if key == "original" else "variants")
        ax.set_xticks([j + width / 2 for j in range(len(models))], models)
        ax.set(ylabel="strict exact match %", ylim=(0, 100), title="Original problems vs changed numbers")
        ax.legend()
        out[figure] = figure_bytes(fig)
    return out
