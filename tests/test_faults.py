"""The faults a user meets, and what a run folder keeps through them: an interrupted
--overwrite, a full disk, a kill while a checkpoint is written, a torn checkpoint file, a run
folder moved elsewhere. After each, the same command (with --out at a copy where the fault left
the folder on a full disk) ends where an uninterrupted run ends: the same adapter, byte for
byte, and the same records."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trl

from mathtune import cli
from mathtune.core.runfiles import disk_full_message, is_disk_full
from mathtune.evaluation.request import EvalRequest, portable_path
from mathtune.train.checkpoints import checkpoint_problem, complete_checkpoints

# 11 steps, a checkpoint every 3 (3, 6, 9 and the last, 11); the best and the latest are kept.
SETTINGS = ["name=tiny", "data.train_limit=32", "train.epochs=1", "train.batch_size=2", "train.eval_every_steps=3",
            "train.report_to=[]", "eval.limit=6", "eval.max_new_tokens=12", "eval.batch_size=3"]


def run_argv(tmp_path: Path, model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    config = tmp_path / "tiny.yaml"
    config.write_text("seed: 3\n")
    settings = SETTINGS + [f"model.name_or_path={model}", f"data.source={data}", *extra]
    return ["run", str(config), "--out", str(out)] + [x for s in settings for x in ("--set", s)]


def outcome(run_dir: Path) -> dict:
    """What a finished run produced, timing aside: the adapter's bytes and the eval records."""
    return {"adapter": (run_dir / "adapter" / "adapter_model.safetensors").read_bytes(),
            **{name: (run_dir / "eval" / f"{name}.jsonl").read_text() for name in ("base", "tuned")}}


@pytest.fixture(scope="module", autouse=True)
def one_thread_throughout():
    """One thread in every run here, as in the killed run's own process: the same arithmetic, so
    the same adapter to the bit (and faster on a busy machine)."""
    from conftest import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, small_data_dir):
    """An uninterrupted run: what every faulted run must end with."""
    tmp = tmp_path_factory.mktemp("reference")
    out = tmp / "run"
    assert cli.main(run_argv(tmp, tiny_model_dir, small_data_dir, out)) == 0
    return out, outcome(out)


# --- a checkpoint counts only when every file in it is whole ---

def test_a_checkpoint_with_any_file_cut_short_is_passed_over(reference, tmp_path):
    run, _ = reference
    folder = tmp_path / "checkpoints"
    shutil.copytree(run / "train" / "checkpoints", folder)
    newest, passed = complete_checkpoints(folder)
    kept = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert newest == kept[-1] and len(kept) == 2 and passed == []
    for name, cut in (("trainer_state.json", 15), ("adapter_model.safetensors", -100), ("optimizer.pt", -10),
                      ("scheduler.pt", 0), ("rng_state.pth", -1)):
        path = kept[-1] / name
        whole = path.read_bytes()
        path.write_bytes(whole[:cut])
        problem = checkpoint_problem(kept[-1])
        assert problem is not None and problem.startswith(name), (name, problem)
        newest, passed = complete_checkpoints(folder)
        assert newest == kept[0] and passed[0][0] == kept[-1]
        path.write_bytes(whole)
    (kept[-1] / "optimizer.pt").unlink()
    assert checkpoint_problem(kept[-1]) == "optimizer.pt missing"


# --- identity by content, paths relative to the run folder ---

def test_identity_holds_the_adapter_content_and_paths_inside_the_folder_relative(reference, tmp_path):
    run, _ = reference
    moved = tmp_path / "elsewhere"
    shutil.copytree(run, moved)
    summary = json.loads((run / "eval" / "tuned.summary.json").read_text())
    assert summary["adapter"] == "adapter" and len(summary["adapter_sha256"]) == 64
    assert not any(str(run) in json.dumps(v) for k, v in summary.items() if k not in ("data", "model", "data_identity"))
    request = EvalRequest.with_config_defaults("m", adapter=str(moved / "adapter"))
    assert request.identity(moved)["adapter_sha256"] == summary["adapter_sha256"]
    (moved / "adapter" / "adapter_model.safetensors").write_bytes(b"other")  # a request made now sees other content
    request = EvalRequest.with_config_defaults("m", adapter=str(moved / "adapter"))
    assert request.identity(moved)["adapter_sha256"] != summary["adapter_sha256"]
    assert portable_path("openai/gsm8k", moved) == "openai/gsm8k"
    assert portable_path(str(tmp_path), moved) == str(tmp_path)  # outside the folder: as given


# --- an interrupted --overwrite ---

def interrupt_at_step(monkeypatch, step: int) -> None:
    """Ctrl-C at the start of a training step."""
    real = trl.SFTTrainer.training_step

    def step_then_interrupt(self, *args, **kwargs):
        if self.state.global_step == step:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(trl.SFTTrainer, "training_step", step_then_interrupt)


def test_an_interrupted_overwrite_never_keeps_the_old_tuned_evaluation(reference, tmp_path, tiny_model_dir,
                                                                       small_data_dir, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)  # a finished run, LoRA r 8
    r16 = run_argv(tmp_path, tiny_model_dir, small_data_dir, run, "lora.r=16")
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 5)  # checkpoint-3 of the r 16 run is written
        assert cli.main(r16 + ["--overwrite"]) == 130
    assert not (run / "eval").exists()  # set aside with the rest, before anything new was written
    assert not (run / ".replaced").exists()  # gone at the new run's first checkpoint
    assert cli.main(r16) == 0  # the same command, without --overwrite: resumes the r 16 run
    tuned = json.loads((run / "eval" / "tuned.summary.json").read_text())
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and tuned["adapter_settings"]["r"] == 16
    assert "Adapter (eval tuned): LoRA r 8" not in (run / "report.md").read_text()


def test_an_overwrite_interrupted_before_its_first_checkpoint_leaves_the_old_run_aside(
        reference, tmp_path, tiny_model_dir, small_data_dir, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    r16 = run_argv(tmp_path, tiny_model_dir, small_data_dir, run, "lora.r=16")
    with monkeypatch.context() as patch:
        interrupt_at_step(patch, 1)  # before the first checkpoint
        assert cli.main(r16 + ["--overwrite"]) == 130
    assert (run / ".replaced" / "eval" / "tuned.jsonl").is_file()  # nothing of the old run where a resume looks
    assert not (run / "eval").exists() and not (run / "adapter").exists()


# --- a full disk ---

def test_a_full_disk_is_recognised_in_each_library_s_words(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
                            tmp_path)  # torch's words, on a disk with room: another fault
    line = disk_full_message(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.json")))
    assert str(tmp_path / "x.json") in line and "free there" in line and "same command" in line


def mounted_tmpfs(folder: Path, size_kb: int) -> bool:
    folder.mkdir(parents=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def inject_enospc_at(monkeypatch, nth_save: int) -> None:
    """Where no tmpfs can be mounted: the nth checkpoint's optimizer file is left at 0 bytes and
    the write fails as a full disk does."""
    from transformers import Trainer

    real, calls = Trainer._save_optimizer_and_scheduler, []

    def save(self, output_dir):
        calls.append(output_dir)
        if len(calls) == nth_save:
            Path(output_dir, "optimizer.pt").write_bytes(b"")
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir, "optimizer.pt")))
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save)


@pytest.mark.parametrize("size_kb", [150, 300, 500])
def test_a_full_disk_is_one_line_and_a_copy_with_room_ends_as_an_uninterrupted_run(
        size_kb, reference, tmp_path, tiny_model_dir, small_data_dir, monkeypatch, capsys):
    import mathtune.pipeline

    disk = tmp_path / "disk"
    mounted = mounted_tmpfs(disk, size_kb)
    out = disk / "run"
    argv = run_argv(tmp_path, tiny_model_dir, small_data_dir, out)
    try:
        with monkeypatch.context() as patch:
            if mounted:  # the run's own check would refuse it before a byte is written: reach the disk's end
                patch.setattr(mathtune.pipeline, "check_free_space", lambda plan, run_dir: None)
            else:
                inject_enospc_at(patch, {150: 1, 300: 2, 500: 4}[size_kb])
            capsys.readouterr()
            assert cli.main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device writing " + str(out) in err[0], err
        assert "free there" in err[0] and "run the same command again" in err[0]
        moved = tmp_path / "room"
        shutil.copytree(out, moved, symlinks=True)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
    assert cli.main(run_argv(tmp_path, tiny_model_dir, small_data_dir, moved)) == 0
    assert outcome(moved) == reference[1]
    assert (moved / "report.html").is_file()


def test_a_run_that_cannot_fit_is_refused_before_it_writes(tmp_path, tiny_model_dir, small_data_dir, monkeypatch,
                                                            capsys):
    import mathtune.pipeline

    out = tmp_path / "run"
    monkeypatch.setattr(mathtune.pipeline, "free_bytes", lambda path: 200_000)
    assert cli.main(run_argv(tmp_path, tiny_model_dir, small_data_dir, out)) == 1
    err = capsys.readouterr().err.strip()
    assert "not enough space for this run" in err and "200 KB is free" in err and "checkpoints 3 x" in err
    assert not (out / "train").exists()


# --- a kill while a checkpoint is written, a torn checkpoint file ---

KILL_IN_CHECKPOINT = """
import os, signal, sys
from transformers import Trainer
from mathtune.cli import main

real = Trainer._save_optimizer_and_scheduler

def save_then_die(self, output_dir):
    if self.state.global_step == 6:  # the adapter of checkpoint-6 is written, its optimizer is not
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, output_dir)

Trainer._save_optimizer_and_scheduler = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_while_a_checkpoint_is_written_then_a_move_ends_as_an_uninterrupted_run(
        reference, tmp_path, tiny_model_dir, small_data_dir, capsys):
    out = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(KILL_IN_CHECKPOINT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(script), *run_argv(tmp_path, tiny_model_dir, small_data_dir, out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint_problem(out / "train" / "checkpoints" / "checkpoint-6") is not None
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    capsys.readouterr()
    assert cli.main(run_argv(tmp_path, tiny_model_dir, small_data_dir, moved)) == 0
    said = capsys.readouterr()
    assert "checkpoint-6 skipped: trainer_state.json, optimizer.pt, scheduler.pt missing" in said.out, said.out
    assert "resuming from " + str(moved / "train" / "checkpoints" / "checkpoint-3") in said.out
    assert outcome(moved) == reference[1]


def test_a_torn_trainer_state_in_the_last_checkpoint_resumes_from_the_one_before(
        reference, tmp_path, tiny_model_dir, small_data_dir, capsys):
    """As a power cut after the last step's checkpoint leaves it: the adapter not yet saved, that
    checkpoint's trainer_state.json cut short. The copy resumes from the one before, without a traceback."""
    moved = tmp_path / "copy"
    shutil.copytree(reference[0], moved)
    for name in ("adapter", "eval", "figures"):
        shutil.rmtree(moved / name)
    for name in ("train/summary.json", "analysis.json", "report.md", "report.html"):
        (moved / name).unlink()
    kept = sorted((moved / "train" / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    (kept[-1] / "trainer_state.json").write_text('{"best_metric": ')
    capsys.readouterr()
    assert cli.main(run_argv(tmp_path, tiny_model_dir, small_data_dir, moved)) == 0
    said = capsys.readouterr()
    assert f"{kept[-1].name} skipped: trainer_state.json is cut short" in said.out and "Traceback" not in said.err
    assert f"resuming from {kept[0]}" in said.out
    assert outcome(moved) == reference[1]


def test_a_finished_run_moved_elsewhere_reuses_every_stage(reference, tmp_path, tiny_model_dir, small_data_dir,
                                                          capsys):
    moved = tmp_path / "moved"
    shutil.copytree(reference[0], moved)
    (moved / "report.md").unlink()
    capsys.readouterr()
    assert cli.main(run_argv(tmp_path, tiny_model_dir, small_data_dir, moved)) == 0
    said = capsys.readouterr().out
    assert "training already finished" in said and "eval: base, tuned already finished" in said
    assert outcome(moved) == reference[1] and (moved / "report.md").is_file()


def test_the_free_space_check_refuses_what_does_not_fit_and_warns_when_close(tmp_path, monkeypatch, capsys):
    import mathtune.pipeline as pipeline

    from types import SimpleNamespace

    plan = SimpleNamespace(disk_bytes={"adapter": 40_000, "checkpoints": 600_000, "records": 60_000,
                                       "report_and_logs": 300_000, "total": 1_000_000, "checkpoint": 200_000,
                                       "checkpoints_at_once": 3})  # the plan's one part the check reads
    run = tmp_path / "run"
    for free, refused, warned in ((900_000, True, False), (1_200_000, False, True), (2_000_000, False, False)):
        monkeypatch.setattr(pipeline, "free_bytes", lambda path: free)
        if refused:
            with pytest.raises(pipeline.MathtuneError, match=r"about 1\.0 MB more .* and 900 KB is free"):
                pipeline.check_free_space(plan, run)
        else:
            pipeline.check_free_space(plan, run)
        assert ("close to full" in capsys.readouterr().out) == warned
    run.mkdir()
    (run / "held").write_bytes(b"\0" * 300_000)  # a resumed run: what its folder holds is written already
    monkeypatch.setattr(pipeline, "free_bytes", lambda path: 900_000)
    pipeline.check_free_space(plan, run)


def test_a_run_log_line_the_disk_cannot_take_prints_no_traceback(tmp_path, capsys):
    import logging

    from mathtune.core.terminal import run_log

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with run_log(tmp_path) as handler:
        handler.stream = type("FullDisk", (), {"write": full, "flush": lambda self: None, "close": lambda self: None})()
        logging.getLogger("transformers").warning("a line for run.log")
    assert capsys.readouterr().err == ""
