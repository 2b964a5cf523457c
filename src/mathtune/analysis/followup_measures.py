"""The analysis of the follow-ups, each read from the run folder's records: self-consistency
curves, the self-check turn's effect, the robustness probe's gap, and the general benchmarks'
regression check. Each returns its part of analysis.json, with "available": false and the
reason where the run did not ask for it.

    self_consistency(run_dir, records_by_model) -> "self_consistency"
    self_check(records_by_model)                -> "self_check"
    probe_analysis(run_dir, records_by_model)   -> "probe"
    regression_analysis(run_dir)                -> "regression"

Self-consistency: for every evaluation run with `samples: K` (K >= 2), maj@k and pass@k at
k = 1, 2, 4, ... K from the first k samples of each problem, each with its Wilson interval;
where the folder also holds a greedy evaluation of the same model, adapter and data, how often
the K-sample vote disagrees with the greedy answer. Self-check: for every evaluation with
`prompt: chat-verify`, answers fixed and broken by the second turn, paired on the problem.
Probe: accuracy on the variants (task.variants) against their originals, the gap with an
interval that resamples original problems. Regression: lm-eval's per-document verdicts of base
and tuned, paired on the same documents.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mathtune.core.runfiles import iter_jsonl, read_jsonl
from mathtune.core.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, difference_points, mcnemar_exact,
                                 paired_bootstrap_difference, paired_counts)
from mathtune.core.stats import wilson_share as share
from mathtune.evaluation.metrics import check_turn_effect, curve, same_answer
from mathtune.evaluation.extra_summary import read_extra_summary
from mathtune.evaluation.regression import EXTRA_FOLDER
from mathtune.core.record_json import to_json
from mathtune.evaluation.summary import EvalSummary, eval_summary_if_any
from mathtune.task.probe_audit import hand_audit
from mathtune.task.probe_summary import ProbeSummary, probe_summary_if_any
from mathtune.task.variants import PROBE_FOLDER, PROBE_SUFFIX

TOP_P = 1.0  # the engine samples from the whole softmax at the temperature: no nucleus cut


def _summary(run_dir: Path, name: str) -> EvalSummary | None:
    return eval_summary_if_any(run_dir / "eval" / f"{name}.summary.json")


def _greedy_partner(run_dir: Path, name: str, summaries: dict[str, EvalSummary | None],
                    records_by_model: dict) -> str | None:
    """A greedy evaluation in the folder of the same model, adapter and data as `name`."""
    mine = summaries[name]
    for other, s in summaries.items():
        if other == name or other not in records_by_model:
            continue
        if _setting(s, "samples", 1) == 1 and _setting(s, "temperature", 0) == 0 and all(
                _setting(s, key) == _setting(mine, key) for key in ("model", "adapter", "data", "split", "prompt")):
            return other
    return None


def _setting(summary: EvalSummary | None, key: str, default=None):
    """A setting of an evaluation's summary; `default` where the evaluation has none."""
    return getattr(summary, key) if summary is not None else default


def self_consistency(run_dir: Path, records_by_model: dict[str, list[dict]]) -> dict:
    run_dir = Path(run_dir)
    sampled = {name: recs for name, recs in records_by_model.items()
               if recs and all(len(r.get("samples") or []) >= 2 for r in recs)}
    if not sampled:
        return {"available": False, "reason": "no evaluation here drew several samples per problem "
                                              "(set eval.samples: K, or mathtune eval --samples K)"}
    summaries = {name: _summary(run_dir, name) for name in records_by_model}
    models = {}
    for name, records in sampled.items():
        s = summaries[name]
        entry = {
            "samples": min(len(r["samples"]) for r in records),
            "n": len(records),
            "sampling": {"temperature": _setting(s, "temperature"), "top_p": TOP_P, "seed": _setting(s, "seed"),
                         "max_new_tokens": _setting(s, "max_new_tokens")},
            "strict": curve(records, "strict"),
            "flexible": curve(records, "flexible"),
        }
        partner = _greedy_partner(run_dir, name, summaries, records_by_model)
        if partner:
            greedy = {r["id"]: r for r in records_by_model[partner]}
            common = [r for r in records if r["id"] in greedy]
            differ = sum(not same_answer(r["pred_strict"], greedy[r["id"]]["pred_strict"]) for r in common)
            greedy_right = sum(bool(greedy[r["id"]]["correct_strict"]) for r in common)
            vote_right = sum(bool(r["correct_strict"]) for r in common)
            entry["greedy"] = {"records": partner, "n": len(common), "vote_differs": differ,
                               "vote_differs_pct": round(100 * differ / len(common), 1) if common else None,
                               "greedy": share(greedy_right, len(common)), "vote": share(vote_right, len(common))}
        models[name] = entry
    return {"available": True, "models": models}


def self_check(records_by_model: dict[str, list[dict]]) -> dict:
    checked = {name: recs for name, recs in records_by_model.items()
               if recs and all(isinstance(r.get("first_turn"), dict) for r in recs)}
    if not checked:
        return {"available": False, "reason": "no evaluation here used the chat-verify prompt "
                                              "(set eval.prompt: chat-verify, or mathtune eval --prompt chat-verify)"}
    return {"available": True, "models": {name: check_turn_effect(recs) for name, recs in checked.items()},
            "bootstrap_resamples": BOOTSTRAP_RESAMPLES}


def _read_variants(run_dir: Path) -> tuple[dict[str, dict[str, str]], ProbeSummary | None]:
    """{kind: {variant id: original id}} and the generator's summary, per kind."""
    folder = run_dir / PROBE_FOLDER
    mapping: dict[str, dict[str, str]] = {}
    if (folder / "test.jsonl").is_file():
        for _, row in iter_jsonl(folder / "test.jsonl"):
            mapping.setdefault(str(row["kind"]), {})[str(row["id"])] = str(row["original_id"])
    return mapping, probe_summary_if_any(folder / "summary.json")


def _cluster_bootstrap(original: list[bool], variant_means: list[float]) -> tuple[float, float, float]:
    """(mean variant accuracy - mean original accuracy, 95% interval), resampling the original
    problems: a problem's variants move together, as they share its wording."""
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(variant_means, dtype=np.float64)
    per = b - a
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, len(per), size=(BOOTSTRAP_RESAMPLES, len(per)))
    means = per[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(per.mean()), float(lo), float(hi)


def model_gap(originals: list[dict], variants: list[dict], mapping: dict[str, str]) -> dict | None:
    by_original: dict[str, list[bool]] = {}
    for r in variants:
        if r["id"] in mapping:
            by_original.setdefault(mapping[r["id"]], []).append(bool(r["correct_strict"]))
    pairs = [(bool(o["correct_strict"]), by_original[o["id"]]) for o in originals if o["id"] in by_original]
    if not pairs:
        return None
    orig = [a for a, _ in pairs]
    means = [sum(v) / len(v) for _, v in pairs]
    flat_orig = [a for a, vs in pairs for _ in vs]
    flat_var = [x for _, vs in pairs for x in vs]
    lost = sum(a and not b for a, b in zip(flat_orig, flat_var))
    gained = sum(b and not a for a, b in zip(flat_orig, flat_var))
    diff, lo, hi = _cluster_bootstrap(orig, means)
    gap = difference_points(diff, lo, hi)
    verdict = "lower on variants" if hi < 0 else "higher on variants" if lo > 0 else "no difference shown"
    return {"problems": len(pairs), "variants": len(flat_var), "original": share(sum(orig), len(orig)),
            "variant": share(sum(flat_var), len(flat_var)), "gap": gap,
            "pairs": {"solved_original_lost_variant": lost, "failed_original_solved_variant": gained},
            "mcnemar_p": round(mcnemar_exact(gained, lost), 4), "verdict": verdict,
            "_per_problem": {o["id"]: (bool(o["correct_strict"]), by_original[o["id"]])
                             for o in originals if o["id"] in by_original}}


def probe_analysis(run_dir: Path, records_by_model: dict[str, list[dict]]) -> dict:
    run_dir = Path(run_dir)
    mapping, summary = _read_variants(run_dir)
    pairs = {name: name + PROBE_SUFFIX for name in records_by_model if name + PROBE_SUFFIX in records_by_model}
    if not mapping or not pairs:
        return {"available": False, "reason": "no robustness probe in this run (eval.probe: {variants: N}, or "
                                              "mathtune probe)"}
    kinds = {}
    for kind, kind_mapping in mapping.items():
        models = {}
        for name, probe_name in pairs.items():
            gap = model_gap(records_by_model[name], records_by_model[probe_name], kind_mapping)
            if gap is not None:
                models[name] = gap
        if models:
            kinds[kind] = {"generator": summary.by_kind.get(kind, {}) if summary else {}, "models": models,
                           "hand_audit": hand_audit(kind, summary.rules_version if summary else None),
                           **_tuned_minus_base(models)}
    generator = {k: v for k, v in to_json(summary).items() if k != "by_kind"} if summary else {}
    out = {"available": bool(kinds), "generator": generator,
           "kinds": kinds, "bootstrap_resamples": BOOTSTRAP_RESAMPLES}
    return out


def _tuned_minus_base(models: dict) -> dict:
    """{"tuned_minus_base": ...} where both models ran on the variants; the per-problem
    verdicts the gaps kept are dropped here."""
    out = {}
    if "base" in models and "tuned" in models:
        common = sorted(set(models["base"]["_per_problem"]) & set(models["tuned"]["_per_problem"]))
        b, t = models["base"]["_per_problem"], models["tuned"]["_per_problem"]
        on_orig = paired_bootstrap_difference([b[i][0] for i in common], [t[i][0] for i in common])
        flat_b = [x for i in common for x in b[i][1]]
        flat_t = [x for i in common for x in t[i][1]]
        on_var = paired_bootstrap_difference(flat_b, flat_t) \
            if len(flat_b) == len(flat_t) else None
        out["tuned_minus_base"] = {"originals": difference_points(*on_orig), "variants": difference_points(*on_var) if on_var else None}
    for m in models.values():
        m.pop("_per_problem")
    return out


def regression_analysis(run_dir: Path) -> dict:
    folder = Path(run_dir) / EXTRA_FOLDER
    summaries = {p.name.removesuffix(".summary.json"): read_extra_summary(p)
                 for p in sorted(folder.glob("*.summary.json"))} if folder.is_dir() else {}
    if not summaries:
        return {"available": False, "reason": "no general benchmarks in this run (eval.extra: [mmlu, ...])"}
    records = {name: read_jsonl(folder / f"{name}.jsonl") for name in summaries}
    out = {"available": True, "models": {n: to_json(s.tasks) for n, s in summaries.items()},
           "lm_eval_version": next(iter(summaries.values())).lm_eval_version,
           "bootstrap_resamples": BOOTSTRAP_RESAMPLES}
    if "base" in summaries and "tuned" in summaries:
        paired = {}
        for task in summaries["base"].tasks:
            b = {(r["subtask"], r["doc_id"]): r["correct"] for r in records["base"] if r["task"] == task}
            t = {(r["subtask"], r["doc_id"]): r["correct"] for r in records["tuned"] if r["task"] == task}
            keys = sorted(set(b) & set(t))
            if not keys:
                continue
            before, after = [b[k] for k in keys], [t[k] for k in keys]
            diff, lo, hi = paired_bootstrap_difference(before, after)
            counts = paired_counts(before, after)
            d = difference_points(diff, lo, hi)
            paired[task] = {"n": len(keys), "difference": d, "improved": counts["improved"],
                            "regressed": counts["regressed"],
                            "mcnemar_p": round(mcnemar_exact(counts["improved"], counts["regressed"]), 4),
                            "verdict": "lower" if hi < 0 else "higher" if lo > 0 else "no difference shown"}
        out["paired"] = paired
    return out
