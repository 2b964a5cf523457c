"""The layout's rules: imports only point down (import-linter's contracts in pyproject.toml), no
module takes another module's underscore names, and the command line starts without the heavy
libraries."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "mathtune"


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "lint-imports"
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run([str(script), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_import_contracts_hold():
    result = _lint_imports(REPO, REPO / "src")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_contracts_catch_an_import_up_and_a_circle(tmp_path):
    """The same contracts on a copy of the code with two breaches: the config importing a stage,
    and a circle inside the evaluation package."""
    copy = tmp_path / "src" / "mathtune"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (copy / "config.py").open("a") as fh:
        fh.write("\nfrom mathtune.task.data import DataFormat  # noqa\n")
    with (copy / "evaluation" / "records.py").open("a") as fh:
        fh.write("\nfrom mathtune.evaluation import evaluate  # noqa\n")
    result = _lint_imports(tmp_path, tmp_path / "src")
    assert result.returncode != 0
    assert "mathtune.config is not allowed to import mathtune.task" in result.stdout
    assert ".records -> .evaluate" in result.stdout


def _underscore_imports(path: Path, root: Path = SRC) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mathtune"):
            found += [f"{path.relative_to(root)}:{node.lineno} {node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_underscore_names():
    found = [hit for path in sorted(SRC.rglob("*.py")) for hit in _underscore_imports(path)]
    assert found == []


def test_the_underscore_check_sees_one(tmp_path):
    module = tmp_path / "x.py"
    module.write_text("from mathtune import __version__\n\ndef f():\n    from mathtune.analysis.common import rounded, _secret\n")
    assert _underscore_imports(module, tmp_path) == ["x.py:4 mathtune.analysis.common._secret"]


def test_package_faces_are_empty_and_help_imports_no_torch():
    for init in SRC.glob("*/__init__.py"):
        assert init.read_text().strip() == "", f"{init} should stay empty (heavy imports stay lazy)"
    probe = "import sys; from mathtune.cli import build_parser; build_parser(); print(sorted(m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_no_module_takes_a_private_name_from_trl():
    """TRL's underscore names (its lm-head chunk size among them) can go in any release."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "_CHUNKED_LOGPROB_CHUNK_SIZE" in text:
            found.append(f"{path.relative_to(SRC)} _CHUNKED_LOGPROB_CHUNK_SIZE")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "trl":
                found += [f"{path.relative_to(SRC)}:{node.lineno} {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert found == []
