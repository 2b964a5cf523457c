"""A table of named kinds (prompt kinds, training methods, decoders, probe kinds): each kind is
one entry, registered once under its name; the rest of the code looks the entry up and asks it,
and never compares the name."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from mathtune.core.errors import MathtuneError

Entry = TypeVar("Entry")


class KindTable(Generic[Entry]):
    """Entries by name, in the order they were registered. `what` names the kind in the one-line
    error for a name the table does not hold ("unknown prompt 'x' (expected one of a, b)")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, entry: Entry) -> Entry:
        if name in self._entries:
            raise ValueError(f"{self.what} '{name}' is registered already")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise MathtuneError(f"unknown {self.what} '{name}' (expected one of {', '.join(self._entries)})")
        return self._entries[name]

    def find(self, name: str) -> Entry | None:
        """The entry, or None for a name this table does not hold (a name read from an older file)."""
        return self._entries.get(name)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def items(self) -> Iterator[tuple[str, Entry]]:
        return iter(self._entries.items())
