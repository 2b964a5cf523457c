"""Functions a reader can hold in view: none in src/mathtune over 100 lines, and the main flow,
pipeline.run_experiment, on one screen (40 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mathtune"
MAX_LINES = 100
MAIN_FLOW_MAX_LINES = 40


def function_lengths(source: str, name: str) -> dict[str, int]:
    """'FILE:FUNCTION' -> its lines, from the def line (decorators apart) to its last line."""
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            key = f"{name}:{node.name}"  # two nested helpers of one name: the longer counts
            lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def all_lengths() -> dict[str, int]:
    lengths = {}
    for path in sorted(SRC.rglob("*.py")):
        lengths |= function_lengths(path.read_text(encoding="utf-8"), path.relative_to(SRC).as_posix())
    return lengths


def test_no_function_is_over_100_lines():
    long = {name: n for name, n in all_lengths().items() if n > MAX_LINES}
    assert long == {}


def test_the_main_flow_fits_one_screen():
    assert all_lengths()["pipeline.py:run_experiment"] <= MAIN_FLOW_MAX_LINES


def test_the_walk_sees_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES))
    assert function_lengths(f"def long():\n{body}", "m.py") == {"m.py:long": MAX_LINES + 1}
    nested = "class C:\n    def method(self):\n        pass\n"
    assert function_lengths(nested, "m.py") == {"m.py:method": 2}
