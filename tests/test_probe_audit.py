"""The hand audit of the probe's golds (task/probe_audit.json): drawn as task.probe_audit says,
and still what the probe writes."""

import pytest

from mathtune.task.probe_audit import draw_sample, hand_audit, load_audit, upper_bound_pct
from mathtune.task.variants import RULES_VERSION, build_variants


def test_the_audit_covers_each_kind_under_these_rules_and_its_bound_is_exact():
    audit = load_audit()
    assert audit["rules_version"] == RULES_VERSION
    for kind, size in audit["sizes"].items():
        figures = hand_audit(kind, RULES_VERSION)
        assert figures["checked"] == size >= (30 if kind == "names" else 60)
        wrong = sum(not i["gold_right"] for i in audit["items"] if i["kind"] == kind)
        assert figures["wrong"] == wrong
        assert figures["upper95_pct"] == upper_bound_pct(wrong, size)
    # Every disagreement between the hand and the gold was read again and says why.
    assert all(i["note"] for i in audit["items"] if not i["agrees"])
    assert hand_audit("numbers", RULES_VERSION - 1) is None  # older variants: no audit to cite
    assert upper_bound_pct(0, 100) == 3.0 and upper_bound_pct(0, 64) == 4.6 and upper_bound_pct(1, 100) == 4.7


@pytest.mark.full_gsm8k
def test_the_sample_draws_again_and_the_probe_still_writes_each_audited_variant(gsm8k_dir):
    from mathtune.task.data import load_split

    audit = load_audit()
    problems = load_split(str(gsm8k_dir), "test")
    rows, _ = build_variants(problems, variants=audit["variants_per_problem"], seed=audit["probe_seed"],
                             kinds=["numbers", "names", "magnitudes"])
    sample = draw_sample(rows, audit["sizes"], audit["sample_seed"])
    assert [r["id"] for r in sample] == [i["id"] for i in audit["items"]]
    for row, item in zip(sample, audit["items"]):
        assert row["question"] == item["question"]
        assert row["answer"].rsplit("#### ", 1)[1] == item["probe_gold"]
