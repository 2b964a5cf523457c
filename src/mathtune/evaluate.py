"""The GSM8K benchmark of one model (optionally with a LoRA adapter).

    mathtune eval --model Qwen/Qwen2-1.5B [--adapter DIR] [--limit N] [--prompt chat|cot8|plain5]

Writes OUT/eval/NAME.jsonl (one scored record per problem, in problem order) and
OUT/eval/NAME.summary.json. While it runs, finished batches go to NAME.partial.jsonl, so a
killed evaluation started again with the same arguments continues where it stopped; the
final files appear only when every problem is done.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mathtune.data import GSM8K_FORMAT, DataFormat, Problem, data_identity, load_split, resolve_source
from mathtune.errors import MathtuneError, listing
from mathtune.generate import Generation, generate_batch, pick_batch_size
from mathtune.config import EVAL_PROMPTS
from mathtune.prompts import PromptBuilder, make_prompt_builder, render_verify_turn
from mathtune import terminal
from mathtune.provenance import library_versions
from mathtune.runfiles import (iter_jsonl, read_jsonl_until_torn, repair_jsonl, write_json_atomic,
                               write_jsonl_atomic)
from mathtune.score import extract_gold, majority_vote, numbers_equal, score_completion
from mathtune.stats import wilson_interval
from mathtune.taxonomy import classify_error


@dataclass(frozen=True)
class EvalRequest:
    """Everything that determines an evaluation's results (batch size does not: greedy
    decoding in fp32 gives the same tokens at any batch size, and a test checks it)."""

    model: str
    adapter: str | None = None
    data: str = "openai/gsm8k"
    split: str = "test"
    limit: int | None = None
    prompt: str = "chat"
    samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 512
    batch_size: int | str = "auto"
    dtype: str = "auto"
    seed: int = 42
    val_fraction: float = 0.10
    trust_remote_code: bool = False
    data_format: DataFormat = GSM8K_FORMAT

    def identity(self) -> dict:
        ident = asdict(self)
        ident.pop("batch_size")
        # At their defaults, as in every record written before these keys existed:
        if not ident["trust_remote_code"]:
            ident.pop("trust_remote_code")
        if self.data_format == GSM8K_FORMAT:
            ident.pop("data_format")
        ident["data"] = resolve_source(self.data)
        return ident


def default_name(request: EvalRequest) -> str:
    stem = Path(request.model.rstrip("/")).name.removesuffix(".gguf")
    if request.adapter:
        stem += "+" + Path(request.adapter.rstrip("/")).name
    stem += f"-{request.prompt}"
    if request.samples > 1:
        stem += f"-sc{request.samples}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", stem)


def protocol_text(request: EvalRequest, n: int, data_name: str = "GSM8K") -> str:
    prompt = {
        "chat": "zero-shot chat template, asks for '#### N'",
        "cot8": "8-shot chain-of-thought (Wei et al. exemplars)",
        "plain5": "5-shot 'Question:/Answer:' exemplars from the train split",
        "chat-verify": "zero-shot chat template, then a second turn asking the model to check its work; "
                       "scored on the final turn",
    }[request.prompt]
    decoding = (
        "greedy"
        if request.samples == 1 and request.temperature == 0
        else f"{request.samples} samples at T={request.temperature}, majority vote"
    )
    return (
        f"{data_name} {request.split}, {n} problems; prompt {request.prompt} ({prompt}); {decoding}; "
        f"max_new_tokens {request.max_new_tokens}; strict = stated final answer, flexible = last number; "
        "numbers compared as numbers"
    )


# ---------------------------------------------------------------------------- records


def build_record(problem: Problem, prompt: str, generations: list[Generation],
                 first_turn: Generation | None = None) -> dict:
    """One scored line of eval/NAME.jsonl. With several samples the answer is the majority
    vote; every sample is kept under 'samples'. With a first turn (chat-verify) the record is
    scored on the final turn, and the first is kept, scored, under 'first_turn'."""
    scored = [score_completion(g.completion, problem.gold) for g in generations]
    record = {"id": problem.id, "question": problem.question, "answer": problem.answer, "gold": problem.gold,
              "prompt": prompt}
    if len(generations) == 1:
        g = generations[0]
        record.update(completion=g.completion, **scored[0],
                      num_generated_tokens=g.num_generated_tokens, truncated=g.truncated)
    else:
        vote_strict = majority_vote([s["pred_strict"] for s in scored])
        vote_flexible = majority_vote([s["pred_flexible"] for s in scored])
        # The shown completion is one that produced the voted answer.
        shown = next((i for i, s in enumerate(scored) if vote_strict is not None and s["pred_strict"] == vote_strict),
                     next((i for i, s in enumerate(scored) if s["pred_flexible"] == vote_flexible), 0))
        voted = {"pred_strict": vote_strict, "pred_flexible": vote_flexible,
                 "correct_strict": numbers_equal(vote_strict, problem.gold),
                 "correct_flexible": numbers_equal(vote_flexible, problem.gold)}
        record.update(completion=generations[shown].completion, **voted,
                      num_generated_tokens=sum(g.num_generated_tokens for g in generations),
                      truncated=generations[shown].truncated)
        record["samples"] = [
            {"completion": g.completion, **s, "num_generated_tokens": g.num_generated_tokens, "truncated": g.truncated}
            for g, s in zip(generations, scored)
        ]
    if first_turn is not None:
        record["first_turn"] = {"completion": first_turn.completion,
                                **score_completion(first_turn.completion, problem.gold),
                                "num_generated_tokens": first_turn.num_generated_tokens,
                                "truncated": first_turn.truncated}
        record["num_generated_tokens"] += first_turn.num_generated_tokens  # both turns were generated
    record["error_category"] = classify_error(record)
    return record


# Each record in a partial file carries when it was written: (session id, process rank,
# seconds since that session's decoding began). The merged records drop it; the summary keeps
# the per-session totals, so a resumed evaluation's speed counts only the work it timed.
_TIMING = "_timing"


def session_timing(records: list[dict]) -> dict:
    """Problems, tokens and wall time of each decoding session found in the records, and the
    rates over the timed work only. A session's wall time is its slowest process's last record."""
    sessions: dict[str, dict] = {}
    for r in records:
        mark = r.get(_TIMING)
        if mark is None:
            continue
        s = sessions.setdefault(mark["session"], {"started": mark["started"], "problems": 0,
                                                  "generated_tokens": 0, "ranks": {}})
        s["problems"] += 1
        s["generated_tokens"] += r["num_generated_tokens"]
        s["ranks"][mark["rank"]] = max(s["ranks"].get(mark["rank"], 0.0), mark["elapsed_s"])
    listed = [{"started": s["started"], "problems": s["problems"], "generated_tokens": s["generated_tokens"],
               "wall_time_s": round(max(s["ranks"].values()), 3)}
              for s in sorted(sessions.values(), key=lambda s: s["started"])]
    wall = sum(s["wall_time_s"] for s in listed)
    problems = sum(s["problems"] for s in listed)
    tokens = sum(s["generated_tokens"] for s in listed)
    return {"sessions": listed, "wall_time_s": round(wall, 3), "timed_problems": problems,
            "untimed_problems": len(records) - problems,
            "problems_per_s": problems / wall if wall > 0 else None,
            "tokens_per_s": tokens / wall if wall > 0 else None}


def _summary_identity(request: EvalRequest) -> dict:
    """The request as a summary holds it: what was asked for; `dtype` is what ran."""
    ident = request.identity()
    ident["dtype_requested"] = ident.pop("dtype")
    return ident


def accuracy_figures(records: list[dict]) -> dict:
    """n, strict and flexible accuracy, and their Wilson intervals, of scored records."""
    n = len(records)
    out: dict = {"n": n}
    counts = {kind: sum(r[f"correct_{kind}"] for r in records) for kind in ("strict", "flexible")}
    out.update({f"accuracy_{kind}": c / n for kind, c in counts.items()})
    out.update({f"ci95_{kind}": list(wilson_interval(c, n)) for kind, c in counts.items()})
    return out


def write_scored(path: Path, out: Path | None, rows: list[dict]) -> Path:
    """`mathtune score`'s scored lines: to `out`, by default FILE.scored.jsonl beside FILE."""
    out = out or path.with_name(path.stem + ".scored.jsonl")
    write_jsonl_atomic(out, rows)
    return out


def summarize(records: list[dict], request: EvalRequest, *, timing: dict, batch_size: int,
              device: str, dtype: str, attention: str | None = None) -> dict:
    n = len(records)
    tokens = sum(r["num_generated_tokens"] for r in records)
    identity = data_identity(request.data, request.split, request.data_format)
    return {
        **accuracy_figures(records),
        "correct_strict": sum(r["correct_strict"] for r in records),
        "correct_flexible": sum(r["correct_flexible"] for r in records),
        "generated_tokens": tokens,
        "truncated": sum(r["truncated"] for r in records),
        **timing,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "attention": attention,
        "protocol": protocol_text(request, n, identity["name"]),
        **_summary_identity(request),
        "data_name": identity["name"],
        "data_identity": identity,
    }


# ---------------------------------------------------------------------------- files


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

    def partial_for_rank(self, rank: int) -> Path:
        """Each process of a sharded evaluation appends to a file of its own."""
        return self.partial.with_name(self.partial.name.removesuffix(".jsonl") + f".rank{rank}.jsonl")

    def partial_files(self) -> list[Path]:
        """The partial records of one process or of several (a resume may use another count)."""
        stem = self.partial.name.removesuffix(".jsonl")
        found = [self.partial] + sorted(self.partial.parent.glob(f"{stem}.rank*.jsonl"))
        return [f for f in found if f.is_file()]


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes of a torchrun / accelerate launch."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls) -> "Shard":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        from accelerate import PartialState

        # Joins the process group (gloo on CPU, nccl on GPU); cpu=True makes several CPU
        # processes a group rather than one process each.
        state = PartialState(cpu=not torch.cuda.is_available())
        return cls(state.process_index, state.num_processes)

    def same_for_all(self, value):
        """The first process's value, in every process."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()


def finished_summary(paths: EvalPaths, request: EvalRequest) -> dict | None:
    """The summary of an already finished evaluation of the same request, else None."""
    if not (paths.records.is_file() and paths.summary.is_file()):
        return None
    summary = json.loads(paths.summary.read_text())
    ident = _summary_identity(request)
    if all(summary.get(k) == v for k, v in ident.items()):
        return summary
    return None


# ---------------------------------------------------------------------------- stage


def load_problems(request: EvalRequest) -> tuple[list[Problem], PromptBuilder]:
    if request.prompt not in EVAL_PROMPTS:
        raise MathtuneError(f"unknown prompt '{request.prompt}' (expected one of {', '.join(EVAL_PROMPTS)})")
    if request.prompt == "chat-verify" and request.samples > 1:
        raise MathtuneError("chat-verify checks one answer per problem: use it with samples 1")
    problems = load_split(request.data, request.split, val_fraction=request.val_fraction, seed=request.seed,
                          fmt=request.data_format)
    if request.limit is not None:
        problems = problems[: request.limit]
    train = None
    if request.prompt == "plain5":
        train = load_split(request.data, "train", val_fraction=request.val_fraction, seed=request.seed,
                           fmt=request.data_format)
        exclude = {p.question for p in problems}
        train = [p for p in train if p.question not in exclude]
    return problems, make_prompt_builder(request.prompt, train=train, seed=request.seed)


def other_settings(paths: EvalPaths, request: EvalRequest) -> list[str]:
    """The settings in which a finished evaluation under these paths differs from the
    request ([] when there is none, or it is the same)."""
    if not paths.summary.is_file():
        return []
    try:
        summary = json.loads(paths.summary.read_text())
    except ValueError:
        return ["(unreadable summary)"]
    return [k for k, v in _summary_identity(request).items() if summary.get(k) != v]


def refuse_other_settings(paths: EvalPaths, request: EvalRequest, where: str, what: str, advice: str) -> list[str]:
    """Finished records are never replaced in silence: MathtuneError when a finished
    evaluation under these paths has other settings and `advice` says how to proceed;
    returns the differing settings (to report a replacement) when advice is empty."""
    differs = other_settings(paths, request)
    if differs and advice:
        raise MathtuneError(f"{where} holds a finished {what} with other settings (differs in {listing(differs)}); "
                            f"{advice}")
    return differs


def _start_partial(paths: EvalPaths, ident: dict) -> None:
    """Open (or continue) the partial records of one evaluation; a folder this call made is
    removed again when the first write fails (a full disk, a read-only folder)."""
    made = [d for d in (paths.records.parent.parent, paths.records.parent) if not d.exists()]
    try:
        paths.records.parent.mkdir(parents=True, exist_ok=True)
        if paths.partial_meta.is_file() and json.loads(paths.partial_meta.read_text()) != ident:
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


def evaluate(request: EvalRequest, out_dir: Path, name: str | None = None, *, model=None, tokenizer=None,
             quiet: bool = False, paths: EvalPaths | None = None, overwrite: bool = False) -> dict:
    """Benchmark one model; returns the summary. Pass a loaded model/tokenizer to reuse it
    (the pipeline evaluates base and tuned without loading twice), and paths to write
    somewhere other than OUT/eval/NAME.* (RFT keeps its samples in train/).

    Under torchrun (or accelerate launch) every process takes a share of the problems and
    appends to its own partial file; the first process merges them into the same records
    and summary one process writes."""
    if request.samples < 1:
        raise MathtuneError("--samples must be at least 1")
    if request.samples > 1 and request.temperature == 0:
        raise MathtuneError("samples > 1 needs a temperature > 0")
    name = name or default_name(request)
    paths = paths or EvalPaths.for_name(out_dir, name)
    problems, builder = load_problems(request)  # data errors surface before the slow model load
    done = finished_summary(paths, request)
    if done is not None:
        if not (quiet or terminal.QUIET):
            print(f"eval/{name}: already finished for these settings ({paths.summary})")
        return done
    differs = refuse_other_settings(paths, request, str(paths.records), "evaluation",
                                    "" if overwrite else "use --name for a record of its own, or --overwrite to replace it")
    if differs and not (quiet or terminal.QUIET):
        print(f"eval/{name}: replacing the finished evaluation in {paths.records} (differs in {', '.join(differs)})")
    shard = Shard.current()

    if model is None:
        from mathtune.models import check_adapter_folder, load_model

        if request.adapter is not None:
            check_adapter_folder(request.adapter)  # before the slow model load

        model, tokenizer = load_model(request.model, dtype=request.dtype, adapter=request.adapter,
                                      merge_adapter=True, trust_remote_code=request.trust_remote_code)

    prompts = {p.id: builder.render(p.question, tokenizer) for p in problems}  # a template error writes nothing
    ident = request.identity()
    if shard.is_main:
        _start_partial(paths, ident)
    shard.wait()
    # A line cut off mid-write by a kill is dropped, and its problem redone.
    done_records = {r["id"]: r for f in paths.partial_files() for r in read_jsonl_until_torn(f)}
    shard.wait()  # every process has read the same records before any appends more

    # Longest prompts first: similar lengths are prefilled together (little padding), and an
    # out-of-memory error shows up at the start, not halfway through. Processes take every
    # world_size-th problem of that order, so each gets a similar mix of lengths.
    pending = [p for p in problems if p.id not in done_records]
    lengths = {p.id: len(tokenizer(prompts[p.id], add_special_tokens=False)["input_ids"]) for p in pending}
    pending.sort(key=lambda p: -lengths[p.id])
    mine = pending[shard.rank::shard.world_size]

    device = str(next(model.parameters()).device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    attention = getattr(model.config, "_attn_implementation", None)
    session = shard.same_for_all(uuid.uuid4().hex[:12])
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if request.samples > 1:
        torch.manual_seed(request.seed + len(done_records) + shard.rank)
    bar = tqdm(total=len(problems) if shard.world_size == 1 else len(mine),
               initial=len(done_records) if shard.world_size == 1 else 0, unit="problem",
               desc=f"eval {name}", disable=quiet or terminal.QUIET or not shard.is_main, dynamic_ncols=True,
               # not a terminal (CI, a pipe): a plain line now and then, not a redraw per problem
               mininterval=0.1 if sys.stderr.isatty() else terminal.PLAIN_EVERY_S)
    start = time.perf_counter()
    own_partial = paths.partial if shard.world_size == 1 else paths.partial_for_rank(shard.rank)
    right = [0, 0]  # strictly right, done: the running accuracy the bar shows
    with own_partial.open("a", encoding="utf-8") as partial:

        def write(problem: Problem, generations: list[Generation], first_turn: Generation | None = None) -> None:
            record = build_record(problem, prompts[problem.id], generations, first_turn)
            record[_TIMING] = {"session": session, "started": started, "rank": shard.rank,
                               "elapsed_s": round(time.perf_counter() - start, 3)}
            partial.write(json.dumps(record, ensure_ascii=False) + "\n")
            partial.flush()
            done_records[problem.id] = record
            right[0] += bool(record["correct_strict"])
            right[1] += 1
            bar.set_postfix_str(f"strict {right[0]}/{right[1]}", refresh=False)  # this session's problems
            bar.update(1)

        decode = decode_two_turns if request.prompt == "chat-verify" else decode_problems
        batch_size, decoder = decode(model, tokenizer, mine, prompts, request, builder.stop_strings, write)
    bar.close()
    shard.wait()
    if not shard.is_main:
        shard.wait()  # the first process writes the merged files
        return json.loads(paths.summary.read_text())

    if shard.world_size > 1:  # the other processes' records are only on disk
        done_records = {r["id"]: r for f in paths.partial_files() for r in read_jsonl_until_torn(f)}
    missing = [p.id for p in problems if p.id not in done_records]
    if missing:
        raise MathtuneError(f"eval/{name}: {len(missing)} problems have no record after generation (e.g. {missing[0]})")
    timed = [done_records[p.id] for p in problems]
    records = [{k: v for k, v in r.items() if k != _TIMING} for r in timed]
    summary = summarize(records, request, timing=session_timing(timed), batch_size=batch_size, device=device,
                        dtype=dtype, attention=attention)
    summary["world_size"] = shard.world_size
    summary["decoder"] = decoder
    if len(pending) < len(problems):
        summary["resumed_from"] = len(problems) - len(pending)
    if len(summary["sessions"]) > 1 or summary["untimed_problems"]:
        summary["rate_note"] = ("wall time and rates add up the decoding sessions' own problems and time; a "
                                "problem cut off by an interruption was redone and counts once")
    summary["platform"] = library_versions()
    write_jsonl_atomic(paths.records, records)
    write_json_atomic(paths.summary, summary)
    for used in paths.partial_files():
        used.unlink(missing_ok=True)
    paths.partial_meta.unlink(missing_ok=True)
    shard.wait()
    if not (quiet or terminal.QUIET):
        _print_summary(name, summary, paths, records)
    return summary


# chat-verify decodes this many problems' first turns, then their second turns, then the
# next problems: a kill loses at most one chunk's first turns, and the batch stays full.
VERIFY_CHUNK = 32


def decode_two_turns(model, tokenizer, problems: list[Problem], prompts: dict[str, str], request: EvalRequest,
                     stop_strings: tuple[str, ...], on_done) -> tuple[int, str]:
    """chat-verify: each problem's first answer, then, in the same conversation, the model's
    check of it; on_done(problem, [final], first) once both turns are done."""
    size, decoder = decode_problems(model, tokenizer, [], prompts, request, stop_strings, on_done)
    for start in range(0, len(problems), VERIFY_CHUNK):
        part = problems[start:start + VERIFY_CHUNK]
        first: dict[str, Generation] = {}
        decode_problems(model, tokenizer, part, prompts, request, stop_strings,
                        lambda p, g: first.__setitem__(p.id, g[0]))
        second = {p.id: render_verify_turn(p.question, first[p.id].completion, tokenizer) for p in part}
        part = sorted(part, key=lambda p: -len(second[p.id]))  # longest first, as decode_problems expects
        size, decoder = decode_problems(model, tokenizer, part, second, request, stop_strings,
                                        lambda p, g: on_done(p, g, first[p.id]))
    return size, decoder


def decode_problems(model, tokenizer, problems: list[Problem], prompts: dict[str, str], request: EvalRequest,
                    stop_strings: tuple[str, ...], on_done) -> tuple[int, str]:
    """Generate for every problem (given longest prompt first), calling on_done(problem,
    generations) as each finishes;
    returns the batch size used and which decoder ran. The engine (shared prefix, refilled batch) where the
    model's cache allows it, else batched `generate`. Out of GPU memory, the batch halves
    and the unfinished problems go on."""
    from mathtune import engine

    texts = [prompts[p.id] for p in problems]
    kwargs = dict(max_new_tokens=request.max_new_tokens, stop_strings=stop_strings,
                  add_special_tokens=request.prompt not in ("chat", "chat-verify"), samples=request.samples,
                  temperature=request.temperature)
    if not problems:
        return (request.batch_size if request.batch_size != "auto" else 1), "none (all resumed)"
    if not engine.supports(model):
        return _decode_with_generate(model, tokenizer, problems, texts, request, kwargs, on_done), "transformers generate"

    size = request.batch_size
    if size == "auto":
        longest = len(tokenizer(texts[0], add_special_tokens=False)["input_ids"])  # problems come longest first
        size = engine.auto_batch_size(model, longest + request.max_new_tokens, request.samples)
    remaining = list(range(len(problems)))
    while remaining:
        finished: set[int] = set()
        try:
            for i, generations in engine.generate_stream(model, tokenizer, [texts[j] for j in remaining],
                                                         batch_size=size, **kwargs):
                on_done(problems[remaining[i]], generations)
                finished.add(i)
            remaining = []
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = max(1, size // 2)
            torch.cuda.empty_cache()
            remaining = [j for i, j in enumerate(remaining) if i not in finished]
    return size, "mathtune engine (shared prefix, refilled batch)"


def _decode_with_generate(model, tokenizer, problems, texts, request, kwargs, on_done) -> int:
    cursor = 0

    def run_batch(batch_size: int) -> None:
        nonlocal cursor
        chunk = slice(cursor, cursor + batch_size)
        for problem, generations in zip(problems[chunk], generate_batch(model, tokenizer, texts[chunk], **kwargs)):
            on_done(problem, generations)
        cursor += len(problems[chunk])

    batch_size = pick_batch_size(request.batch_size, run_batch)
    while cursor < len(problems):
        run_batch(batch_size)
    return batch_size


def _print_summary(name: str, s: dict, paths: EvalPaths, records: list[dict] | None = None) -> None:
    lo, hi = s["ci95_strict"]
    flo, fhi = s["ci95_flexible"]
    print(
        f"{name}: strict {s['accuracy_strict']:.1%} [{lo:.1%}, {hi:.1%}]  "
        f"flexible {s['accuracy_flexible']:.1%} [{flo:.1%}, {fhi:.1%}]  "
        f"n={s['n']}  truncated={s['truncated']}  "
        + (f"{s['problems_per_s']:.2f} problems/s" if s["problems_per_s"] else "")
    )
    if records and all(len(r.get("samples") or []) >= 2 for r in records):
        from mathtune.selfconsistency import curve

        rows = curve(records)
        print("  maj@k " + ", ".join(f"k={r['k']} {r['maj']['accuracy_pct']}%" for r in rows)
              + "  |  pass@k " + ", ".join(f"k={r['k']} {r['pass']['accuracy_pct']}%" for r in rows) + "  (strict)")
    if records and all(isinstance(r.get("first_turn"), dict) for r in records):
        from mathtune.selfcheck import check_turn_effect

        c = check_turn_effect(records)
        print(f"  self-check: first turn {c['first_turn']['accuracy_pct']}%, final turn {c['final_turn']['accuracy_pct']}%"
              f"; fixed {c['fixed']}, broken {c['broken']} (strict)")
    print(f"records: {paths.records}\nsummary: {paths.summary}")


# ---------------------------------------------------------------------------- score


def score_file(path: Path, out: Path | None = None) -> dict:
    """`mathtune score`: add pred_strict, pred_flexible, correct_strict, correct_flexible to
    every line of a JSONL of completions (or an lm-eval samples file), write them to `out`
    (default FILE.scored.jsonl) and return the summary."""
    if not path.is_file():
        raise MathtuneError(f"file not found: {path}")
    from mathtune.lmeval_samples import score_lmeval_samples

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
        row.update(score_completion(row["completion"], gold))
        rows.append(row)
    if not rows:
        raise MathtuneError(f"{path}: no lines to score")
    return {**accuracy_figures(rows), "out": str(write_scored(path, out, rows))}
