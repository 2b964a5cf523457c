"""GSM8K evaluation speed: `mathtune eval` against lm-evaluation-harness, same prompts, one run.

    python bench/eval_speed.py --model PATH [--data ../shared/gsm8k] [--limit 16]
        [--prompts cot8,chat] [--max-new-tokens 256] [--batch1-sample 4] [--json OUT.json]
    python bench/eval_speed.py --shape qwen2-1.5b --tokenizer ../shared/qwen2.5-tokenizer --limit 1319
    python bench/eval_speed.py --model M --adapter DIR --paths mathtune,mathtune:merged   # merged vs not

For each prompt format, three paths run the same rendered prompts with the same stop strings
and the same maximum of new tokens, each in a fresh process (its own model load, its own peak
memory), one after the other:
  mathtune   `mathtune eval` as a user runs it (mathtune.evaluation.evaluate.evaluate): loading, data,
             generation, scoring and the records files; batch size auto
  lm-eval    lm-evaluation-harness's HF backend (HFLM.generate_until) on the same prompt
             strings; batch_size auto on a GPU (its own detection), 8 on a CPU
  batch1     plain `generate` at batch 1 on the first --batch1-sample problems: the parity
             reference (its greedy text and token count) and a time per problem
Times: `wall` from before the model load to the last result, inside the worker; `decode` from
the start of decoding (mathtune: its first prefill; lm-eval: generate_until) to the last
result; `process` the worker's whole process, imports and exit included. problems/s is given
both ways. Verdicts: every path's text is scored by mathtune's
scorer; the table shows how many problems each path gets right and on how many problems
mathtune's strict verdict equals lm-eval's. Parity: the share of the sampled problems where
mathtune's completion and token count equal batch-1 generate's. Agreement: for every two
paths, on how many problems their completions are the same text (greedy agreement, in
whatever dtype the paths ran).

mathtune's decoder is chosen per path: mathtune:static (fixed slots, a CUDA graph per step on
a GPU), mathtune:dynamic (the dynamic cache), plain `mathtune` (the default for the device);
the summary's `decoder` names what ran. mathtune:merged folds --adapter into the weights even
in bf16 (mathtune.models.load.MERGE_IN_LOW_PRECISION), to measure what merging changes.

With --shape, random weights of that shape are built (bench/shapes.py) with the real
tokenizer; random text almost never stops early, so every path generates ~max_new_tokens
per problem (the table shows the tokens each generated).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _problems_and_prompts(args, tokenizer):
    from mathtune.evaluation.request import EvalRequest, load_problems

    req = EvalRequest.with_config_defaults(model=args.model, data=args.data, limit=args.limit, prompt=args.prompt)
    problems, builder = load_problems(req)
    return problems, [builder.render(p.question, tokenizer) for p in problems], builder.stop_strings


# ------------------------------------------------------------------------------ workers


def worker_mathtune(args, batch_size=None, share_prefix=True, static_cache=None, merged=False) -> dict:
    from mathtune.core import terminal
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest
    from mathtune.models import engine, load
    from mathtune.models.static_cache import SETTING as STATIC_CACHE_SETTING

    if static_cache is not None:  # the user's switch, in this worker process only
        os.environ[STATIC_CACHE_SETTING] = "1" if static_cache else "0"
    if not share_prefix:  # every engine call `mathtune eval` makes, its batching without the shared prefix
        stream = engine.generate_stream

        def without_shared_prefix(model, tokenizer, prompts, decoding, batching, **kwargs):
            return stream(model, tokenizer, prompts, decoding, dataclasses.replace(batching, share_prefix=False),
                          **kwargs)

        engine.generate_stream = without_shared_prefix
    load.MERGE_IN_LOW_PRECISION = merged
    terminal.QUIET = True  # as `mathtune eval --quiet`: no progress bar
    req = EvalRequest.with_config_defaults(model=args.model, adapter=args.adapter, data=args.data, limit=args.limit, prompt=args.prompt,
                      max_new_tokens=args.max_new_tokens, batch_size=batch_size or args.batch_size, dtype=args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = evaluate(req, Path(tmp), name="bench")
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(tmp) / "eval" / "bench.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "decode_s": summary["wall_time_s"], "batch_size": summary["batch_size"],
            "dtype": summary["dtype"], "decoder": summary["decoder"],
            "completions": [r["completion"] for r in records],
            "tokens": [r["num_generated_tokens"] for r in records]}


def worker_lm_eval(args, batch_size=None) -> dict:
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from mathtune.models.load import load_tokenizer, resolve_dtype, resolve_model_path

    path = resolve_model_path(args.model)
    _, prompts, stops = _problems_and_prompts(args, load_tokenizer(path))
    dtype = str(resolve_dtype(args.dtype)).removeprefix("torch.")
    gpu = torch.cuda.is_available()
    start = time.perf_counter()
    lm = HFLM(pretrained=path, dtype=dtype, device="cuda" if gpu else "cpu",
              batch_size=batch_size or args.lm_eval_batch_size or ("auto" if gpu else 8),
              **({"peft": args.adapter} if args.adapter else {}))
    requests = [
        Instance(request_type="generate_until", doc={}, idx=i,
                 arguments=(p, {"until": list(stops), "max_gen_toks": args.max_new_tokens, "do_sample": False}))
        for i, p in enumerate(prompts)
    ]
    decode_start = time.perf_counter()
    texts = lm.generate_until(requests, disable_tqdm=True)
    end = time.perf_counter()
    tok = lm.tokenizer
    return {"wall_s": end - start, "decode_s": end - decode_start, "load_s": decode_start - start,
            "batch_size": lm.batch_size, "dtype": dtype, "completions": texts,
            "tokens": [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]}


def worker_batch1(args, **_) -> dict:
    from mathtune.config import ModelConfig
    from mathtune.models.generate import generate_batch
    from mathtune.models.load import load_model

    start = time.perf_counter()
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model, dtype=args.dtype))
    load = time.perf_counter() - start
    _, prompts, stops = _problems_and_prompts(args, tokenizer)
    prompts = prompts[: args.batch1_sample]
    start = time.perf_counter()
    gens = [generate_batch(model, tokenizer, [p], max_new_tokens=args.max_new_tokens, stop_strings=stops,
                           add_special_tokens=args.prompt != "chat")[0][0] for p in prompts]
    wall = time.perf_counter() - start
    return {"wall_s": wall, "load_s": load, "batch_size": 1, "completions": [g.completion for g in gens],
            "tokens": [g.num_generated_tokens for g in gens]}


WORKERS = {"mathtune": worker_mathtune, "lm-eval": worker_lm_eval, "batch1": worker_batch1}


def run_named(name: str, args) -> dict:
    """'mathtune', 'mathtune:b8', 'mathtune:b8:noprefix', 'mathtune:cudnn' (cuDNN attention left on
    where the GPU has it, see mathtune.models.load.use_shape_free_attention), 'mathtune:static',
    'mathtune:dynamic', 'mathtune:merged', 'lm-eval', 'lm-eval:b32', 'batch1'."""
    base, *opts = name.split(":")
    kwargs = {}
    for opt in opts:
        if opt == "cudnn" and base == "mathtune":
            os.environ["MATHTUNE_CUDNN_SDPA"] = "1"  # this worker process only
        elif opt.startswith("b") and opt[1:].isdigit():
            kwargs["batch_size"] = int(opt[1:])
        elif opt == "noprefix" and base == "mathtune":
            kwargs["share_prefix"] = False
        elif opt in ("static", "dynamic") and base == "mathtune":
            kwargs["static_cache"] = opt == "static"
        elif opt == "merged" and base == "mathtune":
            if not args.adapter:
                raise SystemExit(f"{name!r} needs --adapter")
            kwargs["merged"] = True
        else:
            raise SystemExit(f"unknown path option {opt!r} in {name!r}")
    return WORKERS[base](args, **kwargs)


def run_worker(args, path: str, prompt: str) -> dict:
    """One path in a fresh process: its own load, its own peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", path, "--prompt", prompt, "--result", str(out)] + args.passthrough
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.path_timeout)
        except subprocess.TimeoutExpired:
            # A lower bound is a result too: the path ran longer than this.
            return {"timed_out_s": args.path_timeout}
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"{path} ({prompt}) failed:\n{proc.stderr[-4000:]}")
        result = json.loads(out.read_text())
    result["process_s"] = elapsed
    return result


# ------------------------------------------------------------------------------ main


def main() -> None:
    from shapes import add_model_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p)
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--prompts", default="cot8,chat")
    p.add_argument("--prompt", help=argparse.SUPPRESS)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", default="auto", help="mathtune's (default auto)")
    p.add_argument("--lm-eval-batch-size", default=None, help="default: auto on a GPU, 8 on a CPU")
    p.add_argument("--batch1-sample", type=int, default=4)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder, for the mathtune and lm-eval paths")
    p.add_argument("--paths", default="mathtune,lm-eval,batch1",
                   help="comma-separated; mathtune and lm-eval take options: mathtune:b8 (batch 8), "
                        "mathtune:b8:noprefix (no shared prefix), mathtune:cudnn (cuDNN attention on), "
                        "mathtune:static / mathtune:dynamic (the decoder's cache), mathtune:merged (--adapter "
                        "merged even in bf16), lm-eval:b32")
    p.add_argument("--path-timeout", type=float, default=None,
                   help="stop a path after this many seconds and record that it took longer")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--results", type=Path, default=HERE / "results_eval_speed.jsonl", help="append a row here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)
    if args.lm_eval_batch_size not in (None, "auto"):
        args.lm_eval_batch_size = int(args.lm_eval_batch_size)

    if args.worker:
        args.result.write_text(json.dumps(run_named(args.worker, args)))
        return

    from shapes import machine, resolve_model

    from mathtune.models.load import resolve_dtype

    args.model = resolve_model(args, resolve_dtype(args.dtype))
    args.passthrough = [
        "--model", args.model, "--data", args.data, "--limit", str(args.limit), "--max-new-tokens",
        str(args.max_new_tokens), "--batch-size", str(args.batch_size), "--batch1-sample", str(args.batch1_sample),
        "--dtype", args.dtype,
    ] + (["--lm-eval-batch-size", str(args.lm_eval_batch_size)] if args.lm_eval_batch_size else []) \
      + (["--adapter", args.adapter] if args.adapter else [])

    from mathtune.task.data import load_split
    from mathtune.task.score import score_completion

    results = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": " ".join(sys.argv),
               "model": args.shape and f"shape {args.shape} (random weights)" or args.model, "limit": args.limit,
               "max_new_tokens": args.max_new_tokens, "prompts": {}}
    paths = args.paths.split(",")
    for prompt in args.prompts.split(","):
        golds = [pr.gold for pr in load_split(args.data, "test")[: args.limit]]
        runs = {}
        for path in paths:
            print(f"[{prompt}] {path} ...", flush=True)
            r = run_worker(args, path, prompt)
            if "timed_out_s" in r:
                print(f"[{prompt}] {path}: still running after {r['timed_out_s']:.0f} s, stopped", flush=True)
                results.setdefault("timed_out", {}).setdefault(prompt, {})[path] = r["timed_out_s"]
                continue
            print(f"[{prompt}] {path}: {r['wall_s']:.2f} s", flush=True)
            runs[path] = r
            r["correct_strict"] = [score_completion(c, g)["correct_strict"] for c, g in zip(r["completions"], golds)]
        row = {}
        for path, r in runs.items():
            n = len(r["completions"])
            row[path] = {"problems": n, "wall_s": round(r["wall_s"], 2), "batch_size": r["batch_size"],
                         "generated_tokens": sum(r["tokens"]), "correct_strict": sum(r["correct_strict"]),
                         "problems_per_s": round(n / r["wall_s"], 4), "process_s": round(r["process_s"], 2)}
            for key in ("load_s", "decode_s"):
                if r.get(key):
                    row[path][key] = round(r[key], 2)
            if r.get("decode_s"):
                row[path]["decode_problems_per_s"] = round(n / r["decode_s"], 4)
            if "decoder" in r:
                row[path]["decoder"] = r["decoder"]
        for path, limit_s in results.get("timed_out", {}).get(prompt, {}).items():
            row[path] = {"timed_out_s": limit_s}
            if "mathtune" in runs:  # its process ran longer than this: the ratio of process times is at least this
                row[path]["wall_over_mathtune_at_least"] = round(limit_s / runs["mathtune"]["process_s"], 3)
        if "lm-eval" in runs:
            for path in (p for p in row if p != "batch1" and "wall_s" in row[p]):  # batch1 runs a sample, without its load
                row[path]["lm_eval_wall_over_this"] = round(runs["lm-eval"]["wall_s"] / runs[path]["wall_s"], 3)
        if "mathtune" in runs and "lm-eval" in runs:
            m, h = runs["mathtune"], runs["lm-eval"]
            row["speedup_vs_lm_eval"] = round(h["wall_s"] / m["wall_s"], 3)
            row["same_strict_verdict"] = sum(a == b for a, b in zip(m["correct_strict"], h["correct_strict"]))
            row["same_text_as_lm_eval"] = sum(a.strip() == b.strip() for a, b in zip(m["completions"], h["completions"]))
        compared = [p for p in runs if p != "batch1"]
        if len(compared) > 1:  # greedy agreement: the same completion text, problem by problem
            row["agreement"] = {f"{a} = {b}": {"same": sum(x == y for x, y in zip(runs[a]["completions"],
                                                                                  runs[b]["completions"])),
                                               "of": len(runs[a]["completions"])}
                                for i, a in enumerate(compared) for b in compared[i + 1:]}
        for path in compared:  # decode throughput against lm-eval's, each path's own
            lm = next((p for p in compared if p.startswith("lm-eval")), None)
            if lm and path != lm and runs[path].get("decode_s") and runs[lm].get("decode_s"):
                row[path]["decode_rate_over_" + lm] = round(runs[lm]["decode_s"] / runs[path]["decode_s"], 3)
        if "mathtune" in runs and "batch1" in runs:
            m, b = runs["mathtune"], runs["batch1"]
            k = len(b["completions"])
            same = sum(m["completions"][i] == b["completions"][i] and m["tokens"][i] == b["tokens"][i] for i in range(k))
            row["parity_with_batch1"] = {"same": same, "of": k, "share": same / k if k else None}
            row["batch1_s_per_problem"] = round(b["wall_s"] / k, 2) if k else None
        results["prompts"][prompt] = row
        print_table(prompt, row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    with args.results.open("a") as fh:
        fh.write(json.dumps(results) + "\n")


def print_table(prompt: str, row: dict) -> None:
    print(f"\n{prompt}: path | problems | batch | wall s (load incl.) | problems/s | decode s | decode problems/s"
          " | process s | new tokens | strict correct | lm-eval wall / this | decoder")
    for path, r in row.items():
        if isinstance(r, dict) and "wall_s" in r:
            print(f"  {path:20s} | {r['problems']:5d} | {str(r['batch_size']):>5s} | {r['wall_s']:9.2f} | "
                  f"{r['problems_per_s']:8.3f} | {r.get('decode_s', '-'):>8} | {r.get('decode_problems_per_s', '-'):>8} | "
                  f"{r['process_s']:8.2f} | {r['generated_tokens']:7d} | {r['correct_strict']:4d} | "
                  f"{r.get('lm_eval_wall_over_this', '')} | {r.get('decoder', '')}")
        elif isinstance(r, dict) and "timed_out_s" in r:
            bound = r.get("wall_over_mathtune_at_least")
            print(f"  {path:20s} | stopped after {r['timed_out_s']:.0f} s"
                  + (f" | wall / mathtune's at least {bound}" if bound else ""))
    for key in ("speedup_vs_lm_eval", "same_strict_verdict", "same_text_as_lm_eval", "parity_with_batch1",
                "batch1_s_per_problem", "agreement"):
        if key in row:
            print(f"  {key}: {row[key]}")


if __name__ == "__main__":
    main()
