"""What the terminal shows, as the README promises it: the libraries' warnings never reach it
(they go to RUN_DIR/run.log where there is one), and `--quiet` prints errors and the final
paths only, in every command that has it."""

from __future__ import annotations

import json
from pathlib import Path
import os
import re
import subprocess
import sys

import pytest

from conftest import max_length_dropping_some, training_lengths
from mathtune.cli import build_parser, main

# What transformers, PEFT and bitsandbytes print when nobody stops them.
LIBRARY_NOISE = ("Warning", "warnings.warn", "You are using a model of type", "Failed to load")


def _mathtune(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    """A real `python -m mathtune` process, with Python's warnings on and no verbosity preset."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONWARNINGS", "TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, "-m", "mathtune", *argv], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=600, cwd=cwd)


def _stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in re.split(r"[\r\n]", proc.stderr) if line.strip()]


def test_probe_and_export_keep_library_warnings_off_the_terminal(trained_run, tiny_model_dir, small_data_dir,
                                                                   tmp_path):
    """Loading a model with an adapter (PEFT's use of a renamed transformers property) and reading
    a base config for export made transformers warn on stderr; bitsandbytes logs a warning when
    imported on some CPUs. None of it may reach the terminal; the progress bars are all there is."""
    # First among the 8 problems, one the probe skips (2 is also the 'half'), so the line has a
    # skipped count on any data: none of the demo problems is skipped.
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text((small_data_dir / "train.jsonl").read_text())
    skipped_problem = {"question": "Tom has 2 apples and eats half of them. How many apples are left?",
                       "answer": "Half of 2 is 2/2=<<2/2=1>>1 apple.\n#### 1"}
    test_lines = (small_data_dir / "test.jsonl").read_text().splitlines()[:7]
    (data / "test.jsonl").write_text("\n".join([json.dumps(skipped_problem), *test_lines]) + "\n")
    probe = _mathtune("probe", "--model", str(tiny_model_dir), "--adapter", str(trained_run / "adapter"),
                      "--data", str(data), "--limit", "8", "--max-new-tokens", "4", "--name", "m",
                      "--out", str(tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr[-2000:]
    lines = _stderr_lines(probe)
    assert not [line for line in lines if any(noise in line for noise in LIBRARY_NOISE)], probe.stderr
    assert all(line.startswith("eval m") for line in lines), lines  # the evaluation's progress, nothing else

    # The probe's line gives the kept count and the skipped one, as probe/summary.json counts them.
    summary = json.loads((tmp_path / "probe" / "probe" / "summary.json").read_text())
    counts = summary["by_kind"]["numbers"]
    said = next(line for line in probe.stdout.splitlines() if line.startswith("probe: "))
    assert said.startswith(f"probe: {counts['variants']} variant{'' if counts['variants'] == 1 else 's'} "
                           f"of {counts['kept']} problem{'' if counts['kept'] == 1 else 's'} in ")
    skipped = summary["problems"] - counts["kept"]
    assert skipped > 0 and f"{skipped} of {summary['problems']} skipped (" in said

    export = _mathtune("export", str(trained_run), "--merged", str(tmp_path / "merged"))
    assert export.returncode == 0, export.stderr[-2000:]
    assert export.stderr.strip() == "", export.stderr
    assert export.stdout.splitlines()[-1] == f"merged model: {tmp_path / 'merged'}"


# --- --quiet: errors and the final paths -----------------------------------------------------------

def _settings(tiny_model_dir, small_data_dir, *extra: str) -> list[str]:
    settings = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=16",
                "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=1", "train.report_to=[]",
                "eval.limit=2", "eval.max_new_tokens=4", *extra]
    return [x for s in settings for x in ("--set", s)]


def _dropping(command: str, out: Path, tiny_model_dir, small_data_dir, capfd, *flags: str) -> tuple[str, str]:
    """`command` on a config whose max_length drops examples (the line that says so is
    progress, not a final path); what it printed on stdout and stderr."""
    config = out.parent / "c.yaml"
    config.write_text("name: q\n")
    max_length = max_length_dropping_some(training_lengths(tiny_model_dir, small_data_dir))
    assert main([command, str(config), "--out", str(out), *flags,
                 *_settings(tiny_model_dir, small_data_dir, f"data.max_length={max_length}")]) == 0
    assert json.loads((out / "train" / "summary.json").read_text())["dropped_too_long"]["train"] > 0
    return capfd.readouterr()


def test_train_quiet_prints_the_adapter_path_and_nothing_else(tiny_model_dir, small_data_dir, tmp_path, capfd,
                                                               one_thread):
    out = tmp_path / "t"
    printed, err = _dropping("train", out, tiny_model_dir, small_data_dir, capfd, "--quiet")
    assert printed.splitlines() == [f"adapter: {out / 'adapter'}"] and err.strip() == ""
    # Without --quiet the same command says what it dropped, and ends with the same path.
    printed, _ = _dropping("train", tmp_path / "t2", tiny_model_dir, small_data_dir, capfd)
    assert "dropped" in printed and printed.splitlines()[-1] == f"adapter: {tmp_path / 't2' / 'adapter'}"


def test_run_quiet_prints_the_report_paths_only(tiny_model_dir, small_data_dir, tmp_path, capfd, one_thread):
    out = tmp_path / "r"
    printed, err = _dropping("run", out, tiny_model_dir, small_data_dir, capfd, "--quiet")
    assert printed.splitlines() == [f"report: {out / 'report.md'}", f"report: {out / 'report.html'}"]
    assert err.strip() == ""


def test_eval_quiet_prints_the_record_paths_and_json_only_the_json(tiny_model_dir, small_data_dir, tmp_path, capfd,
                                                                   one_thread):
    common = ["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "2",
              "--max-new-tokens", "4", "--out", str(tmp_path), "--name", "m"]
    assert main(common + ["--quiet"]) == 0
    printed, err = capfd.readouterr()
    assert printed.splitlines() == [f"records: {tmp_path / 'eval' / 'm.jsonl'}",
                                    f"summary: {tmp_path / 'eval' / 'm.summary.json'}"]
    assert err.strip() == ""
    assert main(common + ["--quiet"]) == 0  # finished already: the same final paths
    assert capfd.readouterr().out.splitlines()[-2:] == printed.splitlines()
    assert main(common + ["--json"]) == 0
    printed = capfd.readouterr().out
    assert len(printed.splitlines()) == 1 and json.loads(printed)["n"] == 2


def test_probe_quiet_prints_the_report_paths_only(tiny_model_dir, small_data_dir, tmp_path, capfd, one_thread):
    out = tmp_path / "p"
    assert main(["probe", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "4",
                 "--max-new-tokens", "4", "--name", "m", "--out", str(out), "--quiet"]) == 0
    printed, err = capfd.readouterr()
    assert printed.splitlines() == [f"report: {out / 'report.md'}", f"report: {out / 'report.html'}"]
    assert err.strip() == ""


def test_plan_offers_no_output_folder_and_no_quiet(tmp_path, capsys):
    """`mathtune plan` writes nothing and its printout is its result: --out and --quiet, which
    did nothing, are gone from it (--json is the plan for a machine)."""
    plan = build_parser()._subparsers._group_actions[0].choices["plan"]
    options = {o for action in plan._actions for o in action.option_strings}
    assert {"--out", "--quiet"}.isdisjoint(options) and {"--json", "--device", "--set"} <= options
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    for flag in (["--quiet"], ["--out", str(tmp_path / "o")]):
        with pytest.raises(SystemExit) as stop:
            main(["plan", str(config), *flag])
        assert stop.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    for command in ("run", "train", "eval", "probe"):  # the commands that do write keep both
        sub = build_parser()._subparsers._group_actions[0].choices[command]
        assert {"--out", "--quiet"} <= {o for action in sub._actions for o in action.option_strings}


def test_warnings_stay_off_the_terminal_after_a_runs_log_closes(tmp_path):
    """A sweep runs several runs in one command: the first run's run.log closing must not hand
    the second run's library warnings back to the terminal. In a process of its own: pytest
    records warnings itself, so stderr shows them only outside it."""
    import subprocess
    import sys

    code = ("import sys, warnings\n"
            "from pathlib import Path\n"
            "from mathtune.core import terminal\n"
            "with terminal.quiet_libraries():\n"
            "    with terminal.run_log(Path(sys.argv[1])):\n"
            "        warnings.warn('inside the first run', FutureWarning)\n"
            "    warnings.warn('between runs', FutureWarning)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "between runs" not in done.stderr
    assert "inside the first run" in (tmp_path / "a" / "run.log").read_text()
