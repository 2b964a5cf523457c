"""A grid of runs into sibling folders, ending with their comparison.

    mathtune sweep config.yaml --grid lora.r=8,32 [--grid train.learning_rate=1e-4,2e-4] [--out DIR]

Each point of the grid (every combination of the values) is one `mathtune run` in
OUT/KEY=VALUE[,KEY=VALUE...]/, with the config's --set overrides and the point's values. A
sweep started again with the same command continues: finished runs are skipped, a half-finished
one resumes. Every point gets the same prompt date (kept in OUT/sweep.json), so points that
differ only in training share one base-model evaluation (evaluation.base_cache). At the end,
OUT/comparison.md and OUT/comparison.html hold `mathtune compare` of every run.
"""

from __future__ import annotations

import datetime
import itertools
import re
from pathlib import Path

from mathtune.analysis.compare import compare_table, render_markdown
from mathtune.config import Config, load_config
from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import read_json, write_atomic, write_json_atomic
from mathtune.core.terminal import say
from mathtune.pipeline import run_experiment
from mathtune.report.blocks import Bullets, Heading, Para, Table
from mathtune.report.render import render_html

SWEEP_FILE = "sweep.json"


def split_values(text: str) -> list[str]:
    """'8,32' -> ['8', '32']; a comma inside brackets or braces belongs to its value
    ('[q_proj,v_proj],all-linear' is two values). Hand-written: a YAML flow list would read
    '8,32' as one string and 'a, b' with its spaces kept."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    values.append(current)
    return [v.strip() for v in values]


def parse_grid(grids: list[str]) -> list[tuple[str, list[str]]]:
    """[(key, [value texts])] from '--grid key=v1,v2' arguments; one line for a malformed one."""
    parsed, seen = [], set()
    for text in grids:
        if "=" not in text or not text.split("=", 1)[0].strip():
            raise MathtuneError(f"--grid expects key=value1,value2,..., got {text!r}")
        key, raw = (part.strip() for part in text.split("=", 1))
        values = split_values(raw)
        if any(not v for v in values):
            raise MathtuneError(f"--grid {text}: an empty value")
        if key in seen:
            raise MathtuneError(f"--grid {key} is given twice; list its values once, comma-separated")
        if len(set(values)) != len(values):
            raise MathtuneError(f"--grid {text}: a value is listed twice")
        seen.add(key)
        parsed.append((key, values))
    if not parsed:
        raise MathtuneError("sweep needs at least one --grid key=value1,value2")
    return parsed


def point_folder(point: list[tuple[str, str]]) -> str:
    """'lora.r=8,train.learning_rate=0.0001': the point's settings as a folder name."""
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(f"{k}={v}" for k, v in point))


def sweep_points(config_path: str | Path, overrides: list[str], grids: list[str],
                 prompt_date: str) -> list[tuple[str, Config]]:
    """(folder name, resolved config) for every point, each checked before anything runs."""
    grid = parse_grid(grids)
    points = []
    for combo in itertools.product(*[[(key, v) for v in values] for key, values in grid]):
        sets = [*overrides, *(f"{k}={v}" for k, v in combo)]
        config = load_config(config_path, sets)
        if config.data.prompt_date is None:  # one date for every point: their base evaluations are one
            config = config.model_copy(update={"data": config.data.model_copy(update={"prompt_date": prompt_date})})
        points.append((point_folder(combo), config))
    folders = [name for name, _ in points]
    if len(set(folders)) != len(folders):
        raise MathtuneError("two points of the grid get the same folder name; use values that differ in letters or "
                            "digits")
    return points


def _settled_date(out: Path, grids: list[str], overrides: list[str]) -> str:
    """The sweep's prompt date: the one OUT/sweep.json keeps (the same grid started again), else
    today (UTC). A folder holding a sweep of another grid is refused."""
    saved = out / SWEEP_FILE
    wanted = {"grid": grids, "overrides": overrides}
    if saved.is_file():
        have = read_json(saved)
        if {k: have.get(k) for k in wanted} != wanted:
            raise MathtuneError(f"{out} holds a sweep of another grid or other --set values ({saved}); use another "
                                "--out")
        return have["prompt_date"]
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def run_sweep(config_path: str | Path, grids: list[str], out: Path, overrides: list[str] = ()) -> list[Path]:
    """`mathtune sweep`: every point's run, then OUT/comparison.md and .html; returns their paths."""
    out, overrides = Path(out), list(overrides)
    date = _settled_date(out, grids, overrides)
    points = sweep_points(config_path, overrides, grids, date)  # every point's config checked first
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SWEEP_FILE, {"config": str(Path(config_path).resolve()), "grid": grids,
                                         "overrides": overrides, "prompt_date": date,
                                         "runs": [name for name, _ in points]})
    for i, (name, config) in enumerate(points, start=1):
        say(f"sweep: run {i} of {len(points)}: {name}")
        run_experiment(config, out / name)
    return write_comparison(out, [out / name for name, _ in points])


def write_comparison(out: Path, run_dirs: list[Path]) -> list[Path]:
    """`mathtune compare` of the runs, as Markdown and HTML beside them."""
    table = compare_table(run_dirs, force=True)  # a grid over eval settings is marked, not refused
    title = f"Sweep: {len(run_dirs)} runs in {out.name or out}"
    md, html = out / "comparison.md", out / "comparison.html"
    write_atomic(md, f"# {title}\n\n{render_markdown(table)}\n")
    blocks = [Heading(1, title), Table(table["header"], table["rows"])]
    if table.get("verdicts"):
        blocks += [Para("Tuned against tuned, each pair (paired bootstrap 95% interval, points):"),
                   Bullets(table["verdicts"])]
    blocks.append(Para(table["note"]))
    write_atomic(html, render_html(blocks, title, {}))
    for path in (md, html):
        print(f"comparison: {path}")  # a final path: printed under --quiet too
    return [md, html]
