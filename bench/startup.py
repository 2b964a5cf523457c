"""Where `mathtune eval` spends its time before the first decoding step, and `mathtune eval
--limit 1` against a plain transformers script that does the same work, back to back.

    python bench/startup.py --model PATH [--data ../shared/gsm8k] [--prompt chat] [--limit 1]
        [--max-new-tokens 8] [--repeat 3] [--eval-args "--batch-size 8"] [--also-src DIR] [--json OUT.json]
    python bench/startup.py --shape tiny --tokenizer ../shared/qwen2.5-tokenizer

Two measurements, each run in fresh processes (a start-up is only measured cold in its own process):

breakdown  `mathtune eval` run through mathtune's own command line (mathtune.cli.main) in one
           process, with timers around the steps it takes: importing torch, initialising CUDA
           (on a GPU), importing transformers and mathtune, reading the data, rendering the
           prompts, loading the tokenizer, loading the weights (from_pretrained), any move or
           cast of the loaded model (Module.to), tokenizing, the model's forward calls (the
           first, the other prefills, the decoding steps), and on a GPU the fixed-slot decoder's
           eager warm-up steps, its CUDA-graph capture and the first replay. A timed call inside
           another counts for its own row only. The start-up ends with the first replay of the
           captured step (else with the first decoding step); the rows add up to it, `other`
           being what no timer covers. On a GPU every timer synchronises, so a kernel's time
           lands in the step that launched it.
versus     the whole `mathtune eval --limit N --max-new-tokens M --quiet` command against a plain
           script (import torch and transformers, load the tokenizer and the model straight onto
           the device in its dtype, render the first problem's chat prompt, `generate` M tokens):
           --repeat rounds, the order rotating; the medians and their ratio. --also-src adds
           `mathtune eval` from another source tree to the rotation (before/after a change).

Timings on a shared machine are noisy: compare the ratio of paths run back to back, not
absolute seconds across runs.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before any heavy import: a worker's start-up counts from here

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The plain-transformers reference: what a user would write to run one problem.
PLAIN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
t_import = time.perf_counter()
model_dir, data_dir, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map=device).eval()
t_load = time.perf_counter()
with open(f"{data_dir}/test.jsonl") as fh:
    question = json.loads(fh.readline())["question"]
text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
enc = tok(text, return_tensors="pt", add_special_tokens=False).to(device)
out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False)
text = tok.decode(out[0, enc["input_ids"].shape[1]:])
t_end = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "load_s": t_load - t_import, "generate_s": t_end - t_load}))
"""

# Rows of the breakdown, in the order a run meets them.
ORDER = ["import torch", "CUDA initialisation", "import transformers", "import mathtune", "read data",
         "render prompts", "load tokenizer", "load weights (from_pretrained)", "move/cast model (Module.to)",
         "tokenize prompts", "first forward", "other prefill forwards", "first decode step", "warm-up decode steps",
         "graph capture", "first graph replay"]


# ------------------------------------------------------------------------------ breakdown worker


class Timers:
    """Wall time per label, exclusive: a timed call made inside another gives its time to its
    own label, not to the outer one's. A label function that returns None opens no timer (the
    call counts for whatever runs around it)."""

    def __init__(self, sync):
        self.sync = sync
        self.spans: list[tuple[str, float, float, float]] = []  # label, start, end, exclusive seconds
        self.stack: list[list] = []  # label, start, seconds of the timed calls inside it

    def span(self, label: str | None, fn, *args, **kwargs):
        if label is None:
            return fn(*args, **kwargs)
        self.stack.append([label, time.perf_counter(), 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            self.sync()
            label, start, inner = self.stack.pop()
            end = time.perf_counter()
            self.spans.append((label, start, end, end - start - inner))
            if self.stack:
                self.stack[-1][2] += end - start

    def seen(self, label: str) -> bool:
        return any(s[0] == label for s in self.spans) or any(s[0] == label for s in self.stack)

    def wrap(self, owner, attr: str, label):
        """Replace owner.attr by a timed call; label may be a function of the call's arguments."""
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            name = label(*args, **kwargs) if callable(label) else label
            return self.span(name, original, *args, **kwargs)

        setattr(owner, attr, timed)


def breakdown_worker(args) -> dict:
    import importlib

    marks = []

    def mark(label):
        marks.append((label, time.perf_counter()))

    start = time.perf_counter()
    import torch
    mark("import torch")
    gpu = torch.cuda.is_available()
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    if gpu:
        torch.cuda.init()
        torch.empty(1, device="cuda")
        sync()
        mark("CUDA initialisation")
    import transformers
    import transformers.modeling_utils  # noqa: F401  (transformers imports lazily; this is what loading needs)
    mark("import transformers")
    for name in ("mathtune.cli", "mathtune.evaluation.evaluate", "mathtune.models.load", "mathtune.models.engine"):
        importlib.import_module(name)
    mark("import mathtune")
    spans = [(label, t0, t1, t1 - t0) for (label, t1), t0 in zip(marks, [start] + [t for _, t in marks[:-1]])]

    from mathtune import cli
    from mathtune.evaluation import evaluate as evaluate_module
    from mathtune.models import load as load_module
    from mathtune.task.prompts import PromptBuilder

    timers = Timers(sync)
    timers.wrap(evaluate_module, "load_problems", "read data")
    timers.wrap(PromptBuilder, "render", "render prompts")
    timers.wrap(load_module, "load_tokenizer", "load tokenizer")
    timers.wrap(transformers.tokenization_utils_base.PreTrainedTokenizerBase, "__call__", "tokenize prompts")
    timers.wrap(torch.nn.Module, "to", "move/cast model (Module.to)")
    auto = transformers.AutoModelForCausalLM
    from_pretrained = auto.from_pretrained

    def forward_label(*a, **kw):
        if timers.stack:  # inside a timed decoding step or a graph capture: theirs
            return None
        ids = kw.get("input_ids", a[0] if a else None)
        if ids is not None and ids.shape[-1] == 1:
            return "decode steps" if timers.seen("first decode step") else "first decode step"
        return "other prefill forwards" if timers.seen("first forward") else "first forward"

    def loaded(*a, **kw):
        model = from_pretrained(*a, **kw)
        timers.wrap(model, "forward", forward_label)
        return model

    auto.from_pretrained = loaded
    timers.wrap(auto, "from_pretrained", "load weights (from_pretrained)")
    try:
        from mathtune.models import static_cache
    except ImportError:  # a tree without the static-cache decoder
        static_cache = None
    if static_cache is not None:
        def step_label(slots):
            if slots.steps == 0:
                return "first decode step"
            if slots.run is None and slots.mask.is_cuda:  # eager warm-up steps, then the one that captures
                return "warm-up decode steps" if slots.steps < static_cache.WARMUP_STEPS else "first graph replay"
            return "decode steps"

        timers.wrap(static_cache, "capture_step", "graph capture")
        timers.wrap(static_cache.Slots, "step", step_label)

    with tempfile.TemporaryDirectory() as out:
        cmd = ["eval", "--model", args.model, "--data", args.data, "--prompt", args.prompt, "--limit",
               str(args.limit), "--max-new-tokens", str(args.max_new_tokens), "--out", out, "--quiet",
               *args.eval_args.split()]
        code = cli.main(cmd)
    end = time.perf_counter()
    if code != 0:
        raise SystemExit(f"mathtune eval failed with exit code {code}")
    spans += timers.spans
    # Start-up ends where decoding runs as it will to the end: after the first replay of a
    # captured step, else after the first decoding step.
    ready = min((t1 for label, _, t1, _ in spans if label == "first graph replay"), default=None)
    if ready is None:
        ready = min((t1 for label, _, t1, _ in spans if label == "first decode step"), default=end)
    rows: dict[str, dict] = {}
    for label, _, t1, own in spans:
        if t1 <= ready and label != "decode steps":
            row = rows.setdefault(label, {"s": 0.0, "calls": 0})
            row["s"] += own
            row["calls"] += 1
    covered = sum(r["s"] for r in rows.values())
    return {"rows": {k: round(v["s"], 4) for k, v in rows.items()},
            "calls": {k: v["calls"] for k, v in rows.items()},
            "before_worker_s": round(start - _T0, 4),  # this script's own imports
            "until_first_step_end_s": round(ready - start, 4),
            "other_s": round(ready - start - covered, 4),
            "after_first_step_s": round(end - ready, 4),
            "total_s": round(end - start, 4), "device": "cuda" if gpu else "cpu",
            "decoder_steps": sum(1 for s in spans if s[0] in ("decode steps", "first decode step",
                                                               "warm-up decode steps", "first graph replay"))}


# ------------------------------------------------------------------------------ driver


def run(cmd: list[str], timeout: float | None = None) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, proc


def breakdown(args) -> dict:
    """--repeat fresh processes; per row the median."""
    results = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "b.json"
            cmd = [sys.executable, __file__, "--worker", "--result", str(out)] + args.passthrough
            wall, _ = run(cmd, timeout=args.timeout)
            r = json.loads(out.read_text())
        r["process_s"] = round(wall, 4)
        # the interpreter's start (~0.03 s) and its exit (tearing down torch and transformers)
        r["interpreter_s"] = round(wall - r["total_s"], 4)
        results.append(r)
    labels = [k for k in ORDER if any(k in r["rows"] for r in results)]
    labels += sorted({k for r in results for k in r["rows"]} - set(labels))
    med = {k: round(statistics.median(r["rows"].get(k, 0.0) for r in results), 3) for k in labels}
    summary = {"rows": med, "calls": {k: max(r["calls"].get(k, 0) for r in results) for k in labels}}
    for key in ("interpreter_s", "other_s", "until_first_step_end_s", "after_first_step_s", "total_s", "process_s"):
        summary[key] = round(statistics.median(r[key] for r in results), 3)
    summary["runs"] = results
    summary["device"] = results[0]["device"]
    return summary


def versus(args) -> dict:
    """`mathtune eval --limit N` against the plain script (and against mathtune from --also-src),
    the order rotating from round to round; per command the median."""
    import os

    def eval_cmd(out: str, src: str | None) -> list[str]:
        env = ["env", f"PYTHONPATH={src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"] if src else []
        return env + [sys.executable, "-m", "mathtune", "eval", "--model", args.model, "--data", args.data,
                      "--prompt", args.prompt, "--limit", str(args.limit), "--max-new-tokens",
                      str(args.max_new_tokens), "--out", out, "--quiet", *args.eval_args.split()]

    names = ["mathtune", "plain"] + (["mathtune (--also-src)"] if args.also_src else [])
    times: dict[str, list[float]] = {name: [] for name in names}
    inner = []
    for i in range(args.repeat):
        for name in names[i % len(names):] + names[:i % len(names)]:
            with tempfile.TemporaryDirectory() as out:
                cmd = ([sys.executable, "-c", PLAIN, args.model, args.data, str(args.max_new_tokens)] if name == "plain"
                       else eval_cmd(out, args.also_src if name != "mathtune" else None))
                wall, proc = run(cmd, timeout=args.timeout)
            times[name].append(round(wall, 3))
            if name == "plain":
                inner.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {name: statistics.median(t) for name, t in times.items()}
    result = {"runs_s": times, "median_s": {k: round(v, 3) for k, v in med.items()},
              "ratio": round(med["mathtune"] / med["plain"], 3),
              "plain_inner": {k: round(statistics.median(r[k] for r in inner), 3) for k in inner[0]}}
    if args.also_src:
        result["also_src"] = args.also_src
        result["also_src_ratio"] = round(med["mathtune (--also-src)"] / med["plain"], 3)
    return result


def print_breakdown(b: dict) -> None:
    print(f"\nstart-up of `mathtune eval` ({b['device']}), median of {len(b['runs'])} fresh processes:")
    print(f"  {'step':34s} {'seconds':>8s}  calls")
    print(f"  {'interpreter start and exit':34s} {b['interpreter_s']:8.3f}")
    for label, s in b["rows"].items():
        print(f"  {label:34s} {s:8.3f}  {b['calls'][label]}")
    print(f"  {'other (no timer)':34s} {b['other_s']:8.3f}")
    print(f"  {'= start-up':34s} {b['until_first_step_end_s']:8.3f}  "
          "(to the end of the first graph replay, else of the first decoding step)")
    print(f"  {'the rest (decoding, records)':34s} {b['after_first_step_s']:8.3f}")
    print(f"  {'process wall time':34s} {b['process_s']:8.3f}")


def print_versus(v: dict, args) -> None:
    print(f"\n`mathtune eval --limit {args.limit} --max-new-tokens {args.max_new_tokens}` against the plain script, "
          f"{args.repeat} rounds back to back, the order rotating:")
    for name, runs in v["runs_s"].items():
        print(f"  {name:22s} {v['median_s'][name]:7.3f} s  (runs {runs})")
    print(f"  plain script inside: {v['plain_inner']}")
    print(f"  mathtune / plain       {v['ratio']:7.3f}x")
    if "also_src_ratio" in v:
        print(f"  --also-src / plain     {v['also_src_ratio']:7.3f}x  ({v['also_src']})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if "--worker" in sys.argv:  # its clock starts before torch is imported: no shapes module (it imports torch)
        p.add_argument("--model")
        p.add_argument("--data")
    else:
        sys.path.insert(0, str(HERE))
        from shapes import add_model_arguments

        add_model_arguments(p)
    p.add_argument("--prompt", default="chat")
    p.add_argument("--limit", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--eval-args", default="", help="more `mathtune eval` options, one string")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--also-src", default=None,
                   help="another copy of mathtune's src/ (e.g. `git archive REV src | tar -x -C DIR`), run in the "
                        "same rotation: before and after a change, back to back")
    p.add_argument("--only", choices=("breakdown", "versus"), default=None)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--results", type=Path, default=HERE / "results_startup.jsonl", help="append a row here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.result.write_text(json.dumps(breakdown_worker(args)))
        return

    from shapes import machine, resolve_model

    from mathtune.models.load import resolve_dtype

    args.model = resolve_model(args, resolve_dtype(args.dtype))
    args.passthrough = ["--model", args.model, "--data", args.data, "--prompt", args.prompt, "--limit",
                        str(args.limit), "--max-new-tokens", str(args.max_new_tokens), f"--eval-args={args.eval_args}"]
    import mathtune

    results = {"date": datetime.date.today().isoformat(), "machine": machine(), "command": " ".join(sys.argv),
               "mathtune_src": str(Path(mathtune.__file__).parent.parent),
               "model": args.shape and f"shape {args.shape} (random weights)" or args.model, "prompt": args.prompt,
               "limit": args.limit, "max_new_tokens": args.max_new_tokens, "eval_args": args.eval_args}
    if args.only in (None, "breakdown"):
        results["breakdown"] = breakdown(args)
        print_breakdown(results["breakdown"])
    if args.only in (None, "versus"):
        results["versus"] = versus(args)
        print_versus(results["versus"], args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    with args.results.open("a") as fh:
        fh.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
