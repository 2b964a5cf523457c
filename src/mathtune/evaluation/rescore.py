"""`mathtune score`: re-score completions produced anywhere, including the per-sample file of
lm-evaluation-harness (`lm_eval --log_samples`).

    mathtune score completions.jsonl [--out scored.jsonl]
    mathtune score OUT/MODEL/samples_gsm8k_<date>.jsonl [--out scored.jsonl]

lm-eval writes one line per (document, filter): a task with the filters `strict-match` and
`flexible-extract` (gsm8k) gives two lines per problem, with the same raw generation in
`resps` and that filter's extraction in `filtered_resps`. Fields of a line (lm-eval 0.4.x,
`evaluator.evaluate` and `EvaluationTracker.save_results_samples`):

    doc_id            index of the problem in the task's split
    doc               the dataset row (gsm8k: `question`, `answer` ending in `#### N`)
    target            the gold as a string (gsm8k: the whole `answer`)
    arguments         the prompt and generation arguments
    resps             per request, the list of raw generations (as strings)
    filtered_resps    per request, what the filter extracted (`[invalid]` when nothing)
    filter            the filter's name
    metrics           names of the per-sample metric fields on this line, e.g. exact_match
    <metric>          that metric's value for this line, e.g. "exact_match": 1.0
    doc_hash, prompt_hash, target_hash

mathtune scores each problem's raw generation once, with its own extractors, and writes its
usual scored records; the summary adds, per lm-eval filter, the mean of each per-sample
metric and the number of problems on which lm-eval's verdict and mathtune's differ
(`strict-match` is set against mathtune's strict answer, `flexible-extract` against the
flexible one).
"""

from __future__ import annotations

import math
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import iter_jsonl, write_jsonl_atomic
from mathtune.evaluation.metrics import accuracy_figures
from mathtune.task.score import extract_gold, opens_think, score_completion, think_unclosed

# Keys every line of a --log_samples file carries (the hashes and `arguments` are not needed).
_REQUIRED = ("doc_id", "doc", "target", "resps", "filtered_resps", "filter", "metrics")


def _is_lmeval_line(row) -> bool:
    return isinstance(row, dict) and {"doc_id", "resps", "filter"} <= row.keys()


def _is_completion_line(row) -> bool:
    return isinstance(row, dict) and "completion" in row and "answer" in row


def _extractor_for(filter_name: str) -> str | None:
    """Which of mathtune's answers an lm-eval filter is set against, by its name."""
    name = filter_name.lower()
    if "strict" in name:
        return "strict"
    if "flex" in name:
        return "flexible"
    return None


def _completion(where: str, resps) -> str:
    """The one raw generation of a line: `resps` is [[text]] for a generate_until task."""
    if isinstance(resps, list) and len(resps) == 1:
        inner = resps[0]
        if isinstance(inner, str):
            return inner
        if isinstance(inner, list) and len(inner) == 1 and isinstance(inner[0], str):
            return inner[0]
        if isinstance(inner, list) and len(inner) > 1:
            raise MathtuneError(f"{where}: {len(inner)} generations for one problem (repeats > 1); "
                                "mathtune score reads one generation per problem")
    raise MathtuneError(f"{where}: 'resps' is not one generated text ([[text]]); "
                        "only generate_until tasks such as gsm8k can be scored")


def _gold(where: str, row: dict) -> tuple[str, str]:
    """(gold text as written, normalized gold number): lm-eval's `target`, else doc['answer']."""
    candidates = [row.get("target")]
    if isinstance(row.get("doc"), dict):
        candidates.append(row["doc"].get("answer"))
    for text in candidates:
        if text is None:
            continue
        try:
            return str(text), extract_gold(str(text))
        except ValueError:
            continue
    raise MathtuneError(f"{where}: 'target' is neither a number nor a solution ending in '#### N'")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _read(path: Path) -> tuple[list[dict], list[str]]:
    """One record per problem (in doc_id order) and the filters in file order."""
    problems: dict[int, dict] = {}
    filters: list[str] = []
    for where, row in iter_jsonl(path):
        if not _is_lmeval_line(row):
            raise MathtuneError(f"{where}: not an lm-evaluation-harness sample line "
                                f"(needs {', '.join(repr(k) for k in _REQUIRED)})")
        missing = [k for k in _REQUIRED if k not in row]
        if missing:
            raise MathtuneError(f"{where}: lm-eval sample line lacks {', '.join(repr(k) for k in missing)}")
        doc_id, filter_name = row["doc_id"], row["filter"]
        if not isinstance(doc_id, int) or isinstance(doc_id, bool) or not isinstance(filter_name, str):
            raise MathtuneError(f"{where}: 'doc_id' must be an integer and 'filter' a string")
        if not isinstance(row["metrics"], list):
            raise MathtuneError(f"{where}: 'metrics' must be a list of metric names")
        completion = _completion(where, row["resps"])
        answer, gold = _gold(where, row)
        if filter_name not in filters:
            filters.append(filter_name)
        record = problems.get(doc_id)
        if record is None:
            doc = row["doc"] if isinstance(row["doc"], dict) else {}
            record = problems[doc_id] = {
                "id": doc_id,
                "question": doc.get("question"),
                "answer": answer,
                "gold": gold,
                "completion": completion,
                "lm_eval": {},
            }
        elif record["completion"] != completion or record["gold"] != gold:
            raise MathtuneError(f"{where}: doc_id {doc_id} has another generation or gold than on an "
                                "earlier line (several runs in one file?)")
        if filter_name in record["lm_eval"]:
            raise MathtuneError(f"{where}: doc_id {doc_id} appears twice for filter {filter_name!r} "
                                "(several runs in one file?)")
        filtered = row["filtered_resps"]
        record["lm_eval"][filter_name] = {
            "extracted": filtered[0] if isinstance(filtered, list) and len(filtered) == 1 else filtered,
            **{m: row.get(m) for m in row["metrics"] if isinstance(m, str)},
        }
    return [problems[k] for k in sorted(problems)], filters


def _lmeval_figures(records: list[dict], filters: list[str]) -> dict:
    """Per filter: the mean of each numeric per-sample metric and, for 0/1 metrics of a
    filter that pairs with one of mathtune's answers, the problems judged differently."""
    figures: dict[str, dict] = {}
    for filter_name in filters:
        lines = [(r, r["lm_eval"][filter_name]) for r in records if filter_name in r["lm_eval"]]
        extractor = _extractor_for(filter_name)
        entry: dict = {"n": len(lines), "compared_with": extractor}
        names = [m for m in dict.fromkeys(k for _, d in lines for k in d) if m != "extracted"]
        for metric in names:
            values = [_number(d.get(metric)) for _, d in lines]
            if not values or any(v is None for v in values):
                continue  # a metric that is not a number on every line has no mean
            entry[metric] = sum(values) / len(values)
            if extractor is not None and all(v in (0.0, 1.0) for v in values):
                differ = [r["id"] for (r, _), v in zip(lines, values)
                          if bool(v) != r[f"correct_{extractor}"]]
                entry[f"{metric}_differ"] = len(differ)
                entry[f"{metric}_differ_ids"] = differ
        figures[filter_name] = entry
    return figures


def score_lmeval_samples(path: Path, out: Path | None = None) -> dict | None:
    """Score an lm-eval `--log_samples` JSONL the way `mathtune score` scores completions and
    print the JSON summary line, with lm-eval's own figures under 'lm_eval'. Returns None,
    having read only the first line, when the file is a mathtune completions file (or
    empty): the caller scores it then. A file that is neither is a one-line error."""
    lines = iter_jsonl(path)
    try:
        first = next(lines, None)
    finally:
        lines.close()
    if first is None or _is_completion_line(first[1]):
        return None
    where, row = first
    if not _is_lmeval_line(row):
        raise MathtuneError(f"{where}: neither a completions line ('completion' and 'answer') nor an "
                            "lm-evaluation-harness --log_samples line ('doc_id', 'resps', 'filter')")
    records, filters = _read(path)
    for record in records:
        # mathtune's four fields, placed before lm-eval's verdicts so a record reads in order.
        lm_eval = record.pop("lm_eval")
        record.update(score_completion(record["completion"], record["gold"]))
        record["lm_eval"] = lm_eval
    written = write_scored(path, out, records)
    return {"format": "lm-eval samples", **accuracy_figures(records), "lm_eval": _lmeval_figures(records, filters),
            "out": str(written)}


def write_scored(path: Path, out: Path | None, rows: list[dict]) -> Path:
    """`mathtune score`'s scored lines: to `out`, by default FILE.scored.jsonl beside FILE."""
    out = out or path.with_name(path.stem + ".scored.jsonl")
    write_jsonl_atomic(out, rows)
    return out


def score_file(path: Path, out: Path | None = None) -> dict:
    """`mathtune score`: add pred_strict, pred_flexible, correct_strict, correct_flexible to
    every line of a JSONL of completions (or an lm-eval samples file), write them to `out`
    (default FILE.scored.jsonl) and return the summary."""
    if not path.is_file():
        raise MathtuneError(f"file not found: {path}")
    lmeval_summary = score_lmeval_samples(path, out)  # None unless an lm-eval --log_samples file
    if lmeval_summary is not None:
        return lmeval_summary
    rows = []
    for where, row in iter_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("completion"), str) or "answer" not in row:
            raise MathtuneError(f"{where}: each line needs a string 'completion' and an 'answer'")
        try:
            gold = extract_gold(str(row["answer"]))
        except ValueError:
            raise MathtuneError(f"{where}: 'answer' is neither a number nor a solution ending in '#### N'") from None
        # A completion of a prompt that opened a think block starts inside it (task.score).
        opened = isinstance(row.get("prompt"), str) and opens_think(row["prompt"])
        row.update(score_completion(row["completion"], gold, thinking_open=opened))
        if think_unclosed(row["completion"], thinking_open=opened):
            row["truncated"] = True  # out of tokens while thinking: no answer, counted as truncated
        rows.append(row)
    if not rows:
        raise MathtuneError(f"{path}: no lines to score")
    unclosed = sum(think_unclosed(r["completion"], thinking_open=isinstance(r.get("prompt"), str)
                                  and opens_think(r["prompt"])) for r in rows)
    return {**accuracy_figures(rows), "unclosed_think": unclosed, "out": str(write_scored(path, out, rows))}
