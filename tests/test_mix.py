"""Training-data mixes: exact counts per source, weight 0 = no mix, and the contamination
check per source."""

from __future__ import annotations

import json
import random

from conftest import tiny_train_config

from mathtune.task.data import Problem
from mathtune.task.mix import _take, mix_training_problems


def _problems(n: int) -> list[Problem]:
    return [Problem(f"p{i}", f"q{i}?", f"#### {i}", str(i)) for i in range(n)]


def test_weights_take_exact_counts():
    ps = _problems(10)
    assert _take(ps, 1.0, random.Random(0)) == ps
    assert _take(ps, 0.0, random.Random(0)) == []
    half = _take(ps, 0.5, random.Random(0))
    assert len(half) == 5 and len(set(half)) == 5 and half == sorted(half, key=ps.index)
    twice = _take(ps, 2.0, random.Random(0))
    assert len(twice) == 20 and all(twice.count(p) == 2 for p in ps)
    assert len(_take(ps, 1.5, random.Random(0))) == 15
    assert _take(ps, 0.5, random.Random(1)) == _take(ps, 0.5, random.Random(1))


def _mix_file(tmp_path, lines: list[dict]):
    path = tmp_path / "extra.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_mix_sources_are_loaded_with_their_own_fields(tmp_path, tiny_model_dir, small_data_dir):
    path = _mix_file(tmp_path, [{"id": f"s{i}", "problem": f"What is {i} + 1?", "target": i + 1} for i in range(6)])
    config = tiny_train_config(tiny_model_dir, small_data_dir,
                               f"data.mix=[{{source: {path}, fields: {{question: problem, answer: target}}, weight: 0.5}}]")
    added, counts = mix_training_problems(config)
    assert counts == [{"source": str(path), "split": "train", "weight": 0.5, "problems": 6, "examples": 3}]
    assert all(p.id.startswith("mix0:s") and p.answer.startswith("#### ") for p in added)


def _train(config, out):
    from mathtune.train.run import run_train

    run_train(config, out)
    return out


def test_weight_zero_trains_exactly_as_no_mix(tmp_path, tiny_model_dir, small_data_dir, one_thread):
    path = _mix_file(tmp_path, [{"question": f"How many is {i} and {i}?", "answer": f"{i}+{i}=<<{i}+{i}={2 * i}>>{2 * i}\n#### {2 * i}"}
                                for i in range(1, 9)])
    plain = _train(tiny_train_config(tiny_model_dir, small_data_dir), tmp_path / "plain")
    zero = _train(tiny_train_config(tiny_model_dir, small_data_dir, f"data.mix=[{{source: {path}, weight: 0}}]"),
                  tmp_path / "zero")
    one = _train(tiny_train_config(tiny_model_dir, small_data_dir, f"data.mix=[{{source: {path}, weight: 1}}]"),
                 tmp_path / "one")
    weights = "adapter/adapter_model.safetensors"
    assert (plain / weights).read_bytes() == (zero / weights).read_bytes()
    assert (plain / weights).read_bytes() != (one / weights).read_bytes()
    sources = json.loads((one / "train" / "summary.json").read_text())["data_sources"]
    assert [s["examples"] for s in sources] == [16, 8] and sources[1]["source"] == str(path)
    summary = json.loads((one / "train" / "summary.json").read_text())
    assert summary["train_examples"] == 24


def test_contamination_is_checked_per_source(tmp_path, gsm8k_dir):
    from synthetic_run import read_problems, write_run

    from mathtune.analysis.analyze import build_analysis
    from mathtune.config import MixSource, config_from_yaml_text, config_to_yaml

    run = write_run(tmp_path, gsm8k_dir, n_problems=6)
    leaked = read_problems(gsm8k_dir, "test", 3)[2]  # a test question in the extra source
    path = _mix_file(tmp_path, [{"question": leaked["question"], "answer": leaked["answer"]},
                                {"question": "An unrelated question about nothing at all?", "answer": "#### 1"}])
    config = config_from_yaml_text((run / "config.yaml").read_text(), "config.yaml")
    config = config.model_copy(update={"data": config.data.model_copy(update={"mix": [MixSource(source=str(path))]})})
    (run / "config.yaml").write_text(config_to_yaml(config))
    c = build_analysis(run).contamination
    rows = {s["source"]: s for s in c["per_source"]}
    assert rows[str(path)]["train_questions"] == 2 and rows[str(path)]["test_questions_half_overlapping"] >= 1
    assert c["train_questions"] == sum(s["train_questions"] for s in c["per_source"])


def test_the_plan_counts_the_mix(tmp_path, tiny_model_dir, small_data_dir):
    from mathtune.plan import make_plan

    path = _mix_file(tmp_path, [{"question": f"What is {i} and {i}?", "answer": f"#### {2 * i}"} for i in range(1, 9)])
    plain = make_plan(tiny_train_config(tiny_model_dir, small_data_dir), device="cpu")
    mixed = make_plan(tiny_train_config(tiny_model_dir, small_data_dir, f"data.mix=[{{source: {path}, weight: 0.5}}]"),
                      device="cpu")
    assert mixed.data.train.examples == plain.data.train.examples + 4
