"""`mathtune plan`: counts that must equal what training then does, a named device without a
measured throughput, and no weights read."""

import json
import re

import pytest

from conftest import max_length_dropping_some, tiny_train_config, training_lengths
from mathtune.core.errors import MathtuneError
from mathtune.core.record_json import to_json
from mathtune.plan import ASSUMED_UTILISATION, PEAK_TFLOPS, make_plan


@pytest.fixture
def shipped_rates_only(tmp_path, monkeypatch):
    """A plan from the shipped throughputs alone: earlier tests' runs have left this session's
    measured rates, which the plan would otherwise take as its basis."""
    monkeypatch.setenv("MATHTUNE_RATES", str(tmp_path / "no-measured-rates.json"))


@pytest.mark.usefixtures("shipped_rates_only")
def test_plan_counts_match_what_training_builds(tiny_model_dir, small_data_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from mathtune.models.load import load_tokenizer
    from mathtune.train.trainer import build_datasets, make_lora_config

    tokenizer = load_tokenizer(str(tiny_model_dir))
    lengths = training_lengths(tiny_model_dir, small_data_dir)
    max_length = max_length_dropping_some(lengths)
    config = tiny_train_config(tiny_model_dir, small_data_dir, f"data.max_length={max_length}")
    plan = make_plan(config, device="cpu")
    train_set, _, counts = build_datasets(config, tokenizer)
    assert plan.data.train.examples - plan.data.train.dropped_over_max_length == counts["train_examples"]
    assert plan.data.train.dropped_over_max_length == counts["dropped_too_long"]["train"] > 0
    assert plan.data.validation.examples - plan.data.validation.dropped_over_max_length == counts["val_examples"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainable = sum(p.numel() for p in get_peft_model(model, make_lora_config(config, model)).parameters() if p.requires_grad)
    assert plan.trainable_params == trainable
    assert plan.train_tokens_per_epoch == sum(x for x in lengths if x <= max_length) == sum(
        map(len, train_set["input_ids"]))
    assert plan.data.train.max == max(lengths)
    assert plan.time_basis.startswith("measured throughput 'cpu-")
    assert plan.cost_usd is None


def test_a_device_without_a_measurement_uses_a_stated_share_of_its_peak(tiny_model_dir, small_data_dir):
    config = tiny_train_config(tiny_model_dir, small_data_dir)
    plan = make_plan(config, device="a100")
    assert f"{round(ASSUMED_UTILISATION * 100)}% of its {PEAK_TFLOPS['a100']} TFLOP/s" in plan.time_basis
    rate = PEAK_TFLOPS["a100"] * 1e12 * ASSUMED_UTILISATION
    # Kept to two significant digits below 0.1 s (the tiny model's microseconds), never rounded to 0.
    assert plan.time_s.train == pytest.approx(plan.flops.train / rate, rel=0.05)
    assert plan.time_s.train > 0
    assert plan.cost_usd is not None
    with pytest.raises(MathtuneError, match="no throughput measured on 'tpu9'"):
        make_plan(config, device="tpu9")
    with pytest.raises(MathtuneError, match="covers train.method sft"):
        make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "train.method=rft"), device="cpu")


def test_plan_and_training_count_parameters_alike(trained_run, tiny_model_dir, small_data_dir):
    """One definition in both: the total is the base model's parameters plus the adapter's, and
    the plan says so, with thousands separators as the report writes them."""
    from mathtune.plan import format_plan

    plan = make_plan(tiny_train_config(tiny_model_dir, small_data_dir), device="cpu")
    summary = json.loads((trained_run / "train" / "summary.json").read_text())
    assert (plan.trainable_params, plan.total_params) == (summary["trainable_params"], summary["total_params"])
    assert plan.base_params == summary["base_params"] == plan.total_params - plan.trainable_params
    t, total, base = plan.trainable_params, plan.total_params, plan.base_params
    assert f"{t:,} trainable of {total:,} (base {base:,} + adapter)" in " ".join(format_plan(plan).split())


@pytest.mark.usefixtures("shipped_rates_only")
def test_a_model_far_from_every_measurement_is_said_to_be_extrapolated(tiny_model_dir, small_data_dir):
    """The tiny model is thousands of times smaller than the measured 0.49B: its time is scaled
    far outside what was measured. The plan says so, and shows no time as 0."""
    from mathtune.plan import format_plan

    plan = make_plan(tiny_train_config(tiny_model_dir, small_data_dir), device="cpu")
    assert plan.time_extrapolated is True and "extrapolated: this model" in plan.time_basis
    assert "smaller than the measured one" in plan.time_basis and "x0.00 " not in plan.time_basis
    assert all(value > 0 for value in to_json(plan.time_s).values())
    text = format_plan(plan)
    assert " 0 s" not in text and "under 1 s" in text


def test_plan_command_reads_no_weights(tiny_model_dir, small_data_dir, tmp_path, capsys, monkeypatch):
    import transformers

    from mathtune.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("the plan must not load weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  source: {small_data_dir}\n")
    assert main(["plan", str(config), "--device", "h100", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "h100" and plan["optimizer_steps"] >= 1 and plan["cost_usd"] is not None
    assert main(["plan", str(config), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"plan of {tiny_model_dir.name}-gsm8k-lora on cpu") and "optimizer steps" in text
    assert "FLOPs are" not in text and "--verbose" in text  # the formulas are one option away
    assert main(["plan", str(config), "--device", "cpu", "--verbose"]) == 0
    assert "FLOPs are" in capsys.readouterr().out


@pytest.mark.usefixtures("shipped_rates_only")
def test_the_plan_fits_a_terminal_and_names_the_rates_once(tiny_model_dir, small_data_dir, tmp_path, capsys):
    """No line over 100 characters on any device, verbose or not; the rates' source is named in
    one line; a GPU cost too small for cents is not shown as $0.0."""
    from mathtune.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  source: {small_data_dir}\n")
    for extra in ([], ["--device", "h100"], ["--device", "a100", "--verbose"], ["--verbose"]):
        assert main(["plan", str(config), *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= 100, max(lines, key=len)
        named = sum("throughputs.json" in line or "no throughput measured" in line for line in lines)
        assert named == 1 or "--verbose" in extra and named == 2  # verbose adds the derivation
        assert not any(re.search(r"cost +\$0\.0+ ", line) for line in lines)
    assert main(["plan", str(config), "--device", "h100", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["flops"]["formula"] and plan["time_basis"] and plan["rates_from"]


@pytest.mark.usefixtures("shipped_rates_only")
def test_evaluation_time_is_expected_from_answer_lengths_with_the_bound_beside_it(tiny_model_dir, small_data_dir):
    """Answers as long as the gold solutions cost less than answers at max_new_tokens; the bound
    grows with max_new_tokens, the expected time does not when no answer reaches it."""
    from mathtune.plan import format_plan

    short = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "eval.max_new_tokens=1024"), device="cpu")
    long = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "eval.max_new_tokens=2048"), device="cpu")
    assert short.evaluation.answer_tokens_from.startswith("the data's gold solutions")
    assert short.time_s.evaluation < short.time_s.evaluation_bound < long.time_s.evaluation_bound
    assert short.time_s.evaluation == long.time_s.evaluation
    text = " ".join(format_plan(short).split())
    assert "the data's gold solutions: mean" in text and "if every answer runs to max_new_tokens 1024" in text


def test_packed_rows_follow_best_fit_decreasing():
    from mathtune.plan import packed_rows

    # 384 alone; 300 + 84; 200 + 100 (best fit puts 100 with 200, not in 300's 84 of room)
    assert packed_rows([300, 200, 100, 384, 84], 384) == 3
    assert packed_rows([200] * 5, 384) == 5 and packed_rows([100] * 8, 384) == 3


def test_the_plan_reflects_quantization_and_the_adapter_variant(tiny_model_dir, small_data_dir, tmp_path, capsys):
    """Weights shrink with the quantization, the full-precision figure is given beside it, and
    DoRA's magnitude vectors count as trainable parameters, as training builds them."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from mathtune.cli import main
    from mathtune.train.trainer import make_lora_config

    plans = {q: make_plan(tiny_train_config(tiny_model_dir, small_data_dir, f"model.quantization={q}"), device="cpu")
             for q in ("none", "8bit", "4bit")}
    weights = {q: p.peak_memory_parts_bytes["weights"] for q, p in plans.items()}
    assert weights["4bit"] < weights["8bit"] < weights["none"]
    assert plans["none"].full_precision is None and plans["none"].quantization == "none"
    for q in ("8bit", "4bit"):
        assert plans[q].full_precision.peak_memory_gib == plans["none"].peak_memory_gib
        assert plans[q].peak_memory_parts_bytes["activations"] == plans["none"].peak_memory_parts_bytes["activations"]
        assert plans[q].trainable_params == plans["none"].trainable_params

    # Accumulated micro-batches run one after another: they add steps' worth of tokens, not memory.
    accumulated = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "train.batch_size=1",
                                              "train.gradient_accumulation_steps=2"), device="cpu")
    single = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "train.batch_size=1"), device="cpu")
    assert accumulated.peak_memory_parts_bytes == single.peak_memory_parts_bytes
    assert plans["none"].peak_memory_parts_bytes["activations"] == 2 * single.peak_memory_parts_bytes["activations"]

    dora_config = tiny_train_config(tiny_model_dir, small_data_dir, "lora.use_dora=true", "lora.use_rslora=true")
    dora = make_plan(dora_config, device="cpu")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    built = get_peft_model(model, make_lora_config(dora_config, model))
    assert dora.trainable_params == sum(p.numel() for p in built.parameters() if p.requires_grad)
    assert dora.trainable_params > plans["none"].trainable_params
    assert dora.adapter == "DoRA + rsLoRA r 8, alpha 16"

    config_file = tmp_path / "c.yaml"
    config_file.write_text(f"model:\n  name_or_path: {tiny_model_dir}\n  quantization: 4bit\ndata:\n  source: {small_data_dir}\n")
    assert main(["plan", str(config_file), "--device", "cpu"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "the base in 4bit (a float32 base: " in text and "+ adapter); LoRA r 8, alpha 16" in text


def test_plan_refuses_what_run_refuses_in_the_same_words(tiny_model_dir, small_data_dir, tmp_path, capsys):
    """Every example over data.max_length: run refuses it (nothing would train), and so does
    plan, with the same one line and exit 1, not a plan of 0 examples per epoch."""
    from mathtune.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  source: {small_data_dir}\n  max_length: 40\n")
    lines = {}
    for command in ("plan", "run"):
        argv = [command, str(config)] + (["--out", str(tmp_path / "run")] if command == "run" else ["--device", "cpu"])
        assert main(argv) == 1
        lines[command] = capsys.readouterr().err.strip().splitlines()[-1]
    assert lines["plan"] == lines["run"]
    assert lines["plan"].startswith("mathtune: error: data.max_length 40 cuts the answer of every training example")
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("shipped_rates_only")
def test_a_dora_plan_costs_more_time_and_memory_than_a_lora_plan(tiny_model_dir, small_data_dir):
    """DoRA's extra pass and checkpointing's recompute each have a stated, measured cost."""
    from mathtune.plan import CHECKPOINTING_TIME_RATIO, DORA_MEMORY_RATIO, DORA_TIME_RATIO, format_plan

    lora = make_plan(tiny_train_config(tiny_model_dir, small_data_dir), device="cpu")
    dora = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "lora.use_dora=true"), device="cpu")
    lora_bytes = sum(lora.peak_memory_parts_bytes.values())
    dora_bytes = sum(dora.peak_memory_parts_bytes.values())
    assert dora_bytes > lora_bytes and dora.peak_memory_parts_bytes["dora_extra"] > 0
    assert dora.time_s.train > lora.time_s.train
    assert f"DoRA x{DORA_TIME_RATIO} training and validation time, x{DORA_MEMORY_RATIO} memory" in dora.time_basis
    assert "DoRA's extra pass" in format_plan(dora) and "DoRA" not in lora.time_basis
    ckpt = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, "train.gradient_checkpointing=true"),
                     device="cpu")
    assert f"gradient checkpointing x{CHECKPOINTING_TIME_RATIO}" in ckpt.time_basis
    assert ckpt.time_s.train > lora.time_s.train


# How far a plan calibrated by one finished run on this machine may miss the next run, a
# different size, on this machine: the tiny model's time is mostly the fixed cost of every step,
# which the plan carries in its measured rates, on a 2-core machine shared with other jobs.
CALIBRATED_TOLERANCE = 2.0


def test_a_finished_run_calibrates_the_next_plan_within_a_stated_tolerance(
        tiny_model_dir, small_data_dir, tmp_path, monkeypatch, capsys, one_thread):
    """Before any run the plan's basis is the shipped throughput; after one finished run, `plan
    --json` names this machine's measured rates and resident memory, and a larger run planned
    with them takes within CALIBRATED_TOLERANCE of its planned training and evaluation time and
    peak memory."""
    from mathtune.cli import main

    monkeypatch.setenv("MATHTUNE_RATES", str(tmp_path / "measured_rates.json"))
    config = tmp_path / "c.yaml"
    config.write_text("seed: 3\n")
    common = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.max_length=512",
              "train.epochs=1", "train.batch_size=2", "train.eval_every_steps=4", "train.report_to=[]",
              "eval.batch_size=3", "name=tiny"]
    first = ["data.train_limit=16", "eval.limit=6", "eval.max_new_tokens=48"]
    second = ["data.train_limit=24", "eval.limit=9", "eval.max_new_tokens=64"]

    def argv(command, sets, *extra):
        return [command, str(config), *extra] + [arg for s in common + sets for arg in ("--set", s)]

    def plan(sets):
        capsys.readouterr()
        assert main(argv("plan", sets, "--json")) == 0
        return json.loads(capsys.readouterr().out)

    assert plan(second)["rates"]["source"] == "shipped"
    assert main(argv("run", first, "--out", str(tmp_path / "first"))) == 0
    assert "measured rates: kept in" in capsys.readouterr().out
    planned = plan(second)
    assert planned["rates"]["source"] == "measured"
    assert planned["time_basis"].startswith("this machine's measured rates")
    assert str((tmp_path / "first").resolve()) in planned["time_basis"]
    assert "as this machine measured it" in planned["peak_memory_basis"]
    assert str((tmp_path / "first").resolve()) in planned["peak_memory_basis"]

    assert main(argv("run", second, "--out", str(tmp_path / "second"))) == 0
    rows = {r["figure"]: r for r in json.loads((tmp_path / "second" / "analysis.json").read_text())["plan"]["rows"]}
    for figure in ("training time incl. validation (s)", "evaluation time, base and tuned (s)",
                   "peak training memory (GiB)"):
        ratio = rows[figure]["actual"] / rows[figure]["planned"]
        print(f"{figure}: planned {rows[figure]['planned']}, actual {rows[figure]['actual']}, x{ratio:.2f}")
        assert 1 / CALIBRATED_TOLERANCE <= ratio <= CALIBRATED_TOLERANCE, rows[figure]
        assert rows[figure]["missed_by"]
    assert "| missed by |" in (tmp_path / "second" / "report.md").read_text()


@pytest.mark.usefixtures("shipped_rates_only")
def test_the_adapters_own_flops_count_at_its_rank(tiny_model_dir, small_data_dir):
    """The adapter's FLOPs (6 per trainable parameter and token) are in the training FLOPs, so a
    higher rank plans more; the plan states the share it computed, never a fixed one."""
    from mathtune.plan import format_plan

    r8, r32 = (make_plan(tiny_train_config(tiny_model_dir, small_data_dir, f"lora.r={r}"), device="cpu") for r in (8, 32))
    assert r32.trainable_params == 4 * r8.trainable_params
    for plan in (r8, r32):
        tokens = plan.train_tokens_per_epoch  # one epoch (tiny_train_config)
        assert plan.flops.train_adapter == 6 * plan.trainable_params * tokens
        assert plan.flops.adapter_share_pct == round(100 * plan.flops.train_adapter / plan.flops.train, 2)
    extra = r32.flops.train - r8.flops.train
    assert extra == pytest.approx(6 * (r32.trainable_params - r8.trainable_params) * r8.train_tokens_per_epoch)
    assert r32.flops.adapter_share_pct > r8.flops.adapter_share_pct > 0
    text = format_plan(r32)
    assert f"(the adapter's own {r32.flops.adapter_share_pct}%)" in text and "under 1%" not in text


@pytest.mark.usefixtures("shipped_rates_only")
def test_a_plan_that_does_not_fit_warns_with_a_batch_that_does(tiny_model_dir, small_data_dir, monkeypatch):
    from mathtune import plan as plan_module

    monkeypatch.setattr(plan_module, "CPU_RUNTIME_BYTES", 0)  # the tiny model's peak is then its activations
    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.batch_size=8", "train.gradient_accumulation_steps=2")
    roomy = make_plan(config, device="cpu")
    peak = sum(roomy.peak_memory_parts_bytes.values())
    monkeypatch.setattr(plan_module, "memory_available", lambda device, on_gpu: (1e15, "lots"))
    assert make_plan(config, device="cpu").memory_warning is None
    monkeypatch.setattr(plan_module, "memory_available", lambda device, on_gpu: (peak, "this machine's free memory"))
    tight = make_plan(config, device="cpu")
    warning = tight.memory_warning
    assert warning["fits"]["batch_size"] < 8
    assert warning["fits"]["batch_size"] * warning["fits"]["gradient_accumulation_steps"] == 16  # the same steps
    assert warning["fits"]["peak_memory_gib"] <= roomy.peak_memory_gib
    text = " ".join(plan_module.format_plan(tight).split())  # the terminal's wrapping undone
    assert "WARNING" in text and "over 85% of this machine's free memory" in text
    assert f"train.batch_size {warning['fits']['batch_size']} with train.gradient_accumulation_steps" in text
