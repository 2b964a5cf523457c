"""The files of one evaluation, and the records and summary written into them.

    paths = EvalPaths.for_name(out_dir, "base")   # eval/base.jsonl, .summary.json, .partial.jsonl
    record = build_record(problem, prompt, generations)
    summary = summarize(records, request, timing=session_timing(timed), ...)

While an evaluation runs, each finished problem is appended to NAME.partial.jsonl (one file per
process under torchrun), marked with when it was written (TIMING); NAME.jsonl and
NAME.summary.json appear only when every problem is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.finished import finished_stage
from mathtune.core.runfiles import read_json, repair_jsonl, write_json_atomic
from mathtune.core.terminal import say
from mathtune.evaluation.metrics import accuracy_figures
from mathtune.evaluation.request import EvalRequest, protocol_text
from mathtune.evaluation.summary import DecodingSession, EvalSummary, read_eval_summary
from mathtune.models.generate import Generation
from mathtune.task.data import Problem
from mathtune.task.score import majority_vote, numbers_equal, opens_think, score_completion, think_unclosed
from mathtune.task.taxonomy import classify_error

# How a refused evaluation of `mathtune eval` may go on.
EVAL_ADVICE = "use --name for a record of its own, or --overwrite to replace it"


def build_record(problem: Problem, prompt: str, generations: list[Generation],
                 first_turn: Generation | None = None, final_prompt: str | None = None) -> dict:
    """One scored line of eval/NAME.jsonl. With several samples the answer is the majority
    vote; every sample is kept under 'samples'. With a first turn (chat-verify) the record is
    scored on the final turn, whose exact prompt is kept under 'final_turn_prompt', and the
    first is kept, scored, under 'first_turn'. A completion whose think block never closes has
    no answer (task.score) and counts as truncated."""
    opened = opens_think(final_prompt if final_prompt is not None else prompt)
    scored = [_scored(g, problem.gold, opened) for g in generations]
    record = {"id": problem.id, "question": problem.question, "answer": problem.answer, "gold": problem.gold,
              "prompt": prompt}
    if len(generations) == 1:
        record.update(scored[0])
    else:
        vote_strict = majority_vote([s["pred_strict"] for s in scored])
        vote_flexible = majority_vote([s["pred_flexible"] for s in scored])
        # The shown completion is one that produced the voted answer.
        shown = next((i for i, s in enumerate(scored) if vote_strict is not None and s["pred_strict"] == vote_strict),
                     next((i for i, s in enumerate(scored) if s["pred_flexible"] == vote_flexible), 0))
        voted = {"pred_strict": vote_strict, "pred_flexible": vote_flexible,
                 "correct_strict": numbers_equal(vote_strict, problem.gold),
                 "correct_flexible": numbers_equal(vote_flexible, problem.gold)}
        record.update(completion=scored[shown]["completion"], **voted,
                      num_generated_tokens=sum(g.num_generated_tokens for g in generations),
                      truncated=scored[shown]["truncated"])
        record["samples"] = scored
    if final_prompt is not None:
        record["final_turn_prompt"] = final_prompt
    if first_turn is not None:
        record["first_turn"] = _scored(first_turn, problem.gold, opens_think(prompt))
        record["num_generated_tokens"] += first_turn.num_generated_tokens  # both turns were generated
    record["error_category"] = classify_error(record)
    return record


def _scored(generation: Generation, gold: str, thinking_open: bool) -> dict:
    """One generation's completion, its four scored fields, its length, and whether it ran out:
    at max_new_tokens, or inside a think block that never closed."""
    text = generation.completion
    return {"completion": text, **score_completion(text, gold, thinking_open=thinking_open),
            "num_generated_tokens": generation.num_generated_tokens,
            "truncated": generation.truncated or think_unclosed(text, thinking_open=thinking_open)}


# Each record in a partial file carries when it was written: (session id, process rank,
# seconds since that session's decoding began). The merged records drop it; the summary keeps
# the per-session totals, so a resumed evaluation's speed counts only the work it timed.
TIMING = "_timing"


def session_timing(records: list[dict]) -> dict:
    """Problems, tokens and wall time of each decoding session found in the records, and the
    rates over the timed work only (EvalSummary's timing fields). A session's wall time is its
    slowest process's last record."""
    sessions: dict[str, dict] = {}
    for r in records:
        mark = r.get(TIMING)
        if mark is None:
            continue
        s = sessions.setdefault(mark["session"], {"started": mark["started"], "problems": 0,
                                                  "generated_tokens": 0, "ranks": {}})
        s["problems"] += 1
        s["generated_tokens"] += r["num_generated_tokens"]
        s["ranks"][mark["rank"]] = max(s["ranks"].get(mark["rank"], 0.0), mark["elapsed_s"])
    listed = [DecodingSession(started=s["started"], problems=s["problems"], generated_tokens=s["generated_tokens"],
                              wall_time_s=round(max(s["ranks"].values()), 3))
              for s in sorted(sessions.values(), key=lambda s: s["started"])]
    wall = sum(s.wall_time_s for s in listed)
    problems = sum(s.problems for s in listed)
    tokens = sum(s.generated_tokens for s in listed)
    return {"sessions": listed, "wall_time_s": round(wall, 3), "timed_problems": problems,
            "untimed_problems": len(records) - problems,
            "problems_per_s": problems / wall if wall > 0 else None,
            "tokens_per_s": tokens / wall if wall > 0 else None}


def summarize(records: list[dict], request: EvalRequest, *, timing: dict, batch_size: int,
              device: str, dtype: str, attention: str | None = None, home: Path | None = None) -> EvalSummary:
    n = len(records)
    tokens = sum(r["num_generated_tokens"] for r in records)
    identity = request.data_identity  # recorded at the door (evaluation.resolve)
    return EvalSummary(
        **accuracy_figures(records),
        correct_strict=sum(r["correct_strict"] for r in records),
        correct_flexible=sum(r["correct_flexible"] for r in records),
        generated_tokens=tokens,
        truncated=sum(r["truncated"] for r in records),
        **timing,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        attention=attention,
        protocol=protocol_text(request, n, identity["name"]),
        **request.summary_identity(home),
        data_name=identity["name"],
        data_identity=identity,
    )


@dataclass(frozen=True)
class EvalPaths:
    records: Path
    summary: Path
    partial: Path
    partial_meta: Path

    @classmethod
    def for_name(cls, out_dir: Path, name: str) -> "EvalPaths":
        return cls.in_folder(Path(out_dir) / "eval", name)

    @classmethod
    def in_folder(cls, folder: Path, name: str) -> "EvalPaths":
        d = Path(folder)
        return cls(d / f"{name}.jsonl", d / f"{name}.summary.json", d / f"{name}.partial.jsonl",
                   d / f"{name}.partial.json")

    @property
    def home(self) -> Path:
        """The folder this evaluation writes into (OUT of OUT/eval/, a run folder): paths inside
        it are recorded relative to it (EvalRequest.identity)."""
        return self.records.parent.parent

    def partial_for_rank(self, rank: int) -> Path:
        """Each process of a sharded evaluation appends to a file of its own."""
        return self.partial.with_name(self.partial.name.removesuffix(".jsonl") + f".rank{rank}.jsonl")

    def partial_files(self) -> list[Path]:
        """The partial records of one process or of several (a resume may use another count)."""
        stem = self.partial.name.removesuffix(".jsonl")
        found = [self.partial] + sorted(self.partial.parent.glob(f"{stem}.rank*.jsonl"))
        return [f for f in found if f.is_file()]


def held_summary(paths: EvalPaths, *, say_torn: bool = True) -> dict | None:
    """The settings the evaluation finished under these paths was made with: its summary as the
    file holds it, else None (also for a summary cut short, which is said, when its records are
    there too, unless say_torn is off: a caller only looking ahead)."""
    if not paths.summary.is_file():
        return None
    try:
        return read_json(paths.summary)
    except MathtuneError as err:  # cut short (a power cut after its rename): the evaluation is made again
        if say_torn and paths.records.is_file():
            say(f"{err}: evaluated again")
        return None


def finished_evaluation(paths: EvalPaths, request: EvalRequest, *, overwrite: bool, where: str | None = None,
                        what: str = "a finished evaluation with other settings", advice: str = EVAL_ADVICE,
                        ignored: tuple[str, ...] = (), say_torn: bool = True,
                        replacing: Callable[[list[str]], None] | None = None) -> EvalSummary | None:
    """The summary of the evaluation finished under these paths with the request's settings
    (reused), else None: none there, cut short, or one of other settings that overwrite replaces.
    One of other settings (`ignored` aside) is refused unless overwrite (core.finished)."""
    held = held_summary(paths, say_torn=say_torn)

    def differs(summary: dict, req: EvalRequest) -> list[str]:
        return [k for k in req.differing_settings(summary, paths.home) if k not in ignored]

    done = finished_stage(held, request, where=where or str(paths.records), what=what, overwrite=overwrite,
                          advice=advice, differs=differs, replacing=replacing)
    if not (done and paths.records.is_file()):
        return None
    try:
        return read_eval_summary(paths.summary)
    except MathtuneError as err:  # not a summary of this version (a field missing): the evaluation is made again
        if say_torn:
            say(f"{err}: evaluated again")
        return None


def finished_summary(paths: EvalPaths, request: EvalRequest, *, say_torn: bool = True) -> EvalSummary | None:
    """Looking ahead: the summary of an already finished evaluation of the same request, else
    None. It refuses nothing: the evaluation itself does (evaluation.evaluate)."""
    return finished_evaluation(paths, request, overwrite=True, say_torn=say_torn)


def refuse_changed_prompts(resumed: dict[str, dict], prompts: dict[str, str], name: str, partial: Path) -> None:
    """A resume continues only records made from the very prompts it would render now: a
    changed chat template, or a template that wrote another day's date, refuses it."""
    changed = [pid for pid, record in resumed.items() if pid in prompts and record.get("prompt") != prompts[pid]]
    if changed:
        raise MathtuneError(f"eval/{name}: {len(changed)} of the {len(resumed)} records already in {partial} were "
                            f"made from other prompts than these settings render now (first: {changed[0]}): the "
                            "tokenizer's chat template, or the date it writes, has changed; use --overwrite to start "
                            "again")


def start_partial(paths: EvalPaths, ident: dict) -> None:
    """Open (or continue) the partial records of one evaluation; a folder this call made is
    removed again when the first write fails (a full disk, a read-only folder)."""
    made = [d for d in (paths.records.parent.parent, paths.records.parent) if not d.exists()]
    try:
        paths.records.parent.mkdir(parents=True, exist_ok=True)
        if paths.partial_meta.is_file() and read_json(paths.partial_meta) != ident:
            # Results of different settings under the same name: they must not be mixed in.
            for stale in paths.partial_files():
                stale.unlink(missing_ok=True)
        for partial_file in paths.partial_files():
            repair_jsonl(partial_file)
        write_json_atomic(paths.partial_meta, ident)
    except OSError:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise
