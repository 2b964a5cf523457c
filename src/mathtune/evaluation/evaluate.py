"""The GSM8K benchmark of one model (optionally with a LoRA adapter).

    mathtune eval --model Qwen/Qwen2-1.5B [--adapter DIR] [--limit N] [--prompt chat|cot8|plain5|chat-verify]

Writes OUT/eval/NAME.jsonl (one scored record per problem, in problem order) and
OUT/eval/NAME.summary.json. While it runs, finished problems go to NAME.partial.jsonl, so a
killed evaluation started again with the same arguments continues where it stopped; the
final files appear only when every problem is done.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mathtune.core import terminal
from mathtune.core.errors import MathtuneError
from mathtune.core.processes import Process, this_process
from mathtune.core.provenance import library_versions
from mathtune.core.runfiles import read_jsonl_until_torn, write_jsonl_atomic
from mathtune.core.terminal import say
from mathtune.evaluation.decode import decode_problems, decode_two_turns, longest_first, prompt_token_ids
from mathtune.evaluation.metrics import check_turn_effect, curve
from mathtune.evaluation.records import (TIMING, EvalPaths, build_record, finished_evaluation, refuse_changed_prompts,
                                         session_timing, start_partial, summarize)
from mathtune.evaluation.request import EvalRequest, default_name, load_problems
from mathtune.evaluation.summary import EvalSummary, read_eval_summary, write_eval_summary
from mathtune.models.first_use import checked_decoder, eval_paths
from mathtune.models.generate import Generation
from mathtune.models.load import load_model
from mathtune.models.quantize import quantization_record
from mathtune.task.data import Problem
from mathtune.task.prompt_kinds import PROMPT_KIND_TABLE


@dataclass(frozen=True)
class DecodingRun:
    """How an evaluation's problems were decoded, as its summary records it."""

    batch_size: int
    decoder: str  # what ran (a models.decoders name, after the first-use check), or none when all were resumed
    resumed: int  # problems whose records an earlier, interrupted session wrote
    world_size: int  # processes that shared the problems


class PartialWriter:
    """Appends each finished problem's scored record to this process's partial file, marked with
    when it was written, and moves the progress bar, which shows the running strict count."""

    def __init__(self, path: Path, prompts: dict[str, str], records: dict[str, dict], bar, here: Process):
        self.path, self.prompts, self.records, self.bar = path, prompts, records, bar
        self.mark = {"session": here.same_for_all(uuid.uuid4().hex[:12]),
                     "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "rank": here.rank}
        self.right = self.written = 0  # this session's problems: strictly right, written

    def __enter__(self) -> "PartialWriter":
        self.start = time.perf_counter()
        self.file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()
        self.bar.close()

    def write(self, problem: Problem, generations: list[Generation], first_turn: Generation | None = None,
              final_prompt: str | None = None) -> None:
        record = build_record(problem, self.prompts[problem.id], generations, first_turn, final_prompt)
        record[TIMING] = {**self.mark, "elapsed_s": round(time.perf_counter() - self.start, 3)}
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        self.records[problem.id] = record
        self.right += bool(record["correct_strict"])
        self.written += 1
        self.bar.set_postfix_str(f"strict {self.right}/{self.written}", refresh=False)
        self.bar.update(1)


def evaluate(request: EvalRequest, out_dir: Path, name: str | None = None, *, model=None, tokenizer=None,
             paths: EvalPaths | None = None, overwrite: bool = False) -> EvalSummary:
    """Benchmark one model; returns the summary. Pass a loaded model/tokenizer to reuse it
    (the pipeline evaluates base and tuned without loading twice), and paths to write
    somewhere other than OUT/eval/NAME.* (RFT keeps its samples in train/). What it prints
    follows the one switch, terminal.QUIET.

    Under torchrun (or accelerate launch) every process takes a share of the problems and
    appends to its own partial file; the first process merges them into the same records
    and summary one process writes."""
    name = name or default_name(request)
    paths = paths or EvalPaths.for_name(out_dir, name)
    if request.data_identity is None:
        raise ValueError("evaluate() takes a request settled at its door: evaluation.resolve.resolve_request")
    problems, builder = load_problems(request)  # data errors surface before the slow model load
    done = finished_evaluation(paths, request, overwrite=overwrite, replacing=lambda differs: say(
        f"eval/{name}: replacing the finished evaluation in {paths.records} (differs in {', '.join(differs)})"))
    if done is not None:
        say(f"eval/{name}: already finished for these settings ({paths.summary})")
        return done
    if model is None:
        model, tokenizer = load_evaluated_model(request)
    checked_decoder(model)  # the decoder checked before its first use here; its record goes in the summary
    here = this_process()
    prompts = {p.id: builder.render(p.question, tokenizer) for p in problems}  # a template error writes nothing
    records = resume(paths, request, here)
    if overwrite and any(pid in prompts and r.get("prompt") != prompts[pid] for pid, r in records.items()):
        records = discard_partials(paths, here)
    refuse_changed_prompts(records, prompts, name, paths.partial)
    pending = [p for p in problems if p.id not in records]
    token_ids = prompt_token_ids(pending, prompts, tokenizer, request)
    pending = longest_first(pending, token_ids)
    mine = pending[here.rank::here.world_size]
    if request.samples > 1:
        torch.manual_seed(request.seed + len(records) + here.rank)
    whole = here.world_size == 1  # one process shows the whole evaluation; several, each its share
    bar = progress_bar(name, here, total=len(problems) if whole else len(mine), done=len(records) if whole else 0)
    own = paths.partial if whole else paths.partial_for_rank(here.rank)
    with PartialWriter(own, prompts, records, bar, here) as writer:
        decode = decode_two_turns if PROMPT_KIND_TABLE.get(request.prompt).second_turn else decode_problems
        batch_size, decoder = decode(model, tokenizer, mine, prompts, request, builder.stops_for(tokenizer),
                                     writer.write, token_ids)
    here.wait()
    if not here.is_first:
        here.wait()  # the first process writes the merged files
        return read_eval_summary(paths.summary)
    if not whole:  # the other processes' records are only on disk
        records = read_partials(paths)
    run = DecodingRun(batch_size, decoder, resumed=len(problems) - len(pending), world_size=here.world_size)
    summary = write_final(paths, name, problems, records, request, model, run)
    here.wait()
    print_summary(name, summary, [records[p.id] for p in problems])
    return summary


def load_evaluated_model(request: EvalRequest):
    """(model, tokenizer) of the request, the adapter merged in where that is exact."""
    return load_model(request.model_section(), adapter=request.adapter, merge_adapter=True)


def weights_record(model, request: EvalRequest) -> dict:
    """What the evaluated weights were: the base's quantization (None: full precision), and the
    adapter's variant, rank and target modules, and whether it was merged into the base."""
    record: dict = {"quantization_record": quantization_record(model)}
    if request.adapter is not None:
        record["adapter_settings"] = request.adapter_settings  # read at the door
        record["adapter_merged"] = not hasattr(model, "peft_config")  # merge_and_unload returns the bare model
    return record


def read_partials(paths: EvalPaths) -> dict[str, dict]:
    """The records already written, by problem id; a line cut off mid-write by a kill is dropped
    (and its problem redone)."""
    return {r["id"]: r for f in paths.partial_files() for r in read_jsonl_until_torn(f)}


def resume(paths: EvalPaths, request: EvalRequest, here: Process) -> dict[str, dict]:
    """Open (or continue) the partial records and read what they hold, the same in every process."""
    if here.is_first:
        start_partial(paths, request.identity(paths.home))
    here.wait()
    records = read_partials(paths)
    here.wait()  # every process has read the same records before any appends more
    return records


def discard_partials(paths: EvalPaths, here: Process) -> dict[str, dict]:
    """--overwrite over partial records made from other prompts: they go, and the evaluation starts over."""
    here.wait()
    if here.is_first:
        for stale in paths.partial_files():
            stale.unlink(missing_ok=True)
    here.wait()
    return {}


def progress_bar(name: str, here: Process, *, total: int, done: int):
    if not (terminal.QUIET or not here.is_first or sys.stderr.isatty()):
        # not a terminal (a log, CI, a pipe): a plain line now and then, never a bar's carriage returns
        return terminal.PlainProgress(f"eval {name}", total=total, done=done)
    return tqdm(total=total, initial=done, unit="problem", desc=f"eval {name}",
                disable=terminal.QUIET or not here.is_first, dynamic_ncols=True, mininterval=0.1)


def write_final(paths: EvalPaths, name: str, problems: list[Problem], records: dict[str, dict], request: EvalRequest,
                model, run: DecodingRun) -> EvalSummary:
    """NAME.jsonl in problem order and NAME.summary.json; then the partial files go."""
    missing = [p.id for p in problems if p.id not in records]
    if missing:
        raise MathtuneError(f"eval/{name}: {len(missing)} problems have no record after generation (e.g. {missing[0]})")
    timed = [records[p.id] for p in problems]
    final = [{k: v for k, v in r.items() if k != TIMING} for r in timed]
    # Sessions are told apart in the order their records were written (the partial files' order):
    # two sessions started within the same second would otherwise be listed in problem order.
    wanted = {p.id for p in problems}
    in_written_order = [r for problem_id, r in records.items() if problem_id in wanted]
    weights = next(model.parameters())
    summary = summarize(final, request, timing=session_timing(in_written_order), batch_size=run.batch_size,
                        device=str(weights.device), dtype=str(weights.dtype).removeprefix("torch."),
                        attention=getattr(model.config, "_attn_implementation", None), home=paths.home)
    summary.world_size = run.world_size
    summary.decoder = run.decoder
    summary.fast_paths = eval_paths(model)  # which attention and decoder ran, and why
    summary = replace(summary, **weights_record(model, request))
    if run.resumed:
        summary.resumed_from = run.resumed
    if len(summary.sessions) > 1 or summary.untimed_problems:
        summary.rate_note = ("wall time and rates add up the decoding sessions' own problems and time; a "
                             "problem cut off by an interruption was redone and counts once")
    summary.platform = library_versions()
    write_jsonl_atomic(paths.records, final)
    write_eval_summary(paths.summary, summary)
    for used in paths.partial_files():
        used.unlink(missing_ok=True)
    paths.partial_meta.unlink(missing_ok=True)
    return summary


def print_summary(name: str, s: EvalSummary, records: list[dict]) -> None:
    """The closing lines: accuracy with intervals (with maj@k and pass@k, or the self-check's
    effect, where they apply). The files are the command's to name (`mathtune eval` prints
    them as its final paths)."""
    lo, hi = s.ci95_strict
    flo, fhi = s.ci95_flexible
    say(f"{name}: strict {s.accuracy_strict:.1%} [{lo:.1%}, {hi:.1%}]  "
        f"flexible {s.accuracy_flexible:.1%} [{flo:.1%}, {fhi:.1%}]  "
        f"n={s.n}  truncated={s.truncated}  "
        + (f"{s.problems_per_s:.2f} problems/s" if s.problems_per_s else ""))
    if records and all(len(r.get("samples") or []) >= 2 for r in records):
        rows = curve(records)
        say("  maj@k " + ", ".join(f"k={r['k']} {r['maj']['accuracy_pct']}%" for r in rows)
            + "  |  pass@k " + ", ".join(f"k={r['k']} {r['pass']['accuracy_pct']}%" for r in rows) + "  (strict)")
    if records and all(isinstance(r.get("first_turn"), dict) for r in records):
        c = check_turn_effect(records)
        say(f"  self-check: first turn {c['first_turn']['accuracy_pct']}%, final turn {c['final_turn']['accuracy_pct']}%"
            f"; fixed {c['fixed']}, broken {c['broken']} (strict)")
