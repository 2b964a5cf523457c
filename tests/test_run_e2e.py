"""`mathtune run` end to end on the tiny model: the exact files a run leaves, report numbers
traceable to analysis.json, stage skipping on a re-run, and `mathtune report` alone."""

import json
import re

import pytest

from mathtune.cli import main

EXPECTED_FILES = {
    "config.yaml",
    "train/metrics.jsonl",
    "train/summary.json",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "adapter/README.md",  # PEFT's model card
    "eval/base.jsonl",
    "eval/base.summary.json",
    "eval/tuned.jsonl",
    "eval/tuned.summary.json",
    "analysis.json",
    "report.md",
    "report.html",
    "run.log",  # every trainer log line and library warning the terminal leaves out
    "plan.json",  # the plan printed before the run, kept to set beside what happened
}


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    argv = ["run", "-", "--out", str(out)]
    overrides = [
        f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=16",
        "data.max_length=512", "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=2",
        "train.report_to=[]", "eval.limit=6", "eval.max_new_tokens=12", "eval.batch_size=3", "name=tiny",
    ]
    config = out.parent / "tiny.yaml"
    config.write_text("seed: 3\n")
    argv[1] = str(config)
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 0
    return out, argv


def _files(root):
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_run_leaves_exactly_the_designed_files(run_dir):
    out, _ = run_dir
    files = _files(out)
    top_level = {f for f in files if not f.startswith(("train/checkpoints/", "train/runs/", "train/tensorboard", "figures/"))}
    assert top_level == EXPECTED_FILES
    assert any(f.startswith("figures/") and f.endswith(".png") for f in files)
    assert any(f.startswith("train/checkpoints/checkpoint-") for f in files)
    assert not any(".partial" in f or f.endswith(".tmp") for f in files)


def test_every_number_in_the_report_is_in_analysis_json(run_dir):
    out, _ = run_dir
    analysis_text = (out / "analysis.json").read_text()
    analysis_numbers = {float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", analysis_text)}
    # A count with thousands separators (8,192) is one number, in analysis.json's text as in the report.
    thousands = r"(?<![\w.,])-?\d{1,3}(?:,\d{3})+(?![\w,])"
    analysis_numbers |= {float(x.replace(",", "")) for x in re.findall(thousands, analysis_text)}
    report = (out / "report.md").read_text()
    # Model text (fenced code blocks) is quoted from eval/*.jsonl, not a figure of the report.
    prose = re.sub(r"```.*?```", "", report, flags=re.S)
    prose = re.sub(r"\S*/\S*", "", prose)  # file paths name folders, they are not figures
    missing = []
    for token in re.findall(thousands + r"|(?<![\w.])-?\d+(?:\.\d+)?(?![\w])", prose):
        if float(token.replace(",", "")) not in analysis_numbers:
            missing.append(token)
    assert not missing, f"numbers in report.md not found in analysis.json: {sorted(set(missing))[:20]}"


def test_eval_records_match_the_summaries(run_dir):
    out, _ = run_dir
    for name in ("base", "tuned"):
        recs = [json.loads(line) for line in (out / "eval" / f"{name}.jsonl").read_text().splitlines()]
        summary = json.loads((out / "eval" / f"{name}.summary.json").read_text())
        assert summary["n"] == len(recs) == 6
        assert summary["correct_strict"] == sum(r["correct_strict"] for r in recs)
    tuned = json.loads((out / "eval" / "tuned.summary.json").read_text())
    assert tuned["adapter"].endswith("adapter")


def test_rerun_skips_finished_stages_and_report_rebuilds(run_dir, capsys):
    out, argv = run_dir
    before = (out / "eval" / "base.jsonl").stat().st_mtime_ns
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "already finished" in printed and "report:" in printed
    assert (out / "eval" / "base.jsonl").stat().st_mtime_ns == before
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()


def test_compare_two_runs(run_dir, capsys):
    out, _ = run_dir
    assert main(["compare", str(out), str(out)]) == 0
    assert "tiny" in capsys.readouterr().out


def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_terminal_is_clean_and_run_log_keeps_the_rest(tiny_model_dir, small_data_dir, tmp_path, capfd):
    """No raw trainer dicts on the terminal; every logged step in run.log; --quiet leaves only
    the final paths."""
    config = tmp_path / "t.yaml"
    config.write_text("name: t\n")
    settings = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=8",
                "train.epochs=1", "train.batch_size=4", "train.eval_every_steps=1", "train.report_to=[]",
                "eval.limit=2", "eval.max_new_tokens=4"]
    overrides = [x for s in settings for x in ("--set", s)]
    assert main(["run", str(config), "--out", str(tmp_path / "loud"), *overrides]) == 0
    out, err = capfd.readouterr()
    assert "{'loss'" not in out + err and "{'eval_loss'" not in out + err and "Warning" not in out + err
    assert "training done (sft)" in out
    logged = [json.loads(line) for line in (tmp_path / "loud" / "run.log").read_text().splitlines()
              if line.startswith("{")]
    steps = [line["step"] for line in logged if "loss" in line]
    metrics = [json.loads(line) for line in (tmp_path / "loud" / "train" / "metrics.jsonl").read_text().splitlines()]
    assert steps and set(steps) == {m["step"] for m in metrics if "loss" in m}

    from mathtune.core import terminal

    assert main(["run", str(config), "--out", str(tmp_path / "quiet"), "--quiet", *overrides]) == 0
    assert terminal.QUIET is False  # the flag ends with its command
    out, err = capfd.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines()] == ["report", "report"]
    assert err.strip() == ""


def test_plan_is_set_beside_what_happened(run_dir):
    out, _ = run_dir
    analysis = json.loads((out / "analysis.json").read_text())
    plan = json.loads((out / "plan.json").read_text())
    rows = {r["figure"]: r for r in analysis["plan"]["rows"]}
    assert rows["optimizer steps"]["planned"] == plan["optimizer_steps"]
    assert rows["optimizer steps"]["actual"] == analysis["training"]["global_step"]
    assert plan["optimizer_steps"] == analysis["training"]["global_step"]  # best-fit-decreasing packing, simulated
    assert "The plan (cpu) against what happened" in (out / "report.md").read_text()


def test_changed_eval_settings_are_refused_not_silently_rewritten(run_dir, capsys, tmp_path):
    """`--set eval.prompt=cot8` on a finished run would replace eval/*.jsonl: refused, with
    nothing changed, unless --overwrite."""
    import shutil

    out, argv = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = [a if a != str(out) else str(copy) for a in argv]
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert main(argv + ["--set", "eval.prompt=cot8"]) == 1
    err = capsys.readouterr().err
    assert "holds a finished eval/base.jsonl with other settings (differs in prompt)" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before


def test_eval_refuses_to_replace_a_record_of_other_settings(tiny_model_dir, small_data_dir, tmp_path, capsys):
    common = ["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--max-new-tokens", "4",
              "--out", str(tmp_path), "--name", "m"]
    assert main(common + ["--limit", "2"]) == 0
    first = (tmp_path / "eval" / "m.jsonl").read_bytes()
    capsys.readouterr()
    assert main(common + ["--limit", "2", "--split", "validation"]) == 1
    assert "differs in split" in capsys.readouterr().err
    assert (tmp_path / "eval" / "m.jsonl").read_bytes() == first
    assert main(common + ["--limit", "2", "--split", "validation", "--overwrite"]) == 0
    assert "replacing the finished evaluation" in capsys.readouterr().out


# Kill `mathtune report` with SIGKILL just before it renames the given file into place.
REPORT_KILLER = """
import os, signal, sys
real = os.replace

def replace_then_die(src, dst, *a, **k):
    if os.path.basename(str(dst)) == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **k)

os.replace = replace_then_die
from mathtune.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("target", ["analysis.json", "report.md", "report.html"])
def test_sigkill_while_writing_the_report_leaves_no_truncated_file(run_dir, tmp_path, target):
    import shutil
    import signal
    import subprocess
    import sys

    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    finished = {name: (out / name).read_bytes() for name in ("analysis.json", "report.md", "report.html")}
    script = tmp_path / "killer.py"
    script.write_text(REPORT_KILLER)
    proc = subprocess.run([sys.executable, str(script), target, "report", str(copy)], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert list(copy.glob(f".{target}.*.tmp")), "the killed write left its temporary file"
    # Every final file is whole: the earlier complete version, never a cut one.
    for name, data in finished.items():
        assert (copy / name).read_bytes() == data
    assert main(["report", str(copy)]) == 0
    assert not list(copy.rglob(".*.tmp"))
    assert json.loads((copy / "analysis.json").read_text())["run"]["name"] == "tiny"


def test_summaries_name_the_paths_that_ran_and_their_checks(run_dir):
    """Which attention, LM head and decoder ran, each fast one checked on this device before its
    first use, named as the plan, the report and `mathtune doctor` name them."""
    out, _ = run_dir
    train = json.loads((out / "train" / "summary.json").read_text())
    assert (train["attention"], train["lm_head"]) == ("mathtune_segments", "lean")  # packed rows on a CPU
    for kind, path in (("attention", "mathtune_segments"), ("lm_head", "lean")):
        record = train["fast_paths"][kind]
        assert (record["path"], record["check"], record["verdict"], record["reason"]) == \
            (path, f"{kind} {path}", "pass", None)
        assert record["max_diff"] <= record["tolerance"] and record["checked"] in ("now", "remembered")
    for name in ("base", "tuned"):
        s = json.loads((out / "eval" / f"{name}.summary.json").read_text())
        assert s["decoder"] == "dynamic_cache" and s["attention"] == "sdpa"
        d = s["fast_paths"]["decoder"]
        assert (d["path"], d["check"], d["verdict"], d["reason"]) == ("dynamic_cache", "decoder dynamic_cache", "pass",
                                                                      None)
        assert s["fast_paths"]["attention"]["verdict"] == "not needed"
    plan = json.loads((out / "plan.json").read_text())
    assert plan["paths"] == {"attention": "mathtune_segments", "lm_head": "lean", "decoder": "dynamic_cache"}
    stages = {s["stage"]: s for s in json.loads((out / "analysis.json").read_text())["run"]["provenance"]["stages"]}
    assert (stages["train"]["attention"], stages["train"]["lm_head"]) == ("mathtune_segments", "lean")
    assert stages["eval base"]["decoder"] == "dynamic_cache"
    report = (out / "report.md").read_text()
    assert "LM head" in report and "dynamic_cache" in report
    assert "train: attention mathtune_segments: checked on this device, pass (max diff" in report
