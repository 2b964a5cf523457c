"""Problem loading, validation and the seeded train/validation split.

A source is a hub dataset id (loaded with `datasets`; config `main` for openai/gsm8k), a
local folder holding `train.jsonl` and `test.jsonl`, or one local JSONL file (a test set).
Records are JSON objects with a question and an answer; GSM8K's field names are the default
and `DataFormat` maps others (GSM-Plus, SVAMP, ASDiv, users' own sets). An answer is a
solution ending in `#### N` or a bare number.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mathtune.core.errors import MathtuneError
from mathtune.core.hub import hub_reachable, hub_unavailable, not_in_offline_cache, offline_variable
from mathtune.core.runfiles import check_unique_id, iter_jsonl
from mathtune.task.score import extract_gold

HUB_DEFAULT = "openai/gsm8k"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Problem:
    id: str
    """Stable id: the source split and the 0-based line (row) index, e.g. 'test-17'."""
    question: str
    answer: str
    """The full gold solution, ending in '#### N'."""
    gold: str
    """The normalized gold number."""


@dataclass(frozen=True)
class DataFormat:
    """How a source reads: the fields holding the question and the answer, the hub config,
    and the source split (hub split name, or file stem in a folder) that is the test set."""

    question: str = "question"
    answer: str = "answer"
    config: str | None = None
    test_split: str = "test"

    @classmethod
    def of(cls, section) -> "DataFormat":
        """How a config section that names a source reads it (data, or a data.mix entry): its
        `fields`, hub `config` and `split`."""
        return cls(question=section.fields.question, answer=section.fields.answer, config=section.config,
                   test_split=section.split)


GSM8K_FORMAT = DataFormat()


def resolve_source(source: str) -> str:
    """MATHTUNE_DATA, when set, replaces the hub default (so offline machines need no edits)."""
    env = os.environ.get("MATHTUNE_DATA")
    if env and source == HUB_DEFAULT:
        return env
    return source


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(source))


def _make_problem(obj: object, pid: str, where: str, fmt: DataFormat = GSM8K_FORMAT) -> Problem:
    if not isinstance(obj, dict):
        raise MathtuneError(f"{where}: expected a JSON object with '{fmt.question}' and '{fmt.answer}'")
    question, answer = obj.get(fmt.question), obj.get(fmt.answer)
    if not isinstance(question, str) or not question.strip():
        raise MathtuneError(f"{where}: missing or empty '{fmt.question}'")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a bare number, as SVAMP and ASDiv give it
    if not isinstance(answer, str) or not answer.strip():
        raise MathtuneError(f"{where}: '{fmt.answer}' must be a solution ending in '#### N' or a bare number")
    try:
        gold = extract_gold(answer)
    except ValueError:
        if "####" in answer:
            raise MathtuneError(f"{where}: the text after '####' is not a number") from None
        raise MathtuneError(f"{where}: '{fmt.answer}' must be a solution ending in '#### N' or a bare number") from None
    if "####" not in answer:
        answer = f"#### {answer.strip()}"  # one form for the scorer, the taxonomy and training
    return Problem(id=pid, question=question, answer=answer, gold=gold)


def read_jsonl_problems(path: Path, split: str, fmt: DataFormat = GSM8K_FORMAT) -> list[Problem]:
    if not path.is_file():
        raise MathtuneError(f"data file not found: {path}")
    problems, seen = [], {}
    for i, (where, obj) in enumerate(iter_jsonl(path)):
        # A problem is named by its split and position ('test-17') unless the file gives it an
        # id of its own (the probe's variants, users' sets); such ids must be unique, or
        # results joined on them would pair wrongly.
        own = obj.get("id") if isinstance(obj, dict) else None
        key = str(own) if isinstance(own, (str, int)) and str(own).strip() else None
        problems.append(_make_problem(obj, key or f"{split}-{i}", where, fmt))
        if key is not None:
            check_unique_id(seen, key, where)
    if not problems:
        raise MathtuneError(f"{path}: no problems in file")
    return problems


def _hub_config(source: str, fmt: DataFormat) -> str | None:
    return fmt.config or ("main" if source == HUB_DEFAULT else None)


def _load_hub(source: str, split: str, fmt: DataFormat = GSM8K_FORMAT) -> list[Problem]:
    why = hub_unavailable("data", source)
    if why:  # a mistyped local path, or no network: say so now, not after the client's retries
        raise MathtuneError(why)
    try:
        import datasets

        rows = datasets.load_dataset(source, _hub_config(source, fmt), split=split)
    except Exception as err:  # network, unknown id, missing config: all one user-facing failure
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # Offline and not cached (the client's words for it depend on when it read the switch).
        if offline_variable() and any(w in f"{type(err).__name__} {first}" for w in (
                "OfflineModeIsEnabled", "LocalEntryNotFoundError", "Couldn't reach")):
            raise MathtuneError(not_in_offline_cache("data", source)) from None
        raise MathtuneError(
            f"cannot load dataset '{source}' from the hub ({first}); "
            "pass a local folder with train.jsonl and test.jsonl, or set MATHTUNE_DATA"
        ) from None
    return [_make_problem(row, f"{split}-{i}", f"{source}[{split}][{i}]", fmt) for i, row in enumerate(rows)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# GSM8K's published splits (openai/grade-school-math, 7,473 train and 1,319 test problems),
# fingerprinted by their text rather than their bytes, so that a copy written with other JSON
# spacing or escaping is still recognised: sha256 over "question NUL answer NEWLINE" per problem,
# in file order. Any other file (a subset, an edit, other problems) is not called GSM8K.
GSM8K_CONTENT_SHA256 = {
    "train": "17791e939e35e50749e1b669b7a932de00a780e3415be4c36a7a38e00515d8e0",
    "test": "288f91040ca635f5233fe60c9789c0392ef354580f2a11ce0024d8efbc632c50",
}
GSM8K_HUB_ID = "openai/gsm8k"
DEMO_DATA_NAME = "GSM8K-style demo problems (not GSM8K)"


def content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for _, obj in iter_jsonl(path):
        if isinstance(obj, dict):
            digest.update(f"{obj.get('question')}\x00{obj.get('answer')}\n".encode())
    return digest.hexdigest()


def _demo_folder() -> Path:
    return Path(str(resources.files("mathtune") / "demo_data")).resolve()


def data_identity(source: str, split: str, fmt: DataFormat = GSM8K_FORMAT) -> dict:
    """Which data a split came from, exactly: a local file's absolute path and sha256, or the
    hub id with the revision the hub reports (None where it cannot be asked); and its name:
    'GSM8K' only for the hub's openai/gsm8k or a file with GSM8K's published text."""
    source = resolve_source(source)
    file_split = "train" if split == "validation" else split  # validation is carved from train
    mapped = {} if fmt == GSM8K_FORMAT else {"format": {"question": fmt.question, "answer": fmt.answer,
                                                         "config": fmt.config, "test_split": fmt.test_split}}
    if _looks_local(source):
        path = _source_file(source, file_split, fmt).resolve()
        folder = path.parent
        if folder == _demo_folder():
            name = DEMO_DATA_NAME
        elif fmt.question == "question" and content_sha256(path) == GSM8K_CONTENT_SHA256.get(file_split):
            name = "GSM8K"
        else:
            name = f"local file {folder.name}/{path.name} (not GSM8K's published {file_split} split)"
        return {"kind": "local", "name": name, "split": split, "path": str(path), "sha256": file_sha256(path), **mapped}
    revision = None
    if os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False") and hub_reachable():
        try:  # the commit the hub serves now, best effort: unreachable, it stays None
            from huggingface_hub import HfApi

            revision = HfApi().dataset_info(source, timeout=10).sha
        except Exception:
            pass
    config = _hub_config(source, fmt)
    hub_split = fmt.test_split if file_split == "test" else file_split
    name = "GSM8K" if source == GSM8K_HUB_ID and fmt == GSM8K_FORMAT else (
        f"hub dataset {source}" + (f" ({config})" if config else "") + f" [{hub_split}]")
    return {"kind": "hub", "name": name, "split": split, "id": source, "config": config, "revision": revision, **mapped}


def _source_file(source: str, split: str, fmt: DataFormat) -> Path:
    """The local file a split of a local source reads: FOLDER/SPLIT.jsonl (the test split under
    its own name, fmt.test_split), or the one file given, which is a test set."""
    path = Path(os.path.expanduser(source))
    name = fmt.test_split if split == "test" else split
    if path.is_file():
        if split != "test":
            raise MathtuneError(f"{path} is one file, read as a test set; training and validation need a folder "
                                "with train.jsonl")
        return path
    if not path.is_dir():
        raise MathtuneError(f"data folder not found: {path}")
    return path / f"{name}.jsonl"


def load_source_split(source: str, split: str, fmt: DataFormat = GSM8K_FORMAT) -> list[Problem]:
    """The raw 'train' or 'test' split of a source."""
    source = resolve_source(source)
    if _looks_local(source):
        return read_jsonl_problems(_source_file(source, split, fmt), split, fmt)
    return _load_hub(source, fmt.test_split if split == "test" else split, fmt)


def split_train_val(problems: list[Problem], val_fraction: float, seed: int) -> tuple[list[Problem], list[Problem]]:
    """Seeded, stable 90/10-style split.

    Each problem is ranked by sha256(seed, question): the ranking depends on nothing but the
    seed and the text, so every machine and every Python version gets the same ids, and
    adding problems to the file does not reshuffle the existing ones. Both halves keep the
    source order.
    """
    n_val = round(len(problems) * val_fraction)
    if n_val == 0:
        raise MathtuneError(
            f"validation split is empty: {len(problems)} problems x val_fraction {val_fraction} rounds to 0"
        )
    if n_val >= len(problems):
        raise MathtuneError(f"training split is empty: val_fraction {val_fraction} takes all {len(problems)} problems")

    def rank(p: Problem) -> str:
        return hashlib.sha256(f"{seed}\x00{p.question}".encode()).hexdigest()

    val_ids = {p.id for p in sorted(problems, key=rank)[:n_val]}
    train = [p for p in problems if p.id not in val_ids]
    val = [p for p in problems if p.id in val_ids]
    return train, val


def load_split(source: str, split: str, *, val_fraction: float = 0.10, seed: int = 42,
               fmt: DataFormat = GSM8K_FORMAT) -> list[Problem]:
    """'train' and 'validation' come from the seeded split of the source's train split;
    'test' is the source's test split, which training never reads."""
    if split not in SPLITS:
        raise MathtuneError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
    if split == "test":
        return load_source_split(source, "test", fmt)
    train, val = split_train_val(load_source_split(source, "train", fmt), val_fraction, seed)
    return train if split == "train" else val


def training_splits(
    source: str, *, val_fraction: float, seed: int, train_limit: int | None = None, fmt: DataFormat = GSM8K_FORMAT
) -> tuple[list[Problem], list[Problem]]:
    """(train, validation) for fine-tuning. With train_limit, both halves are cut so the
    split keeps its proportion: the first N training problems and the first
    ceil(N * f / (1 - f)) validation problems (64 and 8 at f = 0.1), so a quick run does not
    spend most of its time validating on all 747 held-out problems."""
    train, val = split_train_val(load_source_split(source, "train", fmt), val_fraction, seed)
    if train_limit is not None:
        train = train[:train_limit]
        val = val[: max(1, math.ceil(train_limit * val_fraction / (1 - val_fraction)))]
    return train, val
