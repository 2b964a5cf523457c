"""The follow-ups: self-consistency curves, the robustness probe and the self-check turn, on
literal records and hand-checked problems, then end to end on the tiny model."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from mathtune.cli import main
from mathtune.task.data import Problem
from mathtune.analysis.followup_measures import probe_analysis, self_check, self_consistency
from mathtune.evaluation.metrics import curve, ks_for
from mathtune.task.variants import build_variants, format_number, parse_chain
from mathtune.report.followup_sections import probe_verdict_text
from mathtune.evaluation.summary import eval_summary_json as as_json
from mathtune.evaluation.resolve import settled
from synthetic_run import analysis_with, full_eval_summary


def _sample(pred: str | None, gold: str) -> dict:
    return {"pred_strict": pred, "pred_flexible": pred, "correct_strict": pred == gold, "correct_flexible": pred == gold}


def _sampled(pid: str, gold: str, preds: list[str | None]) -> dict:
    return {"id": pid, "gold": gold, "samples": [_sample(p, gold) for p in preds],
            "pred_strict": None, "correct_strict": False}


# --- self-consistency ----------------------------------------------------------------------------


def test_ks_are_powers_of_two_and_k():
    assert ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6] and ks_for(2) == [1, 2]


def test_maj_and_pass_at_k_take_the_first_k_samples():
    records = [
        _sampled("a", "5", ["5", "4", "4", "4"]),  # maj@1 right, maj@2 right (tie: first), maj@4 wrong; pass always
        _sampled("b", "5", ["4", "5", "5", "5"]),  # maj@1 wrong, maj@2 wrong (tie: first), maj@4 right; pass@2 on
        _sampled("c", "5", [None, None, "3", "5"]),  # maj@4: 3 and 5 tie, 3 drawn first: wrong; pass@4 only
    ]
    rows = {r["k"]: r for r in curve(records)}
    assert [rows[k]["maj"]["correct"] for k in (1, 2, 4)] == [1, 1, 1]
    assert [rows[k]["pass"]["correct"] for k in (1, 2, 4)] == [1, 2, 3]
    assert rows[4]["pass"]["accuracy_pct"] == 100.0 and rows[1]["maj"]["ci95_pct"][0] < 33.3 < rows[1]["maj"]["ci95_pct"][1]


def test_vote_is_compared_with_greedy_of_the_same_model(tmp_path):
    (tmp_path / "eval").mkdir()
    same = {"model": "m", "adapter": None, "data": "d", "split": "test", "prompt": "chat"}
    (tmp_path / "eval" / "m-sc4.summary.json").write_text(
        json.dumps(full_eval_summary(**same, samples=4, temperature=0.7, seed=1)))
    (tmp_path / "eval" / "m.summary.json").write_text(json.dumps(full_eval_summary(**same, samples=1, temperature=0.0)))
    voted = [dict(_sampled("a", "5", ["5", "5"]), pred_strict="5", correct_strict=True),
             dict(_sampled("b", "5", ["4", "4"]), pred_strict="4", correct_strict=False)]
    greedy = [{"id": "a", "pred_strict": "5.0", "correct_strict": True},
              {"id": "b", "pred_strict": "5", "correct_strict": True},
              {"id": "c", "pred_strict": None, "correct_strict": False}]  # greedy stated no answer
    voted.append(dict(_sampled("c", "5", ["3", None]), pred_strict="3", correct_strict=False))
    sc = self_consistency(tmp_path, {"m-sc4": voted, "m": greedy})
    g = sc["models"]["m-sc4"]["greedy"]
    assert g["records"] == "m" and g["vote_differs"] == 2 and g["greedy"]["correct"] == 2 and g["vote"]["correct"] == 1
    assert sc["models"]["m-sc4"]["sampling"] == {"temperature": 0.7, "top_p": 1.0, "seed": 1, "max_new_tokens": None}
    assert not self_consistency(tmp_path, {"m": greedy})["available"]


# --- self-check ----------------------------------------------------------------------------------


def test_self_check_counts_fixed_and_broken():
    def rec(first: bool, final: bool, first_pred="1", pred="1") -> dict:
        return {"correct_strict": final, "pred_strict": pred,
                "first_turn": {"correct_strict": first, "pred_strict": first_pred}}

    records = [rec(False, True, "2"), rec(False, True, "3"), rec(True, False, "1", "9"), rec(True, True), rec(False, False)]
    m = self_check({"v": records})["models"]["v"]
    assert (m["fixed"], m["broken"], m["answer_changed"]) == (2, 1, 3)
    assert m["first_turn"]["correct"] == 2 and m["final_turn"]["correct"] == 3
    assert m["net_change"]["points"] == 20.0 and m["net_change"]["ci95_points"][0] <= 20.0 <= m["net_change"]["ci95_points"][1]
    assert not self_check({"plain": [{"correct_strict": True}]})["available"]


# --- the probe's generator -----------------------------------------------------------------------

NATALIA = Problem("test-0", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                  "in May. How many clips did Natalia sell altogether in April and May?",
                  "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                  "altogether in April and May.\n#### 72", "72")
WENG = Problem("test-1", "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
               "How much did she earn?",
               "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10", "10")


def _value(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def test_a_step_that_uses_an_earlier_result_is_recomputed_from_it():
    steps, why = parse_chain(NATALIA)
    assert why is None
    assert [(op.kind, op.value) for op in steps[1].operands] == [("question", 48), ("step", 24)]
    assert steps[0].operands[1].kind == "const"  # the 2 of "half" is the solver's, not the question's
    rows, counts = build_variants([NATALIA], variants=3, seed=1)
    counts = counts["by_kind"]["numbers"]
    assert counts["kept"] == 1 and len(rows) == 3 and len({r["question"] for r in rows}) == 3
    for row in rows:
        new = _value(row["changed"]["48"])
        assert new != 48 and new % 2 == 0  # half of it stays whole
        assert f"clips to {row['changed']['48']} of her friends" in row["question"] and "48" not in row["question"]
        assert _value(row["answer"].rsplit("####", 1)[1]) == new * 3 / 2
        assert row["original_id"] == "test-0" and row["id"].startswith("test-0~v")


def test_hand_checked_rate_problem():
    rows, _ = build_variants([WENG], variants=4, seed=7)
    assert rows
    for row in rows:
        wage, minutes = _value(row["changed"].get("12", "12")), _value(row["changed"].get("50", "50"))
        per_minute = wage / 60
        assert per_minute * 10 == int(per_minute * 10)  # 0.2 had one decimal: so has the new rate
        gold = _value(row["answer"].rsplit("####", 1)[1])
        assert gold == per_minute * minutes and gold.denominator == 1 and gold > 0
        assert f"earns ${format_number(wage)} an hour" in row["question"]
        assert f"did {format_number(minutes)} minutes" in row["question"]


def test_problems_whose_chain_cannot_be_recomputed_are_skipped_with_the_reason():
    wrong = Problem("t-2", "Ann has 2 pens and buys 2 more.", "2+2=<<2+2=5>>5\n#### 5", "5")
    bare = Problem("t-3", "Ann has 3 pens and buys 4 more.", "She has 3 + 4 = 7.\n#### 7", "7")
    words = Problem("t-4", "A box holds 6 eggs. How many eggs are in 3 boxes?", "6*3=<<6*3=18>>18\n#### 18", "18")
    off_chain = Problem("t-5", "Tom reads 10 pages a day for 3 days.", "10*3=<<10*3=30>>30\nplus 1\n#### 31", "31")
    rows, counts = build_variants([wrong, bare, words, off_chain], variants=1, seed=0)
    counts = counts["by_kind"]["numbers"]
    assert counts["skipped"] == {"wrong_annotation": 1, "no_annotations": 1, "gold_not_a_step": 1}
    assert counts["kept"] == 1 and rows[0]["original_id"] == "t-4"
    assert set(counts["skip_reasons"]) == {"wrong_annotation", "no_annotations", "gold_not_a_step"}


def test_variants_stay_sensible_and_are_seeded():
    left = Problem("t-6", "Tom had 10 apples and gave away 7. How many are left?", "10-7=<<10-7=3>>3\n#### 3", "3")
    rows, _ = build_variants([left] * 1, variants=5, seed=3)
    for row in rows:
        assert _value(row["answer"].rsplit("####", 1)[1]) > 0  # a count stays positive
    assert build_variants([left, NATALIA], variants=2, seed=3) == build_variants([left, NATALIA], variants=2, seed=3)
    assert build_variants([NATALIA], variants=2, seed=3)[0] != build_variants([NATALIA], variants=2, seed=4)[0]


# GSM8K test problem 1110 (test-1109), as published.
HEELS = Problem("test-1109", "Three of the women at the cocktail party are wearing 4 inch heels and three are wearing "
                "2 inch heels. What is the average height of heels at this party?",
                "First find the total number of inches from the 4-inch heels: 3 women * 4 inches/woman = "
                "<<3*4=12>>12 inches\nThen find the total number of inches from the 2-inch heels: 3 women * 2 "
                "inches/woman = <<3*2=6>>6 inches\nThen add the total number of inches from each group of heels to "
                "find the overall total: 12 inches + 6 inches = <<12+6=18>>18 inches\nThen find the total number of "
                "women at the party: 3 women + 3 women = <<3+3=6>>6 women\nThen divide the total number of heel "
                "inches by the number of women to find the average heel height per woman: 18 inches / 6 women = "
                "<<18/6=3>>3 inches / woman\n#### 3", "3")


def test_a_variant_keeps_distinct_numbers_distinct():
    """4 inch and 2 inch heels must not both become 3 inch heels: a draw that makes two numbers
    of the question equal is drawn again, and counted."""
    from mathtune.task.variants import question_numbers

    rejected = 0
    for seed in range(6):
        rows, counts = build_variants([HEELS], variants=3, seed=seed)
        counts = counts["by_kind"]["numbers"]
        assert counts["kept"] == 1 and rows
        rejected += counts["draws_rejected"]["numbers_collapse"]
        for row in rows:
            new = [value for _, _, value, _ in question_numbers(row["question"])]
            assert new and len(set(new)) == 2, row["question"]  # the heights stay two heights
            assert row["changed"].get("4") != row["changed"].get("2")
    assert rejected > 0  # 3 and 3 is among the draws, and was turned down


def test_a_problem_whose_every_draw_collapses_numbers_is_skipped_with_its_own_reason():
    # The 2 may only become 1 or 3, the 3 of a held unit fact: no variant keeps them apart.
    eggs = Problem("t-7", "There are 3 feet in a yard. Each week Ann buys 2 dozen eggs. How many eggs does she buy?",
                   "2*12=<<2*12=24>>24\n#### 24", "24")
    rows, counts = build_variants([eggs, NATALIA], variants=1, seed=0)
    counts = counts["by_kind"]["numbers"]
    assert counts["skipped"] == {"numbers_collapse": 1} and counts["kept"] == 1
    assert "two distinct numbers of the question equal" in counts["skip_reasons"]["numbers_collapse"]
    assert [r["original_id"] for r in rows] == ["test-0"]


@pytest.mark.full_gsm8k
def test_on_real_gsm8k_at_least_two_in_five_problems_keep_a_variant_of_each_kind(gsm8k_dir):
    from mathtune.task.data import load_split

    problems = load_split(str(gsm8k_dir), "test")
    rows, counts = build_variants(problems, variants=1, seed=42, kinds=["numbers", "magnitudes"])
    for kind in ("numbers", "magnitudes"):
        c = counts["by_kind"][kind]
        assert c["kept"] + sum(c["skipped"].values()) == len(problems) and c["kept"] >= 0.4 * len(problems)
        assert set(c["skip_reasons"]) == set(c["skipped"])  # every reason counted is named
    for row in rows:  # every variant's gold follows from its own annotated chain
        steps, why = parse_chain(Problem(row["id"], row["question"], row["answer"], row["answer"].rsplit("#### ", 1)[1]))
        assert why is None and steps[-1].result == _value(row["answer"].rsplit("#### ", 1)[1])


def test_probe_gap_pairs_each_variant_with_its_original(tmp_path):
    (tmp_path / "probe").mkdir()
    variants = [{"id": f"p{i}~v{k}", "original_id": f"p{i}", "kind": "numbers"} for i in range(4) for k in (1, 2)]
    (tmp_path / "probe" / "test.jsonl").write_text("".join(json.dumps(v) + "\n" for v in variants))
    originals = [{"id": f"p{i}", "correct_strict": True} for i in range(4)]
    on_variants = [{"id": v["id"], "correct_strict": v["id"].endswith("v1") and v["original_id"] != "p0"}
                   for v in variants]
    out = probe_analysis(tmp_path, {"base": originals, "base-probe": on_variants})
    m = out["kinds"]["numbers"]["models"]["base"]
    assert m["original"]["correct"] == 4 and m["variant"]["correct"] == 3 and m["variant"]["n"] == 8
    assert m["gap"]["points"] == pytest.approx(-62.5)
    assert m["pairs"] == {"solved_original_lost_variant": 5, "failed_original_solved_variant": 0}
    assert m["gap"]["ci95_points"][1] < 0 and "surface" in probe_verdict_text("numbers", m)


# --- end to end on the tiny model ----------------------------------------------------------------


def test_probe_table_shows_mcnemar_p_as_every_table_does():
    """The stored p-value stays as analysis.json has it (1.0, 0.6875); the report writes it with three
    decimals, as the benchmark table does (1.000, 0.688), and names the draws it turned down."""
    from mathtune.report.blocks import Para, Table
    from mathtune.report.followup_sections import followup_blocks

    share = {"correct": 1, "n": 4, "accuracy_pct": 25.0, "ci95_pct": [4.6, 69.9]}
    model = {"original": share, "variant": share, "gap": {"points": 0.0, "ci95_points": [-50.0, 50.0]},
             "pairs": {"solved_original_lost_variant": 1, "failed_original_solved_variant": 1},
             "verdict": "no difference shown"}
    counts = {"kept": 4, "skipped": {"numbers_collapse": 1}, "draws_rejected": {"numbers_collapse": 3},
              "skip_reasons": {"numbers_collapse": "every sensible draw ..."}}
    probe = {"available": True, "bootstrap_resamples": 10_000,
             "generator": {"problems": 5, "variants_per_problem": 1, "seed": 42},
             "kinds": {"numbers": {"generator": counts, "models": {"base": {**model, "mcnemar_p": 1.0},
                                                                    "tuned": {**model, "mcnemar_p": 0.6875}}}}}
    blocks = followup_blocks(analysis_with(probe=probe), set())
    table = next(b for b in blocks if isinstance(b, Table))
    assert [row[-1] for row in table.rows] == ["1.000", "0.688"]
    assert any(isinstance(b, Para) and "drawn again: 3 two distinct numbers" in b.text for b in blocks)


def test_chat_verify_records_both_turns_and_scores_the_last(tiny_model_dir, small_data_dir, tmp_path, one_thread):
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest

    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=4, max_new_tokens=6,
                      prompt="chat-verify", batch_size=2)
    summary = as_json(evaluate(settled(req, tmp_path, "v"), tmp_path, name="v"))
    assert "second turn asking the model to check its work" in summary["protocol"]
    from mathtune.task.score import score_completion

    for line in (tmp_path / "eval" / "v.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert set(r["first_turn"]) >= {"completion", "pred_strict", "correct_strict", "num_generated_tokens"}
        assert r["correct_strict"] == score_completion(r["completion"], r["gold"])["correct_strict"]
        assert r["num_generated_tokens"] > r["first_turn"]["num_generated_tokens"]
    with pytest.raises(Exception, match="samples 1"):
        as_json(evaluate(EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=2, prompt="chat-verify",
                             samples=2, temperature=0.7), tmp_path, name="v2"))


def test_same_seed_same_samples(tiny_model_dir, small_data_dir, tmp_path, one_thread):
    from mathtune.evaluation.evaluate import evaluate
    from mathtune.evaluation.request import EvalRequest

    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=3, max_new_tokens=6, samples=3,
                      temperature=1.0, batch_size=3, seed=5)
    for out in ("a", "b"):
        as_json(evaluate(settled(req, tmp_path / out, "s"), tmp_path / out, name="s"))
    assert (tmp_path / "a" / "eval" / "s.jsonl").read_bytes() == (tmp_path / "b" / "eval" / "s.jsonl").read_bytes()


def test_probe_command_writes_variants_records_and_a_report(tiny_model_dir, small_data_dir, tmp_path, one_thread):
    out = tmp_path / "probe-run"
    assert main(["probe", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "8",
                 "--variants", "2", "--max-new-tokens", "4", "--name", "m", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in (out / "eval").glob("*.jsonl")} == {"m.jsonl", "m-probe.jsonl"}
    variants = [json.loads(x) for x in (out / "probe" / "test.jsonl").read_text().splitlines()]
    records = [json.loads(x) for x in (out / "eval" / "m-probe.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [v["id"] for v in variants]
    analysis = json.loads((out / "analysis.json").read_text())
    numbers = analysis["probe"]["kinds"]["numbers"]["models"]["m"]
    assert analysis["probe"]["available"] and numbers["variant"]["n"] == len(variants)
    assert "m-probe" not in analysis["benchmark"]["models"]
    assert "## Robustness to changed numbers" in (out / "report.md").read_text()
    # Other settings over the same folder are refused, not mixed in.
    assert main(["probe", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "8",
                 "--variants", "3", "--max-new-tokens", "4", "--name", "m", "--out", str(out), "--quiet"]) == 1
    assert main(["probe", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "8",
                 "--variants", "2", "--max-new-tokens", "4", "--name", "m", "--out", str(out), "--quiet",
                 "--kinds", "numbers,names"]) == 1

    # --kinds numbers is the default, to the byte; names beside it are paired on their own.
    explicit, both = tmp_path / "explicit", tmp_path / "both"
    for folder, kinds in ((explicit, "numbers"), (both, "names,numbers")):
        assert main(["probe", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "8",
                     "--variants", "2", "--max-new-tokens", "4", "--name", "m", "--out", str(folder), "--quiet",
                     "--kinds", kinds]) == 0
    for name in ("test.jsonl", "summary.json"):
        assert (explicit / "probe" / name).read_bytes() == (out / "probe" / name).read_bytes()
    rows = [json.loads(x) for x in (both / "probe" / "test.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"numbers", "names"} and all(r["original_id"] for r in rows)
    assert [r for r in rows if r["kind"] == "numbers"] == variants
    analysis = json.loads((both / "analysis.json").read_text())
    names = analysis["probe"]["kinds"]["names"]["models"]["m"]
    assert names["variant"]["n"] == sum(r["kind"] == "names" for r in rows) > 0
    report = (both / "report.md").read_text()
    assert report.index("## Renamed people") > report.index("## Robustness to changed numbers")
    # Each kind's section cites the hand audit of its golds, with the numbers analysis.json holds.
    audit = analysis["probe"]["kinds"]["numbers"]["hand_audit"]
    assert audit["checked"] == 100 and audit["wrong"] == 0
    assert report.count("Gold answers audited by hand") == 2 and f"below {audit['upper95_pct']}%" in report


# --- variants a careful writer would sign ---------------------------------------------------------

# GSM8K test problem 23 (test-22), as published: "His next 2 customers" once became "1 customers".
BILLY = Problem("test-22", "Billy sells DVDs. He has 8 customers on Tuesday. His first 3 customers buy one DVD each.  "
                "His next 2 customers buy 2 DVDs each.  His last 3 customers don't buy any DVDs. How many DVDs did "
                "Billy sell on Tuesday?",
                "His first 3 customers buy 3 * 1 = <<3*1=3>>3 DVDs.\nHis next 2 buy 2 * 2 = <<2*2=4>>4 DVDs.\n"
                "He sells a total of 3 + 4 + 0 = <<3+4+0=7>>7 DVDs.\n#### 7", "7")
CANDLE = Problem("test-23", "A candle melts by 2 centimeters every hour that it burns. How many centimeters shorter "
                 "will a candle be after burning from 1:00 PM to 5:00 PM?",
                 "The candle burns for 5 - 1 = <<5-1=4>>4 hours.\nThus, the candle will be 2 * 4 = <<2*4=8>>8 "
                 "centimeters shorter.\n#### 8", "8")
ONE_BEFORE_PLURAL = __import__("re").compile(r"(?<![\d.,/$])\b1 ([a-z]+(?<![su])s)\b")


def test_a_count_is_never_drawn_as_1_and_a_1_is_never_changed():
    pens = Problem("t-12", "Ann buys 2 pens for $3 each and 4 pencils for $2 each. How much does she pay?",
                   "2*3=<<2*3=6>>6\n4*2=<<4*2=8>>8\n6+8=<<6+8=14>>14\n#### 14", "14")
    rows, counts = build_variants([pens], variants=3, seed=0)
    counts = counts["by_kind"]["numbers"]
    assert rows
    for row in rows:
        assert not ONE_BEFORE_PLURAL.search(row["question"]), row["question"]
        assert "1" not in row["changed"].values() and "1" not in row["changed"]
    assert counts["draws_rejected"]["count_of_one"] > 0  # 2 may become 1 or 3: the 1 was drawn, and turned down
    assert "count_of_one" in counts["draw_rules"]
    # "1 hour" stays "1 hour": the 1 is held, the 3 beside it changes.
    hour = Problem("t-8", "Ann reads 3 pages in 1 hour. How many pages does she read in 4 hours?",
                   "3*4=<<3*4=12>>12\n#### 12", "12")
    rows, counts = build_variants([hour], variants=2, seed=1)
    counts = counts["by_kind"]["numbers"]
    assert rows and counts["held"]["one"] == 1
    assert all("in 1 hour." in r["question"] and "1 hours" not in r["question"] for r in rows)


def test_a_number_the_chain_leaves_out_or_a_clock_time_skips_the_problem():
    """Billy's 8 customers are 3 + 2 + 3: new 3s and 2s beside the old 8 would contradict it; the
    candle's 5 - 1 are the hours of 1:00 PM and 5:00 PM, no quantities of the question."""
    rows, counts = build_variants([BILLY, CANDLE], variants=3, seed=0)
    assert not rows
    assert counts["by_kind"]["numbers"]["skipped"] == {"unused_number": 1, "unexplained_constant": 1}


def test_a_fraction_is_one_value_and_its_parts_are_never_drawn():
    seniors = Problem("test-369", "44 seniors need awards. 1/4 of the seniors are officers and need cords that are $12 "
                      "each. How much is spent on cords?",
                      "The number of seniors receiving cords is 1/4 * 44 = <<1/4*44=11>>11 seniors.\nThe total cost "
                      "of cords is 11 seniors * $12 = $<<11*12=132>>132.\n#### 132", "132")
    windows = Problem("test-727", "She smashes 3/4ths of the teachers' cars' windows. If there are 32 teachers' cars "
                      "with 4 windows each, how many windows does she smash?",
                      "32 cars * 3/4 = <<32*3/4=24>>24 cars\n24 cars * 4 windows/car = <<24*4=96>>96 windows\n#### 96",
                      "96")
    ball = Problem("test-1089", "A ball bounces to 2/3rds of its starting height with each bounce. If it is dropped "
                   "from 72 feet, how high does it go on its second bounce?",
                   "72 feet * 2/3 = <<72*2/3=48>>48 feet\n48 feet * 2/3 = <<48*2/3=32>>32 feet\n#### 32", "32")
    rows, counts = build_variants([seniors, windows, ball], variants=3, seed=5)
    counts = counts["by_kind"]["numbers"]
    assert counts["held"]["fraction"] == 3
    kept = {r["original_id"] for r in rows}
    assert kept == {"test-369", "test-727", "test-1089"}
    for row in rows:
        assert not any("/" in k for k in row["changed"])
        for fraction in ("1/4 of the seniors", "3/4ths of", "2/3rds of"):
            original = next(p for p in (seniors, windows, ball) if p.id == row["original_id"]).question
            assert (fraction in original) == (fraction in row["question"])
        steps, why = parse_chain(Problem(row["id"], row["question"], row["answer"], row["answer"].rsplit("#### ", 1)[1]))
        assert why is None and steps[-1].result == _value(row["answer"].rsplit("#### ", 1)[1])
    # The 4 of "4 windows" changes; the 4 of 3/4 stays the fraction's (the chain is recomputed with it).
    assert any("4" in r["changed"] and "3/4" in r["answer"] for r in rows if r["original_id"] == "test-727")


def test_facts_of_the_calendar_and_of_units_are_held():
    february = Problem("test-643", "A news website publishes an average of 20 articles every day. Its sister company "
                       "publishes an average of 10 articles daily. Calculate the total number of articles the two "
                       "published together in February if there are 28 days in the month.",
                       "28*20=<<28*20=560>>560 articles.\n10*28=<<10*28=280>>280 articles.\n"
                       "280+560=<<280+560=840>>840\n#### 840", "840")
    march = Problem("test-1096", "Billy helps 2 people per hour for 3 hours a day. How many people does he help "
                    "between March 1st and April 19th? (Remember there are 31 days in March.)",
                    "31 days + 19 days = <<31+19=50>>50 days\n2*3=<<2*3=6>>6 people/day\n6*50=<<6*50=300>>300\n"
                    "#### 300", "300")
    week = Problem("t-9", "Tom works 8 hours a day, 5 days a week. There are 7 days in a week. How many hours does "
                   "he work in 4 weeks?", "8*5=<<8*5=40>>40\n40*4=<<40*4=160>>160\n#### 160", "160")
    rows, counts = build_variants([february, march, week], variants=4, seed=2)
    counts = counts["by_kind"]["numbers"]
    # March's 50 days are 31 + 19, the 19 of "April 19th": a date, no number the variant may change.
    assert counts["skipped"] == {"unexplained_constant": 1}
    assert counts["held"]["unit_fact"] == 2 and {r["original_id"] for r in rows} == {"test-643", "t-9"}
    for row in rows:
        assert "28" not in row["changed"] and "31" not in row["changed"]
        assert ("28 days in the month" in row["question"]) == (row["original_id"] == "test-643")
        assert ("31 days in March" in row["question"]) == (row["original_id"] == "test-1096")
        if row["original_id"] == "t-9":  # bounded by the day and the week they are counted in
            assert _value(row["changed"].get("8", "8")) <= 24 and _value(row["changed"].get("5", "5")) <= 7
            assert "7 days in a week" in row["question"]


@pytest.mark.full_gsm8k
def test_the_issue_examples_from_the_real_test_set(gsm8k_dir):
    from mathtune.task.data import load_split

    problems = {p.id: p for p in load_split(str(gsm8k_dir), "test")}
    picked = [problems[f"test-{i}"] for i in (8, 22, 23, 369, 643, 727, 1089, 1096)]
    rows, _ = build_variants(picked, variants=3, seed=42)
    assert rows
    for row in rows:
        original = problems[row["original_id"]].question
        assert not ONE_BEFORE_PLURAL.search(row["question"]) or ONE_BEFORE_PLURAL.search(original)
        assert "1" not in row["changed"] and "28" not in row["changed"] and "31" not in row["changed"]
        assert __import__("re").findall(r"\d+/\d+\w*", row["question"]) == __import__("re").findall(r"\d+/\d+\w*", original)
        assert row["kind"] == "numbers"


# --- the names kind --------------------------------------------------------------------------------


def test_names_are_replaced_everywhere_with_the_same_gender_and_nothing_else_changes():
    from mathtune.task.renaming import FEMALE, MALE

    two = Problem("t-10", "James has 5 apples and Maria has 3. James' apples and Maria's apples go in one box. "
                  "How many apples are in the box?",
                  "James and Maria have 5+3=<<5+3=8>>8 apples.\n#### 8", "8")
    rows, counts = build_variants([NATALIA, two, BILLY, CANDLE], variants=2, seed=3, kinds=["numbers", "names"])
    names = [r for r in rows if r["kind"] == "names"]
    assert counts["kinds"] == ["numbers", "names"]
    assert counts["by_kind"]["names"]["skipped"] == {"no_person_name": 1}  # the candle has no person
    assert {r["original_id"] for r in names} == {"test-0", "t-10", "test-22"} and len(names) == 6
    digits = __import__("re").compile(r"\d+")
    by_id = {p.id: p for p in (NATALIA, two, BILLY)}
    for row in names:
        original = by_id[row["original_id"]]
        assert row["id"].startswith(original.id + "~names-v") and row["changed"]
        assert digits.findall(row["question"]) == digits.findall(original.question)
        assert row["answer"].rsplit("#### ", 1)[1] == original.gold
        for old, new in row["changed"].items():
            assert old not in row["question"] and new in row["question"]
            assert (old in FEMALE) == (new in FEMALE) and (old in MALE) == (new in MALE)
        if row["original_id"] == "t-10":
            james, maria = row["changed"]["James"], row["changed"]["Maria"]
            assert f"{james}'{'' if james.endswith('s') else 's'} apples and {maria}'s apples" in row["question"]
    # Asking for names beside numbers leaves the numbers' variants as they were.
    alone, _ = build_variants([NATALIA, two, BILLY, CANDLE], variants=2, seed=3)
    assert alone == [r for r in rows if r["kind"] == "numbers"]


def test_a_name_that_is_also_a_word_counts_only_mid_sentence():
    from mathtune.task.renaming import people

    assert people("Mark the boxes. Each box holds 4 pens.") == []
    assert people("Bill buys 4 pens. Then Bill sells 2.") == ["Bill"]
    assert people("Alex has 2 cats and she feeds them.") == ["Alex"]


def test_magnitudes_scale_every_changed_number_tenfold_or_more_and_recompute():
    rows, counts = build_variants([NATALIA, WENG, BILLY], variants=2, seed=4, kinds=["magnitudes"])
    assert counts["kinds"] == ["magnitudes"] and rows
    for row in rows:
        assert row["kind"] == "magnitudes" and row["id"].startswith(row["original_id"] + "~magnitudes-v")
        factors = {_value(new) / _value(old) for old, new in row["changed"].items()}
        assert len(factors) == 1 and factors <= {10, 100, 1000}  # one factor: the story keeps its proportions
        gold = row["answer"].rsplit("#### ", 1)[1]
        steps, why = parse_chain(Problem(row["id"], row["question"], row["answer"], gold))
        assert why is None and steps[-1].result == _value(gold)
    weng = [r for r in rows if r["original_id"] == "test-1"]  # minutes scale; hours and days would not
    assert weng and all(_value(r["changed"]["50"]) in (500, 5000, 50000) for r in weng)
    assert any("," in r["question"] for r in rows if max(_value(v) for v in r["changed"].values()) >= 1000)


def test_a_and_an_follow_the_new_number_and_ages_stay_human():
    from mathtune.task.variants import fix_articles

    assert fix_articles("a 5-hour day and an $11 hat", {"8", "110"}) == "a 5-hour day and an $11 hat"
    assert fix_articles("a 8-hour day and an $110 hat, A 11,000 m", {"8", "110", "11,000"}) == \
        "an 8-hour day and a $110 hat, An 11,000 m"
    ages = Problem("t-11", "John had a son when he was 19. His son will turn 12 in 3 years. How old is John?",
                   "19+12-3=<<19+12-3=28>>28\n28+3=<<28+3=31>>31\n#### 31", "31")
    rows, counts = build_variants([ages], variants=3, seed=0, kinds=["magnitudes"])
    assert not rows and counts["by_kind"]["magnitudes"]["skipped"] == {"ages": 1}  # 190 and 120 are no ages
