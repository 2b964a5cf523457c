import json

import pytest
import yaml

from mathtune.analysis.compare import compare_runs
from mathtune.core.errors import MathtuneError
from conftest import DEMO_PROBLEMS
from synthetic_run import write_run


def test_side_by_side_table(tmp_path, gsm8k_dir):
    a = write_run(tmp_path, gsm8k_dir, name="lr-high")
    b = write_run(tmp_path, gsm8k_dir, name="lr-low", lr=1e-4, with_train=False)
    table = compare_runs([a, b])
    lines = table.splitlines()
    assert lines[0] == "|  | lr-high | lr-low |"
    assert "| config: train.learning_rate | 0.0002 | 0.0001 |" in lines
    # Keys that are the same in both runs are not listed.
    assert not any("lora.r" in line for line in lines)
    assert any(line.startswith("| tuned accuracy, strict (95% CI) | 50.0% [31.4, 68.6] |") for line in lines)
    # One marker for a value a run does not have: '-', never 'n/a' in one row and '-' in another.
    assert "| training cost (RFT sampling included) | $2.07 | - |" in lines
    assert "| training wall time | 62.1 min | - |" in lines
    assert "| best step | 100 | - |" in lines
    assert "n/a" not in table
    assert "| method | sft | sft |" in lines
    # Tuned 12/24 strict in the synthetic run. Base 10/24 on GSM8K's first test problems, where
    # two made-up wrong answers happen to score right: 5 improved, 3 regressed. Base 8/24 on the
    # demo problems: 5 improved, 1 regressed.
    paired = {"gsm8k": "+8.3 [-12.5, +29.2], p 0.727, +5/-3 of 24",
              "demo": "+16.7 [0.0, +37.5], p 0.219, +5/-1 of 24"}["demo" if gsm8k_dir == DEMO_PROBLEMS else "gsm8k"]
    assert f"| tuned - base, strict, paired (points [95% CI], McNemar p, improved/regressed) | {paired} | {paired} |" in lines


def test_methods_side_by_side_paired_on_the_same_problems(tmp_path, gsm8k_dir):
    """An RFT and a GRPO run against an SFT run: what each trained on, the paired difference of
    each tuned model to the SFT one, and RFT's sampling time counted in the totals."""
    sft = write_run(tmp_path, gsm8k_dir, name="sft")
    rft = write_run(tmp_path, gsm8k_dir, name="rft")
    grpo = write_run(tmp_path, gsm8k_dir, name="grpo", with_train=False)
    for run, method in ((rft, "rft"), (grpo, "grpo")):
        config = yaml.safe_load((run / "config.yaml").read_text())
        config["train"]["method"] = method
        (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = json.loads((rft / "train" / "summary.json").read_text())
    summary["method"] = "rft"
    summary["rft"] = {"problems": 10, "problems_with_correct_sample": 6, "solutions_kept": 10, "kept_from_model": 6,
                      "kept_from_gold": 4, "share_from_model": 0.6, "sampling_wall_time_s": 600.0,
                      "sampling_reused": False, "samples_per_problem": 4, "sampled_solutions": 40,
                      "strictly_correct_samples": 15, "sample_accuracy_strict": 0.375}
    (rft / "train" / "summary.json").write_text(json.dumps(summary))
    (grpo / "train").mkdir()
    (grpo / "train" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 0.0, "reward": r, "mixed_groups": 0.5, "kl": 0.001 * s,
                    "completion_length": 200.0}) + "\n" for s, r in zip(range(1, 9), (0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.6))))
    # GRPO's tuned model gets the first two problems the SFT one got wrong right.
    records = [json.loads(line) for line in (grpo / "eval" / "tuned.jsonl").read_text().splitlines()]
    flipped = [r["id"] for r in records if not r["correct_strict"]][:2]
    for r in records:
        if r["id"] in flipped:
            r["correct_strict"] = True
    (grpo / "eval" / "tuned.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    lines = compare_runs([sft, rft, grpo]).splitlines()
    assert "| method | sft | rft | grpo |" in lines
    row = next(line for line in lines if line.startswith("| tuned - sft tuned, strict, paired |"))
    assert row.split(" | ")[2].startswith("0.0 [0.0, 0.0]") and row.split(" | ")[3].startswith("+8.3 [")
    assert "+2/-0 of 24" in row
    assert "| base results identical to sft's | - | yes | yes |" in lines
    data = next(line for line in lines if line.startswith("| training data / reward |"))
    assert "kept 10 solutions, 6 from the model (60.0%); 6 of 10 problems had a correct sample" in data
    assert "mean reward 0.2 -> 0.55 over 8 steps; mixed groups 50.0%" in data
    assert "| RFT sampling wall time | - | 10.0 min | - |" in lines  # SFT and GRPO sample nothing: not '0 s'
    assert "n/a" not in "\n".join(lines)
    assert "| evaluation wall time | 2.0 min | 2.0 min | 2.0 min |" in lines
    # one shared protocol: said once, under the table, not repeated per column
    assert not any(line.startswith("| protocol") for line in lines)
    assert lines[-1].startswith("Protocol of every run: GSM8K test")
    assert "| total wall time | 64.1 min | 74.1 min | 2.0 min |" in lines


def test_missing_or_unfinished_run_is_a_one_line_error(tmp_path, gsm8k_dir):
    with pytest.raises(MathtuneError, match="not found"):
        compare_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MathtuneError, match="no config.yaml"):
        compare_runs([tmp_path / "empty"])
    run = write_run(tmp_path, gsm8k_dir)
    for p in (run / "eval").glob("*.summary.json"):
        p.unlink()
    with pytest.raises(MathtuneError, match="unfinished") as err:
        compare_runs([run])
    assert "\n" not in str(err.value)


def test_different_protocols_are_refused_unless_forced_and_then_marked(tmp_path, gsm8k_dir, capsys):
    from mathtune.cli import main

    a = write_run(tmp_path, gsm8k_dir, name="a")
    b = write_run(tmp_path, gsm8k_dir, name="b")
    for model in ("base", "tuned"):
        path = b / "eval" / f"{model}.summary.json"
        summary = json.loads(path.read_text())
        summary["protocol"] = "GSM8K test, cot8"
        path.write_text(json.dumps(summary))
    assert main(["compare", str(a), str(b)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mathtune: error: the runs' accuracies were measured on different data or protocols")
    assert "--force" in err and err.count("\n") == 1
    lines = compare_runs([a, b], force=True).splitlines()
    assert any(line.startswith("| protocol |") and "GSM8K test, cot8 |" in line for line in lines)
    assert lines[-1].startswith("Warning (--force): the runs were evaluated on different data or under different")
    # Different data files (same protocol) are refused the same way.
    c = write_run(tmp_path, gsm8k_dir, name="c")
    path = c / "eval" / "base.summary.json"
    summary = json.loads(path.read_text())
    summary["data_identity"] = {"kind": "local", "path": "/elsewhere/test.jsonl", "sha256": "0" * 64}
    path.write_text(json.dumps(summary))
    with pytest.raises(MathtuneError, match="different data or protocols"):
        compare_runs([a, c])


def test_compare_json_is_the_table_and_the_raw_figures(tmp_path, gsm8k_dir, capsys):
    from mathtune.cli import main

    a = write_run(tmp_path, gsm8k_dir, name="a")
    b = write_run(tmp_path, gsm8k_dir, name="b")
    assert main(["compare", str(a), str(b), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["header"] == ["", "a", "b"] and data["comparable"] is True
    tuned = json.loads((a / "eval" / "tuned.summary.json").read_text())
    assert data["runs"][0]["evals"]["tuned"]["accuracy_strict"] == tuned["accuracy_strict"]
    assert all(len(row) == 3 for row in data["rows"])


def test_compare_shows_the_probe_gap_per_kind(tmp_path, gsm8k_dir):
    a = write_run(tmp_path, gsm8k_dir, name="probed")
    b = write_run(tmp_path, gsm8k_dir, name="plain", lr=1e-4)
    records = [json.loads(x) for x in (a / "eval" / "tuned.jsonl").read_text().splitlines()]
    (a / "probe").mkdir()
    rows, on_variants = [], []
    for kind, suffix in (("numbers", "~v1"), ("names", "~names-v1")):
        for r in records:
            rows.append({"id": r["id"] + suffix, "original_id": r["id"], "kind": kind})
            # the names variants are solved as the originals were; every numbers variant is lost
            on_variants.append({**r, "id": r["id"] + suffix, "correct_strict": kind == "names" and r["correct_strict"]})
    (a / "probe" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (a / "eval" / "tuned-probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in on_variants))
    lines = compare_runs([a, b]).splitlines()
    numbers = next(line for line in lines if line.startswith("| tuned probe, numbers:"))
    names = next(line for line in lines if line.startswith("| tuned probe, names:"))
    assert numbers.split(" | ")[1].startswith("-50.0 [") and numbers.endswith(" | - |")
    assert names.split(" | ")[1].startswith("0.0 [0.0, 0.0], p 1.000")
    assert not any(line.startswith("| base probe") and "p " in line for line in lines)
