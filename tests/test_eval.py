"""Generation and the eval stage on the tiny random Qwen2 (fp32, CPU)."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mathtune.cli import main
from mathtune.evaluation.evaluate import evaluate
from mathtune.evaluation.request import EvalRequest
from mathtune.models.generate import cut_at_stop, generate_batch
from mathtune.evaluation.summary import eval_summary_json as as_json
from mathtune.evaluation.resolve import settled


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, tok


def _prompts(tok, n=7):
    from mathtune.task.prompts import make_prompt_builder

    qs = ["Tom has 3 apples and buys 4 more. How many?", "What is 2 + 2?",
          "A farmer has 12 cows, sells 5 and buys 9. How many cows does he have now, after all of that trading?",
          "Half of 10?", "Sam reads 20 pages a day for 3 days and 5 more on the fourth. Total pages?",
          "x", "If a pen costs $3, how much do 7 pens cost?"]
    return [make_prompt_builder("chat").render(q, tok) for q in qs[:n]]


def test_greedy_is_the_same_at_any_batch_size(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    kwargs = dict(max_new_tokens=24, stop_strings=("<|im_end|>",))
    one = [generate_batch(model, tok, [p], **kwargs)[0][0] for p in prompts]
    three = [g[0] for i in range(0, len(prompts), 3) for g in generate_batch(model, tok, prompts[i:i + 3], **kwargs)]
    seven = [g[0] for g in generate_batch(model, tok, prompts, **kwargs)]
    assert one == three == seven
    assert any(g.num_generated_tokens > 0 for g in one)


def test_truncation_flag_and_token_counts(tiny):
    model, tok = tiny
    gens = [g[0] for g in generate_batch(model, tok, _prompts(tok), max_new_tokens=5, stop_strings=())]
    for g in gens:
        assert g.num_generated_tokens <= 5
        assert g.truncated == (g.num_generated_tokens == 5)


def test_each_row_is_cut_at_its_own_stop_string():
    assert cut_at_stop("3 + 4 = 7. The answer is 7.\n\nQ: next", ("Q:", "\n\n\n")) == ("3 + 4 = 7. The answer is 7.\n\n", True)
    assert cut_at_stop("no stop here", ("Q:",)) == ("no stop here", False)


def test_sampling_returns_k_per_prompt(tiny):
    model, tok = tiny
    torch.manual_seed(0)
    out = generate_batch(model, tok, _prompts(tok, 2), max_new_tokens=8, stop_strings=(), samples=3, temperature=1.0)
    assert [len(o) for o in out] == [3, 3]


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_writes_scored_records_and_summary(tiny_model_dir, small_data_dir, tmp_path):
    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=6, max_new_tokens=16, batch_size=4)
    summary = as_json(evaluate(settled(req, tmp_path, "base"), tmp_path, name="base"))
    recs = _read(tmp_path / "eval" / "base.jsonl")
    assert [r["id"] for r in recs] == [f"test-{i}" for i in range(6)]
    fields = {"id", "question", "answer", "completion", "pred_strict", "pred_flexible", "correct_strict",
              "correct_flexible", "num_generated_tokens", "truncated", "error_category", "prompt", "gold"}
    assert all(fields <= set(r) for r in recs)
    assert all((r["error_category"] is None) == r["correct_strict"] for r in recs)
    on_disk = json.loads((tmp_path / "eval" / "base.summary.json").read_text())
    assert on_disk["n"] == 6 and on_disk == summary
    assert summary["accuracy_strict"] == sum(r["correct_strict"] for r in recs) / 6
    lo, hi = summary["ci95_strict"]
    assert 0 <= lo <= summary["accuracy_strict"] <= hi <= 1
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["base.jsonl", "base.summary.json"]
    # What ran, not what was asked: the dtype and attention of the loaded model, the versions, the data's bytes.
    import hashlib

    assert summary["dtype_requested"] == "auto" and summary["dtype"] == "float32"
    assert summary["attention"] == "sdpa" and summary["device"] == "cpu" and summary["batch_size"] == 4
    assert {"mathtune", "torch", "transformers", "peft", "trl", "accelerate"} <= set(summary["platform"])
    test_file = (small_data_dir / "test.jsonl").resolve()
    assert summary["data_identity"] == {"kind": "local", "split": "test", "path": str(test_file),
                                        "sha256": hashlib.sha256(test_file.read_bytes()).hexdigest(),
                                        "name": f"local file {small_data_dir.name}/test.jsonl (not GSM8K's published test split)"}
    # A slice of GSM8K in a file of its own is not called GSM8K: its text differs from the published split.
    assert summary["protocol"].startswith(f"local file {small_data_dir.name}/test.jsonl (not GSM8K's published test split) test,")


def test_eval_resumes_after_a_kill(tiny_model_dir, small_data_dir, tmp_path):
    """A partial file from a killed run (including a line cut mid-write) is continued."""
    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=8, max_new_tokens=12, batch_size=2)
    full = tmp_path / "full"
    as_json(evaluate(settled(req, full, "m"), full, name="m"))
    expected = _read(full / "eval" / "m.jsonl")

    resumed = tmp_path / "resumed"
    (resumed / "eval").mkdir(parents=True)
    (resumed / "eval" / "m.partial.json").write_text(json.dumps(req.identity()))
    marker = dict(expected[3], completion="FROM THE FIRST RUN")
    partial = [json.dumps(expected[0]), json.dumps(marker), json.dumps(expected[5])[:40]]
    (resumed / "eval" / "m.partial.jsonl").write_text("\n".join(partial))
    summary = as_json(evaluate(settled(req, resumed, "m"), resumed, name="m"))
    got = _read(resumed / "eval" / "m.jsonl")
    assert got[3]["completion"] == "FROM THE FIRST RUN"  # kept, not redone
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    assert [r["completion"] for i, r in enumerate(got) if i != 3] == [r["completion"] for i, r in enumerate(expected) if i != 3]
    assert summary["resumed_from"] == 2
    assert not (resumed / "eval" / "m.partial.jsonl").exists()
    # The two kept records carry no timing: the rates count only the six this run decoded and timed.
    assert summary["untimed_problems"] == 2 and summary["timed_problems"] == 6 and len(summary["sessions"]) == 1
    assert summary["problems_per_s"] == pytest.approx(6 / summary["wall_time_s"])
    assert "rate_note" in summary and all("_timing" not in r for r in got)


def test_eval_kill_and_rerun_as_a_user_would(tiny_model_dir, small_data_dir, tmp_path):
    """SIGKILL a real `mathtune eval` process mid-run; the same command finishes the job."""
    cmd = [sys.executable, "-m", "mathtune", "eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir),
           "--limit", "24", "--max-new-tokens", "48", "--batch-size", "1", "--out", str(tmp_path), "--name", "k"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "eval" / "k.partial.jsonl"
    import time

    deadline = time.time() + 120
    while time.time() < deadline and (not partial.exists() or len(partial.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    n_before = len(partial.read_text().splitlines())
    assert 3 <= n_before < 24 and not (tmp_path / "eval" / "k.jsonl").exists()
    from mathtune.core.runfiles import read_jsonl_until_torn

    first = read_jsonl_until_torn(partial)  # the killed session's whole lines
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    summary = json.loads((tmp_path / "eval" / "k.summary.json").read_text())
    assert summary["n"] == 24 and summary["resumed_from"] == len(first)
    # Speed after a resume: each session's own problems over its own time, summed.
    killed, rerun = summary["sessions"]
    assert killed["problems"] == len(first) and rerun["problems"] == 24 - len(first)
    assert killed["wall_time_s"] == max(r["_timing"]["elapsed_s"] for r in first)
    assert killed["generated_tokens"] == sum(r["num_generated_tokens"] for r in first)
    assert summary["wall_time_s"] == pytest.approx(killed["wall_time_s"] + rerun["wall_time_s"])
    assert summary["problems_per_s"] == pytest.approx(24 / summary["wall_time_s"])
    assert summary["tokens_per_s"] == pytest.approx(summary["generated_tokens"] / summary["wall_time_s"])
    assert summary["untimed_problems"] == 0


def test_self_consistency_records_every_sample_and_the_vote(tiny_model_dir, small_data_dir, tmp_path):
    req = EvalRequest.with_config_defaults(model=str(tiny_model_dir), data=str(small_data_dir), limit=3, max_new_tokens=8, batch_size=3,
                      samples=4, temperature=1.0)
    as_json(evaluate(settled(req, tmp_path, "sc"), tmp_path, name="sc"))
    for r in _read(tmp_path / "eval" / "sc.jsonl"):
        assert len(r["samples"]) == 4
        from mathtune.task.score import majority_vote

        assert r["pred_flexible"] == majority_vote([s["pred_flexible"] for s in r["samples"]])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}"], "data folder not found"),
        (["--prompt", "fancy"], "invalid choice: 'fancy'"),
        (["--limit", "0"], "positive integer"),
        (["--limit", "-3"], "positive integer"),
        (["--samples", "0"], "positive integer"),
        (["--model", "{missing}"], "model path not found"),
        (["--data", "{bad}"], "malformed JSON"),
        (["--adapter", "{missing}"], "adapter"),
    ],
)
def test_bad_input_is_one_line_and_nothing_written(tiny_model_dir, small_data_dir, tmp_path, capsys, args, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n{broken\n')
    subs = {"{missing}": str(tmp_path / "does-not-exist"), "{bad}": str(bad)}
    base = {"--model": str(tiny_model_dir), "--data": str(small_data_dir)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = subs.get(value, value)
    argv = ["eval", "--out", str(tmp_path / "out"), "--limit", "2"]
    for flag, value in base.items():
        argv += [flag, value]
    with pytest.raises(SystemExit) if message in ("positive integer", "invalid choice: 'fancy'") else _no_raise():
        code = main(argv)
        assert code == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert message in last and "Traceback" not in err
    assert last.startswith(("mathtune: error:", "mathtune eval: error:"))
    assert not (tmp_path / "out" / "eval").exists() or not any((tmp_path / "out" / "eval").iterdir())


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_adapter_for_another_base_model_is_a_clear_error(tiny_model_dir, small_data_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    other = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    other.save_pretrained(tmp_path / "adapter")
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"),
                 "--data", str(small_data_dir), "--limit", "1", "--out", str(tmp_path / "out")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "does not fit this model" in last and "in_features=32" in last


def test_adapter_is_applied(tiny_model_dir, small_data_dir, tmp_path):
    """A non-zero LoRA changes the output: --adapter really reaches the model."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    with torch.no_grad():  # a large update, so greedy text surely changes
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 5.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    req = dict(model=str(tiny_model_dir), data=str(small_data_dir), limit=3, max_new_tokens=10, batch_size=3)
    plain = as_json(evaluate(settled(EvalRequest.with_config_defaults(**req), tmp_path / "a", "x"), tmp_path / "a", name="x"))
    tuned = as_json(evaluate(settled(EvalRequest.with_config_defaults(**req, adapter=str(tmp_path / "adapter")),
                                     tmp_path / "b", "x"), tmp_path / "b", name="x"))
    assert tuned["adapter"] and not plain["adapter"]
    a, b = _read(tmp_path / "a" / "eval" / "x.jsonl"), _read(tmp_path / "b" / "eval" / "x.jsonl")
    assert [r["completion"] for r in a] != [r["completion"] for r in b]


def test_eval_json_prints_only_the_summary(tiny_model_dir, small_data_dir, tmp_path, capsys):
    argv = ["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "2",
            "--max-new-tokens", "4", "--out", str(tmp_path), "--name", "j", "--json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out)
    assert out.count("\n") == 1 and summary["n"] == 2
    assert summary == json.loads((tmp_path / "eval" / "j.summary.json").read_text())


def test_eval_records_relative_paths_as_absolute(tiny_model_dir, small_data_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(small_data_dir, tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    assert main(["eval", "--model", str(tiny_model_dir), "--data", "d", "--limit", "1", "--max-new-tokens", "2",
                 "--out", "o", "--name", "r", "--quiet"]) == 0
    summary = json.loads((tmp_path / "o" / "eval" / "r.summary.json").read_text())
    assert summary["data"] == str(tmp_path / "d")
