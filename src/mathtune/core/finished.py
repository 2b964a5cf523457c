"""When a stage's output is finished: the one rule every stage of a run folder follows.

    if finished_stage(held, wanted, where=str(run_dir), what="a run of a different config",
                      overwrite=overwrite):
        return  # made before with these settings: reused
    ...       # made (again)

`held` is the settings identity the output already there was made with (None: there is none,
or it is not whole), `wanted` the one this command asks for. The same settings: the output is
finished and reused. Other settings: refused with one line naming the settings that differ and
--overwrite, unless overwrite is set; then the stage is made again over it, as that stage's
--overwrite says, and `replacing` says so. A finished output is never replaced in silence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mathtune.core.errors import MathtuneError, listing

REPLACE_ADVICE = "use --overwrite to replace it, or another --out"


def differing_settings(held: Mapping, wanted: Mapping, prefix: str = "") -> list[str]:
    """The settings in which two settings identities differ, sorted; a section both hold (a
    mapping) is compared setting by setting, each named by its dotted path ("lora.r")."""
    keys = []
    for key in sorted(set(held) | set(wanted)):
        a, b = held.get(key), wanted.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            keys += differing_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def finished_stage(held: Any, wanted: Any, *, where: str, what: str, overwrite: bool,
                   advice: str = REPLACE_ADVICE, differs: Callable[[Any, Any], list[str]] = differing_settings,
                   replacing: Callable[[list[str]], None] | None = None) -> bool:
    """Whether the stage's output under `where` is finished for the wanted settings (True: reuse
    it). False when there is none (held is None), or when overwrite replaces one of other
    settings (`replacing` is told the settings it differs in). One of other settings without
    overwrite: MathtuneError "WHERE holds WHAT (differs in ...); ADVICE". `differs` names the
    settings two identities differ in ([]: the same)."""
    if held is None:
        return False
    changed = differs(held, wanted)
    if not changed:
        return True
    if not overwrite:
        raise MathtuneError(f"{where} holds {what} (differs in {listing(changed)}); {advice}")
    if replacing is not None:
        replacing(changed)
    return False
