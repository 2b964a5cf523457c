"""The contamination check: how much of each test question's wording occurs in the training
questions (the main source's train split and every data.mix source).

    analyze_contamination(config, records_by_model) -> the "contamination" part of analysis.json
"""

from __future__ import annotations

import re
from typing import Any

from mathtune.analysis.common import pct
from mathtune.config import Config
from mathtune.core.errors import MathtuneError
from mathtune.task.data import DataFormat, load_split
from mathtune.task.mix import load_mix_source

NGRAM = 13


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(train_questions: list[str], test_questions: list[str], n: int = NGRAM) -> dict[str, Any]:
    """Per test question, the share of its n-grams that also occur in some training question."""
    train_grams: set[tuple[str, ...]] = set()
    for q in train_questions:
        train_grams |= ngrams(q, n)
    shares = []
    for q in test_questions:
        grams = ngrams(q, n)
        shares.append(len(grams & train_grams) / len(grams) if grams else 0.0)
    with_any = sum(1 for s in shares if s > 0)
    half = sum(1 for s in shares if s >= 0.5)
    bins = [0, 0.0001, 0.25, 0.5, 0.75, 1.0001]
    labels = ["0%", "(0, 25%)", "[25, 50%)", "[50, 75%)", "[75, 100%]"]
    histogram = [sum(1 for s in shares if lo <= s < hi) for lo, hi in zip(bins, bins[1:])]
    return {
        "n": n,
        "train_questions": len(train_questions),
        "test_questions": len(test_questions),
        "test_questions_with_any_overlap": with_any,
        "test_questions_with_any_overlap_pct": pct(with_any / len(shares)) if shares else None,
        "test_questions_half_overlapping": half,
        "test_questions_half_overlapping_pct": pct(half / len(shares)) if shares else None,
        "histogram_labels": labels,
        "histogram_counts": histogram,
    }


def analyze_contamination(config: Config | None, records_by_model: dict[str, list[dict]]) -> dict[str, Any]:
    test_questions = sorted({r["question"] for rs in records_by_model.values() for r in rs if r.get("question")})
    if not test_questions:
        return {"available": False, "reason": "no test questions in eval/*.jsonl"}
    if config is None:
        return {"available": False, "reason": "no config.yaml, so the training data source is unknown"}
    try:
        train = load_split(config.data.source, "train", val_fraction=config.data.val_fraction, seed=config.seed,
                           fmt=DataFormat.of(config.data))
    except MathtuneError as err:
        return {"available": False, "reason": f"training questions not reachable: {err}"}
    # data.train_limit 0 trains on the mix alone: the main source gives validation problems only
    sources = [] if config.data.train_limit == 0 else [(config.data.source, [p.question for p in train])]
    for i, entry in enumerate(config.data.mix):  # every training source, each on its own
        if entry.weight > 0:
            try:
                sources.append((entry.source, [p.question for p in load_mix_source(entry, i)]))
            except MathtuneError as err:
                return {"available": False, "reason": f"training questions of {entry.source} not reachable: {err}"}
    result = ngram_overlap([q for _, qs in sources for q in qs], test_questions)
    per_source = [{"source": source, **{k: v for k, v in ngram_overlap(qs, test_questions).items()
                                        if not k.startswith("histogram")}} for source, qs in sources]
    return {
        "available": True,
        "source": config.data.source,
        **result,
        "per_source": per_source,
    }
