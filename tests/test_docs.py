"""The documentation site: it builds with --strict (a broken link or a page missing from the
nav fails), and its generated references hold every config key and every command option."""

import argparse
import html
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from mathtune.cli import build_parser
from mathtune.config import Config

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("mkdocs", reason="the docs extra is not installed (make setup installs it)")
pytest.importorskip("material", reason="the docs extra is not installed (make setup installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(out)], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def page_text(site: Path, page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page / "index.html").read_text(encoding="utf-8")))


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key of the schema, walked here independently of the docs' own generator."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for arg in [field.annotation, *typing.get_args(field.annotation),
                    *(a for inner in typing.get_args(field.annotation) for a in typing.get_args(inner))]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                list_of = typing.get_origin(field.annotation) is list
                keys += config_keys(arg, f"{prefix}{name}{'[]' if list_of else ''}.")
    return keys


def test_every_config_key_is_in_the_reference(site):
    text = page_text(site, "reference/config")
    keys = config_keys(Config)
    assert len(keys) > 60 and "train.grpo.beta" in keys and "data.mix[].weight" in keys
    assert [k for k in keys if k not in text] == []
    for name, field in Config.model_fields["train"].annotation.model_fields.items():
        if field.description:  # the description written under the field, as the code has it
            assert " ".join(field.description.replace("`", "").split())[:60] in " ".join(text.split())


def test_every_command_and_option_is_in_the_reference(site):
    text = page_text(site, "reference/commands")
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"run", "plan", "eval", "report", "export", "doctor"} <= set(commands)
    for name, sub in commands.items():
        assert f"mathtune {name}" in text
        options = [o for a in sub._actions if not isinstance(a, argparse._HelpAction) for o in a.option_strings]
        assert [o for o in options if o not in text] == [], name


def test_the_pages_a_newcomer_needs_are_built(site):
    for page in ("getting-started", "how-to/own-model", "how-to/own-data", "how-to/evaluate", "how-to/qlora",
                 "how-to/several-gpus", "how-to/probe", "how-to/extra-benchmarks", "how-to/export",
                 "how-to/sweeps", "concepts/scoring", "concepts/token-accuracy", "concepts/plan",
                 "concepts/prompt-tokens", "report", "run-folder", "troubleshooting", "code-layout", "models"):
        assert (site / page / "index.html").is_file(), page


def test_the_readme_links_only_pages_that_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 10
    assert [link for link in links if not (REPO / link).is_file()] == []
