"""The hand audit of the probe's golds, in two steps (task.probe_audit says how it is drawn).

    python bench/probe_hand_audit.py draw --out DIR [--data ../shared/gsm8k]
        draws the sample and writes DIR/blind_K.json (id and question only: what a solver sees,
        never the probe's chain or gold), DIR/sample.json (the variants with their golds) and
        DIR/key.json (audit id -> variant id)
    python bench/probe_hand_audit.py record --out DIR [--notes NOTES.json]
        reads the solvers' DIR/answers_K.json ({audit_id, answer, work, text_issue} each),
        sets each answer beside the probe's gold, and writes src/mathtune/task/probe_audit.json;
        NOTES.json ({variant id: {"gold_right": bool, "note": "..."}}) settles each disagreement
        after reading the variant again by hand. A disagreement left unsettled counts as a
        wrong gold.

The solvers read each variant's text alone and answer it; a disagreement is read again by hand
against the variant's text, and the note says who was right and why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
from fractions import Fraction
from pathlib import Path

from mathtune.task.data import load_split
from mathtune.task.probe_audit import AUDIT_FILE, draw_sample
from mathtune.task.variants import RULES_VERSION, build_variants

SIZES = {"numbers": 100, "magnitudes": 100, "names": 64}
SAMPLE_SEED = 20261207
PROBE_SEED = 42
SOLVERS = 4


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(str(text).replace(",", "").replace("$", "").strip())
    except (ValueError, ZeroDivisionError):
        return None


def draw(out: Path, data: Path) -> None:
    problems = load_split(str(data), "test")
    rows, _ = build_variants(problems, variants=1, seed=PROBE_SEED, kinds=["numbers", "names", "magnitudes"])
    sample = draw_sample(rows, SIZES, SAMPLE_SEED)
    out.mkdir(parents=True, exist_ok=True)
    key = {f"B{i:03d}": r["id"] for i, r in enumerate(sample)}
    (out / "sample.json").write_text(json.dumps(sample, indent=1))
    (out / "key.json").write_text(json.dumps(key))
    blind = [{"audit_id": a, "question": r["question"]} for a, r in zip(key, sample)]
    order = list(range(len(blind)))
    random.Random(11).shuffle(order)  # each solver gets a mix of kinds, in no telling order
    for k in range(SOLVERS):
        (out / f"blind_{k}.json").write_text(json.dumps([blind[i] for i in order[k::SOLVERS]], indent=1))
    print(f"{len(sample)} variants drawn into {out}")


def record(out: Path, notes_file: Path | None, problems_total: int) -> None:
    sample = {r["id"]: r for r in json.loads((out / "sample.json").read_text())}
    key = json.loads((out / "key.json").read_text())
    answers = {a["audit_id"]: a for k in range(SOLVERS) for a in json.loads((out / f"answers_{k}.json").read_text())}
    notes = json.loads(notes_file.read_text()) if notes_file else {}
    items = []
    for audit_id, variant_id in key.items():
        row, answer = sample[variant_id], answers[audit_id]
        gold = row["answer"].rsplit("#### ", 1)[1]
        agrees = _number(answer["answer"]) == _number(gold)
        settled = notes.get(variant_id, {})
        items.append({"id": variant_id, "kind": row["kind"], "original_id": row["original_id"],
                      "question": row["question"], "probe_gold": gold, "hand_answer": str(answer["answer"]),
                      "hand_work": answer.get("work", ""), "agrees": agrees,
                      "gold_right": agrees if not settled else bool(settled["gold_right"]),
                      "text_issue": answer.get("text_issue", ""), "note": settled.get("note", "")})
    audit = {"date": datetime.date.today().isoformat(), "rules_version": RULES_VERSION, "probe_seed": PROBE_SEED,
             "variants_per_problem": 1, "sample_seed": SAMPLE_SEED, "sizes": SIZES,
             "drawn_from": f"the {problems_total:,} GSM8K test problems",
             "method": "each variant solved from its text alone by a reader who never saw the probe's chain or "
                       "gold; every disagreement read again by hand against the variant's text",
             "items": items}
    AUDIT_FILE.write_text(json.dumps(audit, indent=1, ensure_ascii=False) + "\n")
    for kind in SIZES:
        kind_items = [i for i in items if i["kind"] == kind]
        print(f"{kind}: {len(kind_items)} checked, {sum(not i['agrees'] for i in kind_items)} disagreements, "
              f"{sum(not i['gold_right'] for i in kind_items)} wrong golds")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["draw", "record"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/gsm8k"))
    ap.add_argument("--notes", type=Path)
    args = ap.parse_args()
    if args.step == "draw":
        draw(args.out, args.data)
    else:
        record(args.out, args.notes, len(load_split(str(args.data), "test")))


if __name__ == "__main__":
    main()
