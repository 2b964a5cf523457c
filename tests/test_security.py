"""Nothing a config, a model folder or a model's output holds is run as code unless the user
says so; the report states when model code ran."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mathtune.config import ModelConfig, load_config
from mathtune.core.errors import MathtuneError

SRC = Path(__file__).resolve().parents[1] / "src" / "mathtune"


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "c.yaml"
    path.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(MathtuneError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def _model_with_remote_code(tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny model, its config pointing transformers at a Python file in the folder that
    leaves a marker when imported."""
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import Qwen2ForCausalLM, Qwen2Config\n"
        "class EvilConfig(Qwen2Config):\n    pass\n"
        "class EvilModel(Qwen2ForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_model_code_runs_only_when_the_config_says_so(tiny_model_dir, tmp_path):
    from mathtune.models.load import load_model

    folder, marker = _model_with_remote_code(tiny_model_dir, tmp_path)
    load_model(ModelConfig(name_or_path=str(folder)), device="cpu")  # the built-in Qwen2 classes, the folder's code ignored
    assert not marker.exists()
    load_model(ModelConfig(name_or_path=str(folder), trust_remote_code=True), device="cpu")
    assert marker.exists()
    assert load_config(None).model.trust_remote_code is False


def test_the_report_says_whether_model_code_ran(tmp_path, gsm8k_dir):
    from synthetic_run import write_run

    from mathtune.pipeline import rebuild_report

    run = write_run(tmp_path, gsm8k_dir, n_problems=6)
    rebuild_report(run)
    assert "trust_remote_code was off: no code shipped with the model ran." in (run / "report.md").read_text()
    summary = json.loads((run / "eval" / "tuned.summary.json").read_text())
    summary["trust_remote_code"] = True
    (run / "eval" / "tuned.summary.json").write_text(json.dumps(summary))
    rebuild_report(run)
    text = (run / "report.md").read_text()
    assert "trust_remote_code was on for eval tuned: Python code shipped with the model ran" in text
    assert json.loads((run / "analysis.json").read_text())["run"]["provenance"]["remote_code_stages"] == ["eval tuned"]


def test_no_path_reaches_a_shell():
    """Paths go to subprocesses as list arguments, never through a shell."""
    for path in SRC.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"shell\s*=\s*True|os\.system\(|os\.popen\(|commands\.getoutput", text), path.name
