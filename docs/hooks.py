"""MkDocs hook: the config and command references, generated from the code at build time.

    mkdocs build --strict      (mkdocs.yml names this file under `hooks:`)

A page holding the line `<!-- generated: config -->` gets every config key from the pydantic
schema (mathtune.config.Config): its key, type, default and the docstring written under the
field; `<!-- generated: commands -->` gets every command and option from the argument parser
(mathtune.cli.build_parser). A key or an option added to the code appears here by itself, so the
reference cannot drift from what mathtune accepts.
"""

from __future__ import annotations

import argparse
import json
import re
import types
import typing

from pydantic import BaseModel

CONFIG_MARK = "<!-- generated: config -->"
COMMANDS_MARK = "<!-- generated: commands -->"


def _type_name(annotation) -> str:
    """A field's type as a reader writes it in YAML: int, str, "chat" | "cot8", list of ..."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is typing.Annotated:
        names = _kind_names(annotation.__metadata__)
        return " | ".join(json.dumps(n) for n in names) if names is not None else _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}" if args else "map"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section" if annotation.__name__ != "MixSource" else "source"
    return getattr(annotation, "__name__", str(annotation))


def _kind_names(metadata) -> list[str] | None:
    """The names a key naming a kind accepts (config.kind_name), or None for another key."""
    return next((m.func.names for m in metadata if hasattr(getattr(m, "func", None), "names")), None)


def _field_type(field) -> str:
    names = _kind_names(field.metadata)
    return " | ".join(json.dumps(n) for n in names) if names is not None else _type_name(field.annotation)


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    return json.dumps(value)


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """The model and every section nested in it (a list of sections, e.g. data.mix, included)."""
    found = [(prefix, model)]
    for name, field in model.model_fields.items():
        for inner in _models_in(field.annotation):
            found += _sections(inner, f"{prefix}{name}{'[]' if _is_list(field.annotation) else ''}.")
    return found


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def _is_list(annotation) -> bool:
    return typing.get_origin(annotation) is list or any(_is_list(a) for a in typing.get_args(annotation))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_reference() -> str:
    from mathtune.config import Config

    parts = []
    for prefix, model in _sections(Config):
        parts.append(f"## `{prefix.rstrip('.')}`\n" if prefix else "## Top level\n")
        if model.__doc__ and prefix and model.__doc__.strip() != BaseModel.__doc__.strip():
            parts.append(_cell(model.__doc__) + "\n")
        rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            default = _default(field)
            default = default if default == "see below" else f"`{_cell(default)}`"
            rows.append(f"| `{prefix}{name}` | {_cell(_field_type(field))} | {default} "
                        f"| {_cell(field.description or '')} |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def _option_line(action: argparse.Action) -> str:
    names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.choices and not isinstance(action.choices, dict):
        names += " (" + " \\| ".join(str(c) for c in action.choices) + ")"
    default = ""
    if action.default not in (None, False, [], argparse.SUPPRESS) and action.option_strings:
        default = f" Default: `{action.default}`."
    return f"| {names} | {_cell(action.help or '')}{default} |"


def commands_reference() -> str:
    from mathtune.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    parts = []
    for name, sub in commands.items():
        parts.append(f"## `mathtune {name}`\n")
        parts.append(_cell(sub.description or "") + "\n")
        usage = re.sub(r"\s+", " ", sub.format_usage().removeprefix("usage: ")).strip()
        parts.append(f"```text\n{usage}\n```\n")
        actions = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if actions:
            parts.append("\n".join(["| option | what it does |", "|---|---|"] + [_option_line(a) for a in actions])
                         + "\n")
        if sub.epilog:
            parts.append(f"```text\n{sub.epilog}\n```\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, config_reference())
    if COMMANDS_MARK in markdown:
        markdown = markdown.replace(COMMANDS_MARK, commands_reference())
    return markdown
