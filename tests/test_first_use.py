"""Fast paths checked before their first use: a failing stand-in (wrong values, or raising)
sends `auto` to the library's own path with the reason recorded, a path named in the config is
refused instead, and each check runs once per device and versions, then comes from the cache.
Also `mathtune doctor` on the CPU."""

import json

import pytest
import torch

from mathtune.cli import main
from mathtune.models import engine, first_use
from mathtune.models.attention import NAME as SEGMENTS, segment_attention, use_varlen_kernel
from mathtune.train import lm_head
from mathtune.train.selfcheck import check_lean_head

CPU = torch.device("cpu")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty verdict file and a process that has seen no verdict yet."""
    path = tmp_path / "verdicts.json"
    monkeypatch.setenv(first_use.VERDICTS_ENV, str(path))
    monkeypatch.setattr(first_use, "_seen", {})
    monkeypatch.setattr(first_use, "_said", set())
    return path


@pytest.fixture
def segments_replaced():
    """Put another function under the packed attention's name; the real one comes back after."""
    from transformers import AttentionInterface

    from mathtune.models.attention import register

    register(SEGMENTS)  # registered now, so that the check's own register() keeps the stand-in

    def replace(fn):
        AttentionInterface.register(SEGMENTS, fn)

    yield replace
    AttentionInterface.register(SEGMENTS, segment_attention)


def test_wrong_attention_falls_back_once_per_key_then_from_the_cache(fresh_cache, segments_replaced, capsys):
    calls = []

    def wrong(module, query, key, value, attention_mask, **kwargs):  # the right output, times 1.5
        calls.append(1)
        out, weights = segment_attention(module, query, key, value, attention_mask, **kwargs)
        return out * 1.5, weights

    segments_replaced(wrong)
    record = first_use.checked_path("attention", SEGMENTS, CPU, torch.float32, explicit=False)
    assert record["path"] == "sdpa" and record["asked"] == SEGMENTS and record["verdict"] == "fail"
    assert record["max_diff"] > record["tolerance"]
    assert record["reason"].startswith(f"{SEGMENTS} failed its check (attention {SEGMENTS}: max diff ")
    assert record["reason"].endswith("sdpa ran instead")
    out = capsys.readouterr().out
    assert f"checking attention {SEGMENTS} (float32)" in out
    assert [line for line in out.splitlines() if line.startswith("attention: ")] == [f"attention: {record['reason']}"]

    ran = len(calls)
    assert ran > 0
    again = first_use.checked_path("attention", SEGMENTS, CPU, torch.float32, explicit=False)
    assert again["path"] == "sdpa" and again["checked"] == "remembered" and len(calls) == ran
    assert "attention:" not in capsys.readouterr().out  # the fallback's line is said once per process

    # A new process reads the verdict from the cache file, keyed by device and versions.
    first_use._seen.clear()
    stored = json.loads(fresh_cache.read_text())
    (key, verdicts), = stored.items()
    assert "torch " + torch.__version__ in key and "mathtune " in key and "transformers " in key
    assert verdicts[f"attention {SEGMENTS}, float32"]["verdict"] == "fail"
    assert first_use.checked_path("attention", SEGMENTS, CPU, torch.float32, explicit=False)["checked"] == "remembered"
    assert len(calls) == ran

    # Another key (new versions, another device) checks again.
    real_key = first_use.verdict_key
    first_use._seen.clear()
    try:
        first_use.verdict_key = lambda device: real_key(device) + "; torch 99"
        assert first_use.checked_path("attention", SEGMENTS, CPU, torch.float32, explicit=False)["checked"] == "now"
    finally:
        first_use.verdict_key = real_key
    assert len(calls) > ran


def test_a_raising_head_falls_back_to_trl_with_the_error_recorded(fresh_cache, monkeypatch, capsys):
    def broken(hidden, head, targets):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(lm_head, "_chunked_scores", broken)
    record = first_use.checked_path("lm_head", "lean", CPU, torch.float32, explicit=False,
                                    lean_head_check=check_lean_head)
    assert record["path"] == "trl" and record["verdict"] == "fail"
    assert record["error"] == "RuntimeError: no kernel image is available for execution on the device"
    assert "crashed: RuntimeError: no kernel image" in record["reason"]
    assert f"lm_head: {record['reason']}" in capsys.readouterr().out


def test_the_real_paths_pass_their_checks(fresh_cache):
    for kind, path in (("attention", SEGMENTS), ("decoder", "dynamic_cache"), ("decoder", "fixed_slots")):
        record = first_use.checked_path(kind, path, CPU, torch.float32, explicit=False)
        assert (record["path"], record["verdict"], record["reason"]) == (path, "pass", None), record
    record = first_use.checked_path("lm_head", "lean", CPU, torch.float32, explicit=False,
                                    lean_head_check=check_lean_head)
    assert record["path"] == "lean" and record["verdict"] == "pass"
    assert first_use.checked_path("attention", "sdpa", CPU, torch.float32, explicit=False)["verdict"] == "not needed"


def test_a_raising_decoder_falls_back_to_generate(fresh_cache, monkeypatch, tiny_model_dir, small_data_dir, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("the stand-in decoder broke")
        yield

    monkeypatch.setattr(engine, "_decode_dynamic", broken)
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "2",
            "--max-new-tokens", "4", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    summary = json.loads(next((tmp_path / "out" / "eval").glob("*.summary.json")).read_text())
    assert summary["decoder"] == "generate"
    d = summary["fast_paths"]["decoder"]
    assert d["asked"] == "dynamic_cache" and d["path"] == "generate"
    assert d["reason"].startswith("dynamic_cache failed its check (decoder dynamic_cache: crashed: RuntimeError")


def test_a_named_path_that_fails_is_refused_not_replaced(fresh_cache, tiny_model_dir, small_data_dir, tmp_path,
                                                        capsys):
    from mathtune.models.attention import reference_varlen_attn

    def wrong(*args, **kwargs):
        return reference_varlen_attn(*args, **kwargs) * 0.5

    from mathtune.models.attention import VarlenKernel

    before = use_varlen_kernel(VarlenKernel.of(wrong))
    try:
        out = tmp_path / "run"
        config = tmp_path / "c.yaml"
        config.write_text("name: c\n")
        code = main(["train", str(config), "--out", str(out), "--set", f"model.name_or_path={tiny_model_dir}",
                     "--set", f"data.source={small_data_dir}", "--set", "data.train_limit=8",
                     "--set", "model.attn_implementation=mathtune_varlen", "--set", "train.report_to=[]"])
    finally:
        use_varlen_kernel(before)
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("mathtune: error: model.attn_implementation: mathtune_varlen: mathtune_varlen failed its "
                          "check on this device (attention mathtune_varlen: max diff")
    assert len(err.splitlines()) == 1
    assert not (out / "adapter").exists() and not (out / "train" / "summary.json").exists()


def test_training_on_a_wrong_packed_attention_runs_sdpa_and_says_why(fresh_cache, segments_replaced,
                                                                     tiny_model_dir, small_data_dir, tmp_path,
                                                                     capsys):
    def wrong(module, query, key, value, attention_mask, **kwargs):
        out, weights = segment_attention(module, query, key, value, attention_mask, **kwargs)
        return out.flip(1), weights  # the tokens' outputs in the wrong order

    segments_replaced(wrong)
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n")
    out = tmp_path / "run"
    settings = [f"model.name_or_path={tiny_model_dir}", f"data.source={small_data_dir}", "data.train_limit=8",
                "train.epochs=1", "train.batch_size=4", "train.report_to=[]"]
    assert main(["train", str(config), "--out", str(out), *[x for s in settings for x in ("--set", s)]]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("attention: ")]
    assert len(said) == 1 and "mathtune_segments failed its check" in said[0] and said[0].endswith("sdpa ran instead")
    summary = json.loads((out / "train" / "summary.json").read_text())
    assert summary["attention"] == "sdpa"
    record = summary["fast_paths"]["attention"]
    assert (record["asked"], record["path"], record["verdict"]) == (SEGMENTS, "sdpa", "fail")
    assert said[0] == f"attention: {record['reason']}"
    assert summary["fast_paths"]["lm_head"]["verdict"] == "pass" and summary["lm_head"] == "lean"


def test_fixed_slots_asked_for_by_name_and_failing_are_refused(fresh_cache, monkeypatch, tiny_model_dir,
                                                               small_data_dir, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("the stand-in slots broke")
        yield

    monkeypatch.setattr(engine, "_decode_static", broken)
    monkeypatch.setenv("MATHTUNE_STATIC_CACHE", "1")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(small_data_dir), "--limit", "2",
                 "--max-new-tokens", "4", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("mathtune: error: MATHTUNE_STATIC_CACHE=1: fixed_slots failed its check on this device "
                   "(decoder fixed_slots: crashed: RuntimeError: the stand-in slots broke); ask for another, or auto")
    assert not (out / "eval").exists() or not any((out / "eval").iterdir())  # refused before anything is written


def test_doctor_on_the_cpu(fresh_cache, capsys):
    from mathtune.core.provenance import library_version

    model = str(first_use.check_model())
    assert main(["doctor", "--device", "cpu", "--json", "--model", model]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"]["type"] == "cpu"
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["peft"] == library_version("peft")
    assert set(report["kernels"]) == {"varlen", "flash_attn", "liger"}
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {f"attention {SEGMENTS}", "attention mathtune_varlen", "lm_head lean",
                           "decoder dynamic_cache", "decoder fixed_slots", "lora merged"}
    assert checks["attention mathtune_varlen"]["verdict"].startswith("n/a: needs torch's varlen kernel")
    ran = [c for c in report["checks"] if c["verdict"] == "pass"]
    assert len(ran) >= 3
    for c in ran:
        assert c["reference"] and c["max_diff"] <= c["tolerance"] and c["seconds"] >= 0
    for name in (f"attention {SEGMENTS}", "lm_head lean", "decoder dynamic_cache"):
        assert checks[name]["auto_picks"] and checks[name]["verdict"] == "pass"

    assert main(["doctor", "--device", "cpu", "--model", model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("device: ") and lines[1].startswith("versions: mathtune ")
    assert any(line.startswith("lm_head lean: pass  max diff") for line in lines)


def test_doctor_exits_1_when_a_path_auto_picks_fails(fresh_cache, monkeypatch, capsys):
    def doubled(hidden, head, targets):  # log-probabilities twice what they are
        log_probs, entropy, is_top1 = _real(hidden, head, targets)
        return log_probs * 2, entropy, is_top1

    monkeypatch.setattr(lm_head, "_chunked_scores", doubled)
    assert main(["doctor", "--device", "cpu", "--model", str(first_use.check_model())]) == 1
    captured = capsys.readouterr()
    assert "lm_head lean: fail" in captured.out
    assert captured.err.strip() == "mathtune: error: a path auto picks here failed its check: lm_head lean"


_real = lm_head._chunked_scores


@pytest.mark.slow
def test_doctor_on_the_reference_shape_within_two_minutes(fresh_cache, monkeypatch, capsys):
    import time

    monkeypatch.delenv("MATHTUNE_CHECK_MODEL")
    start = time.perf_counter()
    assert main(["doctor", "--device", "cpu", "--json"]) == 0
    assert time.perf_counter() - start < 120
    report = json.loads(capsys.readouterr().out)
    assert sum(c["verdict"] == "pass" for c in report["checks"]) >= 3


def test_the_merge_check_sees_an_adapter_that_did_not_merge():
    """The merged-vs-unmerged comparison fails when the 'merged' model lost the adapter (an
    adapter large enough to change the small model's greedy tokens), and passes for a real merge."""
    from mathtune.models import selfcheck

    model = selfcheck.with_lora(selfcheck.build_model(first_use.check_model(), CPU, torch.float32)).eval()
    for name, p in model.named_parameters():
        if "lora_" in name:
            torch.nn.init.normal_(p, std=0.1)
    prompts = selfcheck.check_prompts(model.config.vocab_size)
    with torch.inference_mode():
        assert selfcheck.greedy_disagreement(model, lambda: _without_adapter(model), prompts, CPU) == 1
        assert selfcheck.greedy_disagreement(model, model.merge_and_unload, prompts, CPU) == 0


def _without_adapter(peft_model):
    class Plain(torch.nn.Module):  # the base model's forward with the adapter's layers switched off
        def __init__(self):
            super().__init__()
            self.inner = peft_model

        def forward(self, **kwargs):
            with peft_model.disable_adapter():
                return peft_model(**kwargs)

    return Plain()
