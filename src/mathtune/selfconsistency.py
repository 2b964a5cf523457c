"""Self-consistency curves from the samples an evaluation recorded.

    self_consistency(run_dir, records_by_model) -> the "self_consistency" part of analysis.json

For every evaluation run with `samples: K` (K >= 2), at k = 1, 2, 4, ... up to K, taking the
first k samples of each problem in the order they were drawn:
- maj@k: the majority answer of the k samples (ties to the answer drawn first) is right;
- pass@k: at least one of the k samples is right, the ceiling a perfect verifier could reach.
Each with its Wilson interval. Where the folder also holds a greedy evaluation of the same
model, adapter and data, how often the K-sample vote disagrees with the greedy answer.

Written here rather than taken from lm-evaluation-harness: its `maj@k` filter scores one k
per task run, and neither it nor TRL computes pass@k beside maj@k from one set of samples.
"""

from __future__ import annotations

import json
from pathlib import Path

from mathtune.score import majority_vote, numbers_equal
from mathtune.stats import wilson_share as share

TOP_P = 1.0  # the engine samples from the whole softmax at the temperature: no nucleus cut


def ks_for(samples: int) -> list[int]:
    """1, 2, 4, ... up to samples, and samples itself."""
    ks, k = [], 1
    while k < samples:
        ks.append(k)
        k *= 2
    return ks + [samples]


def _summary(run_dir: Path, name: str) -> dict:
    path = run_dir / "eval" / f"{name}.summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except ValueError:
        return {}


def same_answer(a: str | None, b: str | None) -> bool:
    """Two extracted answers agree: both absent, or the same number."""
    if a is None or b is None:
        return a is None and b is None
    return numbers_equal(a, b)


def curve(records: list[dict], kind: str = "strict") -> list[dict]:
    """maj@k and pass@k rows for records that each carry the same number of samples."""
    K = min(len(r["samples"]) for r in records)
    rows = []
    for k in ks_for(K):
        maj = sum(numbers_equal(majority_vote([s[f"pred_{kind}"] for s in r["samples"][:k]]), r["gold"])
                  for r in records)
        any_right = sum(any(s[f"correct_{kind}"] for s in r["samples"][:k]) for r in records)
        rows.append({"k": k, "maj": share(maj, len(records)), "pass": share(any_right, len(records))})
    return rows


def _greedy_partner(run_dir: Path, name: str, summaries: dict[str, dict], records_by_model: dict) -> str | None:
    """A greedy evaluation in the folder of the same model, adapter and data as `name`."""
    mine = summaries[name]
    for other, s in summaries.items():
        if other == name or other not in records_by_model:
            continue
        if s.get("samples", 1) == 1 and s.get("temperature", 0) == 0 and all(
                s.get(key) == mine.get(key) for key in ("model", "adapter", "data", "split", "prompt")):
            return other
    return None


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
            "sampling": {"temperature": s.get("temperature"), "top_p": TOP_P, "seed": s.get("seed"),
                         "max_new_tokens": s.get("max_new_tokens")},
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
    return {"available": True, "models": models,
            "definitions": {
                "maj@k": "the most common strict answer among a problem's first k samples (ties: the one drawn "
                         "first) equals the gold answer",
                "pass@k": "at least one of the first k samples is strictly right: what a perfect verifier "
                          "choosing among them would reach",
                "interval": "95% Wilson score interval over problems"}}
