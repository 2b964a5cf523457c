"""Crashes cost nothing but time, the same seed gives the same bytes, and evaluation memory
does not grow per problem. Every test here runs the real `mathtune` command in a process
of its own, on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

# The fields that measure the machine rather than the experiment: wall times, rates, the
# plan's "actual" column (time and cost as measured) and peak memory. Two runs of one seed
# differ in these alone.
MACHINE_FIELDS = {"wall_time_s", "wall_time_min", "tokens_per_s", "problems_per_s", "elapsed_s", "actual",
                  "peak_memory_gib", "sampling_wall_time_s", "wall_time_per_step_s",
                  "missed_by"}  # the plan's miss: from the actual figure, a machine measurement


def _mathtune(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mathtune", *argv], capture_output=True, text=True, env=ENV,
                          stdin=subprocess.DEVNULL, **kwargs)


def _eval_argv(model: Path, data: Path, out: Path, limit: int) -> list[str]:
    return ["eval", "--model", str(model), "--data", str(data), "--limit", str(limit), "--max-new-tokens", "24",
            "--batch-size", "2", "--out", str(out), "--name", "k", "--quiet"]


def _kill_after(argv: list[str], partial: Path, lines: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mathtune", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if partial.is_file() and len(partial.read_bytes().splitlines()) >= lines:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, "the evaluation finished before it could be killed"


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, small_data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    assert _mathtune(*_eval_argv(tiny_model_dir, small_data_dir, out, 12)).returncode == 0
    return out / "eval" / "k.jsonl"


def test_sigkill_between_batches_leaves_the_same_records(uninterrupted, tiny_model_dir, small_data_dir, tmp_path):
    argv = _eval_argv(tiny_model_dir, small_data_dir, tmp_path, 12)
    partial = tmp_path / "eval" / "k.partial.jsonl"
    _kill_after(argv, partial, 4)  # two batches of two written, the third decoding
    kept = partial.read_bytes()
    assert kept.endswith(b"\n") and 4 <= kept.count(b"\n") < 12
    assert _mathtune(*argv).returncode == 0
    assert (tmp_path / "eval" / "k.jsonl").read_bytes() == uninterrupted.read_bytes()
    assert not partial.exists() and not list((tmp_path / "eval").glob(".*.tmp"))


def test_sigkill_while_a_record_is_written_leaves_the_same_records(uninterrupted, tiny_model_dir, small_data_dir,
                                                                   tmp_path):
    """A kill in the middle of a line's write leaves the line torn. Hitting the microseconds of
    one write() with a signal is luck, so the kill lands between records and the torn tail the
    write would have left is then appended by hand: half of the next record, no newline."""
    argv = _eval_argv(tiny_model_dir, small_data_dir, tmp_path, 12)
    partial = tmp_path / "eval" / "k.partial.jsonl"
    _kill_after(argv, partial, 2)
    whole = uninterrupted.read_text().splitlines()
    with partial.open("a") as fh:
        fh.write(whole[-1][: len(whole[-1]) // 2])
    assert _mathtune(*argv).returncode == 0
    assert (tmp_path / "eval" / "k.jsonl").read_bytes() == uninterrupted.read_bytes()


def _run(tiny_model_dir: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    sets = [f"model.name_or_path={tiny_model_dir}", f"data.source={data}", "data.train_limit=12",
            "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=1", "eval.limit=6",
            "eval.max_new_tokens=12", "eval.batch_size=3", "name=same"]
    config = out.parent / f"{out.name}.yaml"
    config.write_text("seed: 7\n")
    argv = ["run", str(config), "--out", str(out), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    # Each run plans from the shipped rates, not from what the other one measured on this machine.
    rates = out.parent / f"{out.name}-rates-{len(list(out.parent.glob('*-rates-*')))}.json"
    return subprocess.run([sys.executable, "-m", "mathtune", *argv], capture_output=True, text=True,
                          env={**ENV, "MATHTUNE_RATES": str(rates)}, stdin=subprocess.DEVNULL)


def _differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{path}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def test_two_runs_of_one_seed_are_the_same(tiny_model_dir, small_data_dir, tmp_path):
    """Split, exemplars, LoRA initial weights, training and greedy completions: all seeded, so
    two whole runs leave byte-identical records and adapters, and one analysis.json apart from
    the named wall-time fields."""
    run, kept = tmp_path / "run", []
    for first in (True, False):  # the same folder twice: the paths a run records are the same
        proc = _run(tiny_model_dir, small_data_dir, run)
        assert proc.returncode == 0, proc.stderr
        if first:
            run.rename(tmp_path / "one")
    one, two = tmp_path / "one", run
    for name in ("eval/base.jsonl", "eval/tuned.jsonl", "adapter/adapter_model.safetensors"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name

    def metrics(folder: Path) -> list[dict]:
        rows = [json.loads(line) for line in (folder / "train" / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k not in MACHINE_FIELDS} for row in rows]

    assert metrics(one) == metrics(two)
    from mathtune.analysis.analyze import CHECKSUM_KEY

    analyses = [json.loads((run / "analysis.json").read_text()) for run in (one, two)]
    for a in analyses:
        a.pop(CHECKSUM_KEY)  # of the whole text, the machine fields included
    differ = _differences(*analyses)
    # A machine field, or a part of one (the plan's miss holds its ratio and percent).
    machine = [d for d in differ if MACHINE_FIELDS & set(d.split("."))]
    assert differ == machine, f"not machine measurements: {sorted(set(differ) - set(machine))}"


def test_lora_initial_weights_follow_the_seed(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    def initial(seed: int) -> dict:
        set_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
        return {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}

    a, b, c = initial(3), initial(3), initial(4)
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a if "lora_A" in k)


def _peak_rss_mb(argv: list[str]) -> float:
    """Peak resident memory of one `mathtune` process, from the kernel's own count."""
    code = ("import resource, runpy, sys; sys.argv = ['mathtune'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('mathtune', run_name='__main__')\n"
            "finally:\n    print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=ENV,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("PEAK_RSS_KB"))
    return int(line.split()[1]) / 1024


@pytest.mark.full_gsm8k
def test_memory_does_not_grow_per_problem(tiny_model_dir, gsm8k_dir, tmp_path, record_property):
    """The whole 1,319-problem test set against its first 100: beyond the records themselves
    (a few kB a problem, held until the final file is written), memory must not grow."""
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(gsm8k_dir), "--max-new-tokens", "8",
            "--batch-size", "32", "--quiet"]
    small = _peak_rss_mb(argv + ["--limit", "100", "--out", str(tmp_path / "small")])
    whole = _peak_rss_mb(argv + ["--out", str(tmp_path / "whole")])
    records = tmp_path / "whole" / "eval"
    record_bytes = sum(p.stat().st_size for p in records.glob("*.jsonl"))
    assert len((records / next(p.name for p in records.glob("*.jsonl"))).read_text().splitlines()) == 1319
    record_property("peak_rss_mb_100_problems", round(small, 1))
    record_property("peak_rss_mb_1319_problems", round(whole, 1))
    print(f"peak RSS: {small:.1f} MB for 100 problems, {whole:.1f} MB for 1,319 "
          f"(records {record_bytes / 2**20:.1f} MB)")
    # Held as Python dicts a record takes several times its JSON size; allow 8x, plus 64 MB of
    # allocator slack. A leak of a prompt's cache or logits per problem would be far above.
    assert whole - small < 8 * record_bytes / 2**20 + 64
