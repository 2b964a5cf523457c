from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

from tiny import build_tiny_model, corpus_from_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = Path(os.environ.get("MATHTUNE_TEST_GSM8K", REPO.parent / "shared" / "gsm8k"))
# The 48 train and 24 test GSM8K-style problems the package ships for its demo: what a clone of
# this repository alone has, so the suite runs there too.
DEMO_PROBLEMS = REPO / "src" / "mathtune" / "demo_data"
FULL_GSM8K_MISSING = f"needs the full GSM8K test set, not found at {SHARED_GSM8K} (set MATHTUNE_TEST_GSM8K)"
# The rates the tests' tiny runs reach go to a file of the session's, never to the user's cache,
# where the next plan on this machine would read them.
os.environ["MATHTUNE_RATES"] = os.path.join(tempfile.mkdtemp(prefix="mathtune-rates-"), "measured_rates.json")
# Nor are base evaluations kept or reused across tests (each test decodes what it checks); the
# tests of the cache name a folder of their own.
os.environ["MATHTUNE_BASE_EVALS"] = "off"


def have_full_gsm8k() -> bool:
    return (SHARED_GSM8K / "test.jsonl").is_file()


def pytest_runtest_setup(item):
    if item.get_closest_marker("full_gsm8k") and not have_full_gsm8k():
        pytest.skip(FULL_GSM8K_MISSING)


def pytest_terminal_summary(terminalreporter):
    """The closing lines say how many tests the missing data skipped: a green run without it
    tested less, and should say so."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if FULL_GSM8K_MISSING in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} skipped: {FULL_GSM8K_MISSING}", yellow=True)


@pytest.fixture(scope="session", autouse=True)
def first_use_checks_on_a_small_model(tmp_path_factory):
    """The first-use checks of fast paths (models.first_use) build a small config, not the
    reference shape (seconds, not a minute, per session), and keep their verdicts in this
    session's own file, never in the user's cache; subprocesses inherit both."""
    saved = {k: os.environ.get(k) for k in ("MATHTUNE_CHECK_MODEL", "MATHTUNE_VERDICTS")}
    os.environ["MATHTUNE_CHECK_MODEL"] = str(REPO / "tests" / "data" / "check-model")
    os.environ["MATHTUNE_VERDICTS"] = str(tmp_path_factory.mktemp("verdicts") / "verdicts.json")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def gsm8k_dir() -> Path:
    """GSM8K problems in a local folder (train.jsonl, test.jsonl): the full GSM8K (7,473 train /
    1,319 test) beside the repo where present, the shipped demo problems otherwise. A test that
    needs the full test set is marked full_gsm8k."""
    return SHARED_GSM8K if have_full_gsm8k() else DEMO_PROBLEMS


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory, gsm8k_dir) -> Path:
    """The first 60 train (48 of the demo problems) and 24 test problems of gsm8k_dir, as a local
    data folder."""
    out = tmp_path_factory.mktemp("gsm8k-small")
    for split, n in (("train", 60), ("test", 24)):
        lines = (gsm8k_dir / f"{split}.jsonl").read_text().splitlines()[:n]
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, small_data_dir) -> Path:
    """A random 2-layer, 32-wide Qwen2 with a ~1k-token BPE tokenizer and a ChatML template."""
    out = tmp_path_factory.mktemp("tiny-qwen2")
    corpus = corpus_from_jsonl(small_data_dir / "train.jsonl", small_data_dir / "test.jsonl")
    return build_tiny_model(out, corpus)


@pytest.fixture(scope="session")
def tiny_kbit_model_dir(tmp_path_factory, small_data_dir) -> Path:
    """The tiny model 64 wide, for a quantized base: bitsandbytes' CPU inference kernel for
    4-bit layers (used by plain transformers on a CPU with AVX512-BF16) needs in_features to be a
    multiple of 64 and out_features of 32, which the 32-wide model's layers are not."""
    out = tmp_path_factory.mktemp("tiny-qwen2-64")
    corpus = corpus_from_jsonl(small_data_dir / "train.jsonl", small_data_dir / "test.jsonl")
    return build_tiny_model(out, corpus, hidden=64)


def tiny_train_config(tiny_model_dir: Path, data_dir: Path, *overrides: str):
    """A training config on the tiny model and the small data: a few CPU steps."""
    from mathtune.config import load_config

    base = [
        "name=tiny",
        f"model.name_or_path={tiny_model_dir}",
        f"data.source={data_dir}",
        "data.train_limit=16",
        "train.batch_size=2",
        "train.epochs=1",
        "train.eval_every_steps=2",
    ]
    return load_config(None, base + list(overrides))


def training_lengths(tiny_model_dir: Path, data_dir: Path) -> list[int]:
    """Token lengths of the training examples tiny_train_config builds (its train_limit of 16)."""
    from mathtune.models.load import load_tokenizer
    from mathtune.task.data import training_splits
    from mathtune.task.sequences import training_example

    config = tiny_train_config(tiny_model_dir, data_dir)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    train, _ = training_splits(str(data_dir), val_fraction=config.data.val_fraction, seed=config.seed,
                               train_limit=config.data.train_limit)
    return [len(training_example(p, tokenizer, "chat")) for p in train]


def max_length_dropping_some(lengths: list[int]) -> int:
    """A data.max_length that drops some training examples but not all: 400 drops some of GSM8K's
    first problems under the tiny tokenizer; the shorter demo problems need one below their longest."""
    return min(400, max(lengths) - 1)


@contextlib.contextmanager
def torch_threads(n: int):
    """The tiny model's matrices are too small to share between threads; on a busy 2-core
    machine a second OpenMP thread makes each of them ~100x slower, not faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_model_dir, small_data_dir) -> Path:
    """One finished `mathtune train` run on the tiny model, shared by the read-only tests."""
    from mathtune.train.run import run_train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    with torch_threads(1):
        return run_train(tiny_train_config(tiny_model_dir, small_data_dir), run_dir)
