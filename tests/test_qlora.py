"""Beyond plain LoRA, on the tiny model on a CPU: a quantized base (QLoRA, bitsandbytes' CPU
backend), and the DoRA and rsLoRA variants of the adapter.

bitsandbytes' CPU backend runs both 4-bit and 8-bit layers forward and backward, so the
training tests use 4-bit, QLoRA's own setting; one test trains 8-bit. DoRA on 8-bit layers is
refused (it fails after the first validation pass), and a test watches the libraries for a fix."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_train_config, torch_threads
from mathtune.core.errors import MathtuneError

pytest.importorskip("bitsandbytes", reason="the qlora extra is not installed (pip install -c constraints.txt -e '.[qlora]')")

pytestmark = pytest.mark.usefixtures("one_thread")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, tiny_kbit_model_dir, small_data_dir) -> Path:
    """One `mathtune run` with model.quantization 4bit: training, base and tuned evaluations, report."""
    from mathtune.pipeline import run_experiment

    run_dir = tmp_path_factory.mktemp("runs") / "q4"
    config = tiny_train_config(tiny_kbit_model_dir, small_data_dir, "model.quantization=4bit", "eval.limit=4",
                               "eval.max_new_tokens=8")
    with torch_threads(1):
        run_experiment(config, run_dir)
    return run_dir


def test_a_4bit_run_trains_and_evaluates_base_and_tuned_on_the_same_quantized_base(quantized_run):
    train = read(quantized_run / "train" / "summary.json")
    q = train["quantization_record"]
    assert q["quantization"] == "4bit" and q["library"] == "bitsandbytes"
    assert q["version"] == metadata.version("bitsandbytes")
    assert (q["quant_type"], q["double_quant"], q["compute_dtype"]) == ("nf4", True, "float32")  # a CPU: fp32
    assert train["adapter_settings"]["variant"] == "LoRA"
    assert train["adapter_settings"]["trained_dtype"] == "bfloat16"  # TRL keeps a QLoRA adapter in bf16
    base = read(quantized_run / "eval" / "base.summary.json")
    tuned = read(quantized_run / "eval" / "tuned.summary.json")
    for summary in (base, tuned):
        assert summary["quantization"] == "4bit"  # part of the evaluation's identity
        assert summary["quantization_record"] == q
    assert tuned["adapter_merged"] is False  # never merged into quantized weights
    assert tuned["adapter_settings"] == {k: v for k, v in train["adapter_settings"].items() if k != "trained_dtype"}

    report = (quantized_run / "report.md").read_text()
    label = f"4bit NF4, double quantization, compute float32 (bitsandbytes {q['version']})"
    assert report.count(label) >= 3  # train, eval base, eval tuned
    assert "Every evaluation ran on the same quantized base" in report and "unmerged (eval tuned)" in report
    assert "Adapter (train, eval tuned): LoRA r 8, alpha 16, on down_proj, gate_proj" in report


def test_compare_shows_the_base_weights_and_the_adapter(quantized_run, tmp_path, gsm8k_dir):
    """Beside a run from before these were recorded (full precision, no adapter folder)."""
    from mathtune.analysis.compare import compare_table
    from synthetic_run import write_run

    earlier = write_run(tmp_path, gsm8k_dir, n_problems=9)
    table = compare_table([earlier, quantized_run], force=True)
    rows = {row[0]: row[1:] for row in table["rows"]}
    weights = rows["base weights (training and evaluation)"]
    assert weights[0] == "full precision" and weights[1].startswith("4bit NF4, double quantization")
    assert f"bitsandbytes {metadata.version('bitsandbytes')}" in weights[1]
    assert rows["config: model.quantization"] == ["none", "4bit"]
    adapter = rows["adapter (variant, rank, alpha, target modules)"]
    assert adapter[0] == "-" and adapter[1].startswith("LoRA r 8, alpha 16, on down_proj, gate_proj")


def test_the_adapter_loads_with_plain_peft_on_the_same_quantized_base(quantized_run, tiny_kbit_model_dir):
    """What a user without mathtune does: transformers' BitsAndBytesConfig and PeftModel."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from mathtune.config import ModelConfig
    from mathtune.models.load import load_model

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_kbit_model_dir, quantization_config=bnb, device_map="cpu")
    plain = PeftModel.from_pretrained(base, str(quantized_run / "adapter"))
    plain.eval()
    saved = load_file(str(quantized_run / "adapter" / "adapter_model.safetensors"))
    loaded = {name: p for name, p in plain.named_parameters() if "lora_" in name}
    assert len(loaded) == len(saved) > 0
    for key, value in saved.items():
        name = key.replace(".weight", ".default.weight")
        torch.testing.assert_close(loaded[name].detach().to(value.dtype), value, rtol=0, atol=0)

    tokenizer = AutoTokenizer.from_pretrained(tiny_kbit_model_dir)
    ids = tokenizer("Tom has 3 apples and buys 5 more.", return_tensors="pt")["input_ids"]
    ours, _ = load_model(ModelConfig(name_or_path=str(tiny_kbit_model_dir), quantization="4bit"),
                         adapter=str(quantized_run / "adapter"), merge_adapter=True)
    with torch.no_grad():
        plain_logits, our_logits = plain(input_ids=ids).logits, ours(input_ids=ids).logits
        plain.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    # The same quantized weights and adapter; plain transformers may compute 4-bit layers in bf16 on
    # a CPU with AVX512-BF16 (mathtune keeps them in the recorded fp32), hence the tolerance.
    torch.testing.assert_close(plain_logits, our_logits, rtol=0.05, atol=0.05)


def test_8bit_trains_with_rslora(tmp_path, tiny_kbit_model_dir, small_data_dir):
    from mathtune.train.run import run_train

    run_dir = run_train(tiny_train_config(tiny_kbit_model_dir, small_data_dir, "model.quantization=8bit",
                                          "lora.use_rslora=true", "train.eval_every_steps=4"), tmp_path / "q8")
    summary = read(run_dir / "train" / "summary.json")
    assert summary["quantization_record"]["quantization"] == "8bit"
    assert summary["quantization_record"]["version"] == metadata.version("bitsandbytes")
    assert summary["adapter_settings"]["variant"] == "rsLoRA"
    assert read(run_dir / "adapter" / "adapter_config.json")["use_rslora"] is True


def test_8bit_with_dora_is_refused_before_loading(tiny_kbit_model_dir, small_data_dir):
    from mathtune.plan import make_plan
    from mathtune.train.trainer import check_before_loading

    config = tiny_train_config(tiny_kbit_model_dir, small_data_dir, "model.quantization=8bit", "lora.use_dora=true")
    for check in (check_before_loading, lambda c: make_plan(c, device="cpu")):
        with pytest.raises(MathtuneError, match=r"lora.use_dora with model.quantization 8bit cannot train"):
            check(config)


def test_the_libraries_still_fail_dora_on_8bit_after_an_eval_pass(tiny_kbit_model_dir):
    """Why mathtune refuses 8-bit with DoRA: plain transformers + PEFT + bitsandbytes, a forward
    pass in eval mode (as the trainer's validation), then a training step. When this stops
    failing, lift the refusal in train.trainer.lora_config."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_kbit_model_dir, device_map="cpu",
                                                 quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False),
                           LoraConfig(r=4, target_modules="all-linear", use_dora=True, task_type="CAUSAL_LM"))
    ids = torch.arange(16).reshape(2, 8)
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'unsqueeze'"):
        model(input_ids=ids, labels=ids).loss.backward()


@pytest.mark.parametrize("variant, key, label", [("lora.use_dora=true", "use_dora", "DoRA"),
                                                 ("lora.use_rslora=true", "use_rslora", "rsLoRA")])
def test_dora_and_rslora_adapters_say_so_and_differ_from_plain_lora(variant, key, label, trained_run, tmp_path,
                                                                    tiny_model_dir, small_data_dir):
    """The same seed and data as the plain LoRA run (trained_run): the adapter's config names the
    variant, and its weights are not plain LoRA's."""
    from mathtune.train.run import run_train

    run_dir = run_train(tiny_train_config(tiny_model_dir, small_data_dir, variant), tmp_path / label)
    config = read(run_dir / "adapter" / "adapter_config.json")
    plain_config = read(trained_run / "adapter" / "adapter_config.json")
    assert config[key] is True and plain_config[key] is False
    assert read(run_dir / "train" / "summary.json")["adapter_settings"]["variant"] == label
    ours = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    plain = load_file(str(trained_run / "adapter" / "adapter_model.safetensors"))
    shared = [k for k in plain if ".lora_B." in k]
    assert shared and all(k in ours for k in shared)
    assert any(not torch.equal(ours[k], plain[k]) for k in shared)
    if key == "use_dora":  # a trained magnitude per output of every adapted layer
        assert sum("lora_magnitude_vector" in k for k in ours) == len(shared)


def test_the_evaluation_identity_names_the_quantization_only_when_set(tiny_model_dir, small_data_dir):
    """Records written before model.quantization existed still match a full-precision request."""
    from mathtune.evaluation.request import EvalRequest

    config = tiny_train_config(tiny_model_dir, small_data_dir)
    assert "quantization" not in EvalRequest.from_config(config).identity()
    quantized = tiny_train_config(tiny_model_dir, small_data_dir, "model.quantization=8bit")
    assert EvalRequest.from_config(quantized).identity()["quantization"] == "8bit"
    full, eight = EvalRequest.from_config(config), EvalRequest.from_config(quantized)
    earlier = full.summary_identity()  # a record from before: it names no quantization
    assert full.differing_settings(earlier) == [] and eight.differing_settings(earlier) == ["quantization"]
    assert full.differing_settings(eight.summary_identity()) == ["quantization"]  # nor is an 8-bit one taken


def test_export_of_a_quantized_run_merges_into_the_full_precision_base_and_says_so(quantized_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from mathtune import cli

    assert cli.main(["export", str(quantized_run), "--merged", str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    assert "quantized to 4bit" in out and "full-precision base, saved in float32" in out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert getattr(merged.config, "quantization_config", None) is None
    assert {p.dtype for p in merged.parameters()} == {torch.float32}


def test_settings_are_checked_before_any_weights_load(tmp_path, tiny_model_dir, small_data_dir, monkeypatch):
    import importlib.util

    import transformers

    from mathtune.config import load_config
    from mathtune.train.run import run_train

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the settings were checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    bad = tiny_train_config(tiny_model_dir, small_data_dir, "lora.target_modules=[q_proj, vproj]")
    with pytest.raises(MathtuneError, match=r"\['vproj'\] match no module of the model \(its linear layers: "):
        run_train(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(MathtuneError, match=r"'model.quantization': quantization 4bit applies to a transformers "
                                            r"checkpoint, and a \.gguf file is already quantized"):
        load_config(None, [f"model.name_or_path={gguf}", "model.quantization=4bit"])

    # The refusal names the folder mathtune keeps (or will keep) for that file: what 4bit can load.
    from mathtune.core.cache import dequantized_folder
    from mathtune.models.quantize import check_quantization

    monkeypatch.setenv("MATHTUNE_CACHE", str(tmp_path / "cache"))
    folder = dequantized_folder(gguf)
    with pytest.raises(MathtuneError, match=f"dequantizes this file once into {re.escape(str(folder))}, the first"):
        check_quantization("4bit", str(gguf))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(MathtuneError, match=f"the dequantized folder mathtune keeps for this file: "
                                            f"{re.escape(str(folder))} \\(with quantization 4bit\\)"):
        check_quantization("4bit", str(gguf))

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a))
    missing = tiny_train_config(tiny_model_dir, small_data_dir, "model.quantization=4bit")
    with pytest.raises(MathtuneError, match=r"needs bitsandbytes, which is not installed: pip install -c constraints.txt -e '\.\[qlora\]'"):
        run_train(missing, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_eval_on_a_quantized_base_is_its_own_record(quantized_run, tiny_kbit_model_dir, small_data_dir, tmp_path, capsys):
    """`mathtune eval --quantization 4bit` records the quantization; a finished full-precision
    evaluation under the same name is not taken for it (nor silently replaced)."""
    from mathtune import cli

    args = ["eval", "--model", str(tiny_kbit_model_dir), "--adapter", str(quantized_run / "adapter"), "--data",
            str(small_data_dir), "--limit", "2", "--max-new-tokens", "4", "--out", str(tmp_path), "--name", "tuned"]
    assert cli.main(args + ["--quantization", "4bit", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["quantization"] == "4bit" and summary["adapter_merged"] is False
    assert summary["quantization_record"]["quant_type"] == "nf4"
    assert cli.main(args) == 1  # full precision, same name
    assert "differs in quantization" in capsys.readouterr().err
