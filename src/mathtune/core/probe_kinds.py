"""The probe's kinds of variant: what each one changes, how its variants are named, and what the
report says of it. One entry per kind; task.variants makes the variants from the entry, the
pipeline, the analysis and the report read it back by the name a probe file records. The table
sits in the core because the report, which imports the core alone, says what each kind is.

A kind of variant is one `PROBE_KIND_TABLE.register(name, ProbeKind(...))`; its variants are
made by one of the two makers task.variants has: drawn numbers (recomputed through the
solution's calculator annotations, or scaled by one factor with `scales`) or renamed people
(`renames`)."""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.core.kinds import KindTable


@dataclass(frozen=True)
class ProbeKind:
    title: str  # the report's heading for this kind
    changes: str  # what a variant of this kind changed, as the report's table states it
    surface: tuple[str, str, str]  # (what the originals rest on, the variant, the change): a model's verdict
    id_form: str  # a variant's id, from the original's id and the variant's number k
    renames: bool = False  # renames the people (gold unchanged); else draws the numbers (gold recomputed)
    scales: bool = False  # the numbers all scaled by one factor, written at their new scale
    named_in_line: bool = True  # the terminal's probe line names the kind
    figure: str | None = None  # the report's figure of originals against variants
    beside_contamination: bool = False  # the report shows it beside the contamination check

    def variant_id(self, original: str, k: int) -> str:
        return self.id_form.format(id=original, k=k)


PROBE_KIND_TABLE: KindTable[ProbeKind] = KindTable("probe kind")

PROBE_KIND_TABLE.register("numbers", ProbeKind(
    title="Robustness to changed numbers",
    changes="the question's numbers changed, the gold answer recomputed through the solution's calculator annotations",
    surface=("their particular numbers", "the same problem with other numbers", "changed numbers"),
    id_form="{id}~v{k}", named_in_line=False, figure="probe.png"))
PROBE_KIND_TABLE.register("names", ProbeKind(
    title="Renamed people: the memorization check beside the contamination check",
    changes="the people's first names replaced, every occurrence, by names of the same grammatical gender that agree "
            "with their titles and relations (places and businesses keep their names); digits and gold answer "
            "unchanged (GSM-Symbolic's memorization check: a problem solved as written but not renamed was "
            "remembered, not reasoned)",
    surface=("their particular names", "the same problem with its people renamed", "renamed people"),
    id_form="{id}~names-v{k}", renames=True, beside_contamination=True))
PROBE_KIND_TABLE.register("magnitudes", ProbeKind(
    title="Robustness to larger numbers",
    changes="the question's numbers scaled by one factor of 10, 100 or 1,000 (percentages, multipliers, times, facts "
            "of units and numbers a unit bounds held; questions about ages skipped), the gold answer recomputed "
            "through the calculator annotations",
    surface=("the size of their numbers", "the same problem at ten to a thousand times the scale", "larger numbers"),
    id_form="{id}~magnitudes-v{k}", scales=True))
