"""Records a stage hands to the next: dataclasses on the Python side, JSON on disk.

    @dataclass(kw_only=True)
    class Summary:
        n: int                                  # a key every file holds
        note: str | None = absent()             # a key written only when set

    write_record(path, summary)                 # keys in field order, indented as every JSON file
    summary = read_record(Summary, path)        # a missing or unknown key: a one-line MathtuneError

A field's order is its key's order in the file. A field made with absent() is left out of the
file while it is None (a key that only some files hold); any other field is always written,
None as null. Nested dataclasses, lists and dict[str, ...] of them are converted both ways; any
other value (an open mapping typed dict[str, Any]) is kept as read.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from mathtune.core.errors import MathtuneError
from mathtune.core.runfiles import read_json, write_json_atomic

R = TypeVar("R")
_ABSENT_WHEN_NONE = "absent_when_none"


def absent(default: Any = None) -> Any:
    """A field whose key a file holds only when it is set (None: the key is left out)."""
    return dataclasses.field(default=default, metadata={_ABSENT_WHEN_NONE: True})


def to_json(value: Any) -> Any:
    """A record (or a list or mapping of them) as the JSON value written to disk."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get(_ABSENT_WHEN_NONE) and getattr(value, f.name) is None)}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[R], data: Any, source: str | Path) -> R:
    """The record a JSON object holds; a key it lacks or one the record does not know is a
    one-line MathtuneError naming the source (a file, or a file and the part inside it)."""
    if not isinstance(data, dict):
        raise MathtuneError(f"{source}: expected a JSON object for {cls.__name__}, found {type(data).__name__}")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise MathtuneError(f"{source}: unknown field '{unknown[0]}' in {cls.__name__} "
                            "(written by another mathtune version?)")
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise MathtuneError(f"{source}: missing field '{missing[0]}' of {cls.__name__} "
                            "(written by another mathtune version?)")
    hints = _hints(cls)
    return cls(**{k: _converted(hints[k], v, f"{source}: {k}") for k, v in data.items()})


def write_record(path: Path, record: Any) -> None:
    """A record written atomically as indented JSON (core.runfiles.write_json_atomic)."""
    write_json_atomic(path, to_json(record))


def read_record(cls: type[R], path: Path) -> R:
    """The record a JSON file holds (core.runfiles.read_json, then from_json)."""
    return from_json(cls, read_json(path), path)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _converted(hint: Any, value: Any, source: str) -> Any:
    """A JSON value as the type a field declares: dataclasses (also inside a list, a dict or an
    optional) are built; everything else is kept as read."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _converted(inner[0], value, source) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value, source)
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_converted(item, v, source) for v in value]
    if origin is dict and isinstance(value, dict):
        _, item = typing.get_args(hint) or (str, Any)
        return {k: _converted(item, v, f"{source}.{k}") for k, v in value.items()}
    return value
