"""The one exception type that means "the user gave us something wrong".

The CLI prints it as a single line on stderr and exits non-zero, without a traceback.
Anything else that escapes is a bug in mathtune and keeps its traceback.
"""


class MathtuneError(Exception):
    """A user-facing error: bad input, missing file, unknown key, unusable model."""


def listing(names: list[str], most: int = 5) -> str:
    """Names for a one-line error: the first `most`, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
