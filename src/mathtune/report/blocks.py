"""The report's content as plain blocks, independent of the output format (report.render turns
them into Markdown and HTML), and the helpers that show a stored value as text unchanged: the
report formats, it does not compute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str
    caption: str


@dataclass
class ModelText:
    """Text a model (or the dataset) wrote: shown verbatim, never interpreted as markup."""

    label: str
    text: str


@dataclass
class Contents:
    """The table of contents: every level-2 heading after it, linked by its anchor."""


@dataclass
class Verdict:
    """The report's answer, in one sentence: the first thing a reader sees."""

    text: str


@dataclass
class Columns:
    """Blocks side by side where the page is wide enough (one above the other where it is not,
    and in Markdown)."""

    left: list
    right: list


@dataclass
class Details:
    """Blocks collapsed under a one-line summary (HTML <details>; Markdown keeps the same tags,
    which GitHub renders the same way)."""

    summary: str
    blocks: list


def short_name(text: Any) -> str:
    """A model or data name as a table shows it: a local path by its last part (the full path is
    in "What ran"), a hub id (org/name) as it is."""
    text = show(text)
    if text.startswith(("/", "~", "./", "../")) or "\\" in text:
        parts = [p for p in re.split(r"[\\/]", text) if p]
        return parts[-1] if parts else text
    return text


def sentence(text: str) -> str:
    """First letter upper-cased, the rest as written (str.capitalize would lower 'KL', 'GRPO')."""
    return text[:1].upper() + text[1:]


def show(value: Any) -> str:
    """A stored value as text, unchanged; the report formats, it does not compute."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def show_count(value: Any) -> str:
    """A count as the plan prints it: 9,232,384."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else show(value)


def show_pct(value: Any) -> str:
    return "n/a" if value is None else f"{value}%"


def show_interval(pair: list | None, unit: str = "%") -> str:
    if not pair or pair[0] is None:
        return "n/a"
    return f"[{pair[0]}{unit}, {pair[1]}{unit}]"


def show_signed(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return f"0{unit}" if isinstance(value, int) else f"{abs(value)}{unit}"  # no change has no sign ('0.0', not '-0.0')
    return f"+{value}{unit}" if value > 0 else f"{value}{unit}"


def anchor(text: str) -> str:
    """The id of a heading: lower case, words joined by '-' (GitHub's Markdown rule for plain text)."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")
