"""The rft and grpo training methods on the tiny model: what RFT keeps, that a GRPO step moves
probability towards the rewarded completion, resume after SIGKILL, and bad settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_train_config, torch_threads
from mathtune import cli
from mathtune.task.data import training_splits
from mathtune.evaluation.records import build_record, session_timing, summarize
from mathtune.models.generate import Generation
from mathtune.core.runfiles import write_jsonl_atomic


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- RFT selection


def test_rft_keeps_only_strictly_correct_distinct_samples_and_falls_back_to_gold(tmp_path, tiny_model_dir,
                                                                               small_data_dir):
    from mathtune.models.load import load_tokenizer
    from mathtune.task.prompts import end_of_turn, training_pair
    from mathtune.evaluation.resolve import resolve_request
    from mathtune.evaluation.summary import write_eval_summary
    from mathtune.train.rft import rft_training_pairs, sample_paths, sampling_request

    config = tiny_train_config(tiny_model_dir, small_data_dir, "data.train_limit=3", "train.method=rft",
                               "train.rft.samples=4", "train.rft.keep=2")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    problems, _ = training_splits(str(small_data_dir), val_fraction=0.1, seed=config.seed, train_limit=3)
    p0, p1, p2 = problems
    right0 = f"Work.\n#### {p0.gold}"
    samples = {
        # strictly right; wrong; right only by the last number (not strict); the first again, re-spaced
        p0.id: [right0, "Work.\n#### 999999", f"so it is {p0.gold}", f"Work.  \n#### {p0.gold}"],
        # nothing strictly right: the gold solution is used
        p1.id: ["#### 123456", f"maybe {p1.gold}", "", "no idea"],
        # two distinct right ones and a right one cut by the budget (never kept); keep=2
        p2.id: [f"A.\n#### {p2.gold}", f"B.\n#### {p2.gold}", f"C.\n#### {p2.gold}", f"D.\n#### {p2.gold}"],
    }
    truncated = {(p2.id, 0)}
    records = []
    for problem in problems:
        generations = [Generation(c, 5, (problem.id, i) in truncated) for i, c in enumerate(samples[problem.id])]
        records.append(build_record(problem, "prompt", generations))
    paths = sample_paths(tmp_path)
    request = resolve_request(sampling_request(config), paths)
    paths.records.parent.mkdir(parents=True)
    write_jsonl_atomic(paths.records, records)
    write_eval_summary(paths.summary, summarize(records, request, timing=session_timing(records), batch_size=4,
                                                device="cpu", dtype="float32"))

    pairs, stats = rft_training_pairs(config, tmp_path, None, tokenizer, problems, lambda p, c: True)

    eot = end_of_turn(tokenizer)
    prompts = [training_pair(p, tokenizer, "chat")[0] for p in problems]
    assert pairs == [
        (prompts[0], right0 + eot),
        training_pair(p1, tokenizer, "chat"),
        (prompts[2], f"B.\n#### {p2.gold}" + eot),
        (prompts[2], f"C.\n#### {p2.gold}" + eot),
    ]
    assert stats["problems_with_correct_sample"] == 2
    assert stats["strictly_correct_samples"] == 2 + 0 + 4
    assert (stats["solutions_kept"], stats["kept_from_model"], stats["kept_from_gold"]) == (4, 3, 1)
    assert stats["share_from_model"] == pytest.approx(0.75)
    assert stats["sampling_reused"] is True

    assert stats["correct_samples_too_long"] == 0

    # A sample too long for data.max_length is not kept either (and is counted); with none
    # left, gold again.
    pairs, stats = rft_training_pairs(config, tmp_path, None, tokenizer, problems, lambda p, c: "A." in c)
    assert stats["kept_from_model"] == 0 and pairs[2] == training_pair(p2, tokenizer, "chat")
    assert stats["correct_samples_too_long"] == 1 + 3  # p0: its one distinct right sample; p2: B, C, D (A is cut)


def test_rft_run_samples_trains_and_records_counts(tmp_path, tiny_model_dir, small_data_dir, one_thread, capsys):
    from mathtune.train.run import run_train

    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.method=rft", "train.rft.samples=2",
                               "train.rft.max_new_tokens=8", "train.report_to=[]")
    run_dir = run_train(config, tmp_path / "rft")
    records = read_jsonl(run_dir / "train" / "rft_samples.jsonl")
    assert len(records) == 16 and all(len(r["samples"]) == 2 for r in records)
    assert all(s["num_generated_tokens"] <= 8 for r in records for s in r["samples"])
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    rft = summary["rft"]
    assert summary["method"] == "rft" and rft["problems"] == 16 and rft["sampled_solutions"] == 32
    correct = sum(s["correct_strict"] for r in records for s in r["samples"])
    assert rft["strictly_correct_samples"] == correct
    assert rft["kept_from_model"] + rft["kept_from_gold"] == rft["solutions_kept"] == summary["train_examples"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()

    # Another run with the same sampling settings (here: another data.max_length) may start
    # from these samples: copied into a new folder, they are reused, not drawn again.
    seeded = tmp_path / "seeded" / "train"
    seeded.mkdir(parents=True)
    for f in (run_dir / "train").glob("rft_samples.*"):
        shutil.copy(f, seeded / f.name)
    other = config.model_copy(update={"data": config.data.model_copy(update={"max_length": 400})})
    run_train(other, seeded.parent)
    assert "rft: reusing the samples" in capsys.readouterr().out
    assert read_jsonl(seeded / "rft_samples.jsonl") == records


# --------------------------------------------------------------------------- GRPO


def completion_logprob(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(completion_ids)[:, None]).sum().item()


def test_grpo_step_raises_the_rewarded_completion(tmp_path, tiny_model_dir, small_data_dir, one_thread):
    """One prompt, four completions, reward 1 for the first and 0 for the rest: after one
    step the adapter gives the first a higher log-probability than the base model does."""
    from datasets import Dataset

    from mathtune.train.grpo import build_grpo_trainer, prompt_rows
    from mathtune.config import ModelConfig
    from mathtune.models.load import load_model
    from mathtune.train.trainer import make_lora_config

    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.method=grpo", "train.batch_size=4",
                               "train.grpo.group_size=4", "train.grpo.max_steps=1", "train.grpo.max_completion_length=12",
                               "train.grpo.beta=0.0", "train.learning_rate=1.0e-3", "train.warmup_ratio=0.0",
                               "train.report_to=[]", "lora.dropout=0.0")
    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_model_dir), dtype="float32"), device="cpu")
    problems, _ = training_splits(str(small_data_dir), val_fraction=0.1, seed=config.seed, train_limit=1)
    seen: list[list[int]] = []

    def first_wins(completions, completion_ids, **kwargs):
        seen.extend(list(ids) for ids in completion_ids)
        return [1.0] + [0.0] * (len(completions) - 1)

    trainer = build_grpo_trainer(config, tmp_path, model, tokenizer, Dataset.from_list(prompt_rows(config, tokenizer, problems)),
                                 make_lora_config(config, model), [], reward_funcs=[first_wins])
    trainer.train()
    assert len(seen) == 4 and len({tuple(s) for s in seen}) > 1  # the group's completions differ
    from mathtune.task.prompts import make_prompt_builder
    from mathtune.task.sequences import prompt_ids as eval_prompt_ids

    # The prompt GRPO sampled from is the evaluation's, token for token.
    prompt_ids = eval_prompt_ids(make_prompt_builder("chat").render(problems[0].question, tokenizer), tokenizer, "chat")
    rendered = tokenizer.apply_chat_template(prompt_rows(config, tokenizer, problems)[0]["prompt"],
                                             add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert list(rendered) == prompt_ids
    tuned = trainer.model
    tuned.eval()
    after = [completion_logprob(tuned, prompt_ids, ids) for ids in seen]
    with tuned.disable_adapter():
        before = [completion_logprob(tuned, prompt_ids, ids) for ids in seen]
    assert after[0] > before[0] + 1e-4, (before, after)
    # and the unrewarded ones, on average, lost probability
    assert sum(after[1:]) < sum(before[1:])


def test_grpo_rewards_are_the_strict_scorer():
    from mathtune.train.grpo import exact_match, format_reward

    completions = ["so 18.\n#### 18", "#### 18.00", "The answer is 17.", "it is 18", "\\boxed{18}"]
    assert exact_match(completions, gold=["18"] * 5) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert format_reward(completions) == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert exact_match([[{"role": "assistant", "content": "#### 5"}]], gold=["5"]) == [1.0]


# --------------------------------------------------------------------------- resume after SIGKILL

KILL_AT_STEP = 5  # checkpoints every 3 steps: checkpoint-3 exists, steps 4-5 are lost work

KILLER = """
import os, signal, sys
import trl
from mathtune.cli import main

Trainer = trl.{trainer}
real_step = Trainer.training_step

def step_then_die(self, *args, **kwargs):
    if self.state.global_step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)

Trainer.training_step = step_then_die
sys.exit(main(sys.argv[1:]))
"""

METHOD_SETTINGS = {
    # Unpacked, RFT's 12 examples are 12 steps on any data: packed, the short demo problems fit
    # three to a row and training ended at step 4, before the kill.
    "rft": ["train.method=rft", "train.rft.samples=2", "train.rft.max_new_tokens=8", "train.batch_size=1",
            "data.train_limit=12", "train.packing=false"],
    "grpo": ["train.method=grpo", "train.batch_size=2", "train.grpo.group_size=2", "train.grpo.max_steps=8",
             "train.grpo.max_completion_length=8", "data.train_limit=12"],
}


@pytest.mark.parametrize("method", ["rft", "grpo"])
def test_sigkill_then_same_command_resumes(method, tmp_path, tiny_model_dir, small_data_dir, capsys, one_thread):
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\n")
    settings = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "train.epochs=1",
                "train.eval_every_steps=3", "train.report_to=[]", *METHOD_SETTINGS[method]]
    argv = ["train", str(config)] + [x for s in settings for x in ("--set", s)]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(trainer="GRPOTrainer" if method == "grpo" else "SFTTrainer", step=KILL_AT_STEP))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(script), *argv, "--out", str(killed)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (killed / "adapter").exists() and not (killed / "train" / "summary.json").exists()
    before = read_jsonl(killed / "train" / "metrics.jsonl")
    assert before[-1]["step"] == KILL_AT_STEP

    assert cli.main(argv + ["--out", str(killed)]) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out
    if method == "rft":
        assert "rft: reusing the samples" in out
    assert cli.main(argv + ["--out", str(straight)]) == 0

    resumed = read_jsonl(killed / "train" / "metrics.jsonl")
    reference = read_jsonl(straight / "train" / "metrics.jsonl")
    steps = [line["step"] for line in resumed]
    assert steps == [line["step"] for line in reference]
    assert steps == sorted(set(steps))  # no duplicates
    summary = json.loads((killed / "train" / "summary.json").read_text())
    assert summary["resumed_from_step"] == 3 and summary["method"] == method
    assert summary["global_step"] == json.loads((straight / "train" / "summary.json").read_text())["global_step"]
    keys = ("loss", "reward", "completion_length") if method == "grpo" else ("loss", "eval_loss")
    for got, want in zip(resumed, reference):
        for key in keys:
            if key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), (got["step"], key)
    if method == "grpo":
        assert all({"reward", "mixed_groups", "kl", "completion_length"} <= set(line) for line in resumed)
    if method == "rft":
        assert read_jsonl(killed / "train" / "rft_samples.jsonl") == read_jsonl(straight / "train" / "rft_samples.jsonl")


# --------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.method=dpo", "train.method"),
        ("train.rft.samples=0", "train.rft.samples"),
        ("train.grpo.group_size=1", "train.grpo.group_size"),
        ("train.grpo.rewards={exact: 1.0}", "unknown reward 'exact'"),
    ],
)
def test_bad_recipe_settings_are_one_line_errors(setting, message, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\n")
    assert cli.main(["train", str(config), "--set", setting, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_grpo_run_is_analyzed_by_reward_not_loss(tmp_path, tiny_model_dir, small_data_dir, one_thread):
    from mathtune.pipeline import rebuild_report
    from mathtune.train.run import run_train

    config = tiny_train_config(tiny_model_dir, small_data_dir, "train.method=grpo", "train.batch_size=4",
                               "train.grpo.group_size=2", "train.grpo.max_steps=4", "train.grpo.max_completion_length=8",
                               "train.grpo.rewards={exact_match: 1.0, format: 0.1}", "train.report_to=[]")
    run_dir = run_train(config, tmp_path / "grpo")
    lines = read_jsonl(run_dir / "train" / "metrics.jsonl")
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all({"reward", "mixed_groups", "kl", "completion_length", "reward_exact_match", "reward_format"} <= set(line)
               for line in lines)
    assert all(0.0 <= line["mixed_groups"] <= 1.0 and line["completion_length"] <= 8 for line in lines)
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["method"] == "grpo" and summary["best_step"] is None and summary["global_step"] == 4

    rebuild_report(run_dir)
    analysis = json.loads((run_dir / "analysis.json").read_text())
    assert not analysis["training"]["available"]  # a GRPO loss is no loss curve to judge
    grpo = analysis["recipe"]["grpo"]
    assert grpo["steps"] == 4 and grpo["curves"]["reward"] == [line["reward"] for line in lines]
    assert grpo["prompts_per_step"] == 2 and set(grpo["per_reward"]) == {"exact_match", "format"}
    assert (run_dir / "figures" / "grpo.png").is_file()
    report = (run_dir / "report.md").read_text()
    assert "## Training method: grpo" in report and "figures/grpo.png" in report
