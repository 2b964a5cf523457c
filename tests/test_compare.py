import pytest

from mathtune.compare import compare_runs
from mathtune.errors import MathtuneError
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
    assert "| training cost | $2.07 | n/a |" in lines
    assert "| training wall time | 62.1 min | n/a |" in lines


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
