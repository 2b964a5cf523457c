"""Problem loading, validation and the seeded train/validation split.

A source is a hub dataset id (loaded with `datasets`; config `main` for openai/gsm8k), a
local folder holding `train.jsonl` and `test.jsonl`, or one local JSONL file (a test set).
Records are JSON objects with a question and an answer; GSM8K's field names are the default
and `DataFormat` maps others (GSM-Plus, SVAMP, ASDiv, MetaMathQA, users' own sets). An answer is
a solution that states its final number in a form the strict scorer accepts ('#### N', 'The
answer is: N', '\\boxed{N}', ...: task.answers), a bare number, or a solution whose final number
is in a field of its own (`DataFormat.final`). The solution is kept as written.
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
from mathtune.task.answers import BARE_FORM, HASH_FORM, NONE_STATED, read_gold, stated_answer
from mathtune.task.score import normalize_number

HUB_DEFAULT = "openai/gsm8k"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Problem:
    id: str
    """Stable id: the source split and the 0-based line (row) index, e.g. 'test-17'."""
    question: str
    answer: str
    """The gold solution as the data set writes it ('#### N' alone for a bare-number answer)."""
    gold: str
    """The normalized gold number."""
    form: str = HASH_FORM
    """How the solution states its final number (task.answers: '#### N', 'The answer is: N', ...)."""


@dataclass(frozen=True)
class DataFormat:
    """How a source reads: the fields holding the question and the answer, the hub config,
    and the source split (hub split name, or file stem in a folder) that is the test set."""

    question: str = "question"
    answer: str = "answer"
    config: str | None = None
    test_split: str = "test"
    final: str | None = None
    """A field holding the final number, when the answer field's solution does not state it."""

    @classmethod
    def of(cls, section, fields=None) -> "DataFormat":
        """How a config section that names a source reads it (data, or a data.mix entry): its
        `fields` (or the fields given), hub `config` and `split`."""
        fields = fields or section.fields
        return cls(question=fields.question, answer=fields.answer, config=section.config,
                   test_split=section.split, final=fields.final)

    def as_record(self) -> dict:
        """The mapping as a summary records it (final only where it is set, as before it existed)."""
        record = {"question": self.question, "answer": self.answer, "config": self.config,
                  "test_split": self.test_split}
        return record | ({"final": self.final} if self.final else {})


GSM8K_FORMAT = DataFormat()


@dataclass(frozen=True)
class DataSource:
    """A data source resolved once, at a command's door (resolve_data): where it is read from
    (MATHTUNE_DATA applied), whether that is a local path, and how its records read. Every stage
    loads its splits and records its identity from this, never from the name again."""

    given: str
    """The source as the config or the command line names it."""
    location: str
    local: bool
    fmt: DataFormat = GSM8K_FORMAT

    def checked(self) -> "DataSource":
        """This source, once a hub id has been found fetchable here: a mistyped local path, or no
        network, is said now in one line, not after the hub client's retries."""
        why = None if self.local else hub_unavailable("data", self.location)
        if why:
            raise MathtuneError(why)
        return self

    def raw(self, split: str) -> list[Problem]:
        """The source's own 'train' or 'test' split, as written."""
        if not self.local:
            return _load_hub(self.location, self.fmt.test_split if split == "test" else split, self.fmt)
        return read_jsonl_problems(self._file(split), split, self.fmt)

    def _file(self, split: str) -> Path:
        """The local file of a source split ('train' or 'test'), which must exist."""
        path = _source_file(self.location, split, self.fmt)
        if split == "test" and not path.is_file():
            raise MathtuneError(f"data file not found: {path} (a run evaluates on its data's test split unless "
                                "eval.source names other data, e.g. a folder holding GSM8K's test.jsonl)")
        if not path.is_file():
            raise MathtuneError(f"data file not found: {path}")
        return path

    def split(self, split: str, *, val_fraction: float, seed: int) -> list[Problem]:
        """'train' and 'validation' come from the seeded split of the source's train split;
        'test' is the source's test split, which training never reads."""
        if split not in SPLITS:
            raise MathtuneError(f"unknown split '{split}' (expected one of {', '.join(SPLITS)})")
        if split == "test":
            return self.raw("test")
        train, val = split_train_val(self.raw("train"), val_fraction, seed)
        return train if split == "train" else val

    def identity(self, split: str) -> dict:
        """Which data a split came from, exactly: a local file's absolute path and sha256, or the
        hub id with the revision the hub reports (None where it cannot be asked); and its name:
        'GSM8K' only for the hub's openai/gsm8k or a file with GSM8K's published text (KNOWN_SETS)."""
        fmt = self.fmt
        file_split = "train" if split == "validation" else split  # validation is carved from train
        mapped = {} if fmt == GSM8K_FORMAT else {"format": fmt.as_record()}
        if self.local:
            path = self._file(file_split).resolve()
            return {"kind": "local", "name": _local_name(path, file_split, fmt), "split": split, "path": str(path),
                    "sha256": file_sha256(path), **mapped}
        return _hub_identity(self.location, split, file_split, fmt) | mapped


def resolve_data(source: str, fmt: DataFormat = GSM8K_FORMAT) -> DataSource:
    """Where a source named by its text is read from: MATHTUNE_DATA in place of the hub default,
    a local path told from a hub id. Nothing is read or asked here (DataSource.checked asks)."""
    location = resolve_source(source)
    return DataSource(source, location, _looks_local(location), fmt)


def resolve_source(source: str) -> str:
    """MATHTUNE_DATA, when set, replaces the hub default (so offline machines need no edits)."""
    env = os.environ.get("MATHTUNE_DATA")
    if env and source == HUB_DEFAULT:
        return env
    return source


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.exists(os.path.expanduser(source))


ANSWER_FORMS = ("a solution stating its final number ('#### N', 'The answer is: N', '\\boxed{N}', ...) "
                "or a bare number")


def _fields_present(obj: dict) -> str:
    names = [str(k) for k in obj][:12]
    return "the record has " + (", ".join(f"'{n}'" for n in names) + (", ..." if len(obj) > 12 else "")
                                if names else "no fields")


def _field(obj: dict, name: str, where: str) -> object:
    if name not in obj:
        raise MathtuneError(f"{where}: no field '{name}' ({_fields_present(obj)}); map yours with fields.question, "
                            "fields.answer (and fields.final)")
    return obj[name]


def _make_problem(obj: object, pid: str, where: str, fmt: DataFormat = GSM8K_FORMAT) -> Problem:
    if not isinstance(obj, dict):
        raise MathtuneError(f"{where}: expected a JSON object with '{fmt.question}' and '{fmt.answer}'")
    question, answer = _field(obj, fmt.question, where), _field(obj, fmt.answer, where)
    if not isinstance(question, str) or not question.strip():
        raise MathtuneError(f"{where}: missing or empty '{fmt.question}'")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a bare number, as SVAMP and ASDiv give it
    if not isinstance(answer, str) or not answer.strip():
        raise MathtuneError(f"{where}: '{fmt.answer}' must be {ANSWER_FORMS}")
    if fmt.final is not None:
        return _with_final_field(obj, pid, where, fmt, question, answer)
    try:
        gold, form = read_gold(answer)
    except ValueError:
        if "####" in answer:
            raise MathtuneError(f"{where}: the text after '####' is not a number") from None
        raise MathtuneError(f"{where}: '{fmt.answer}' must be {ANSWER_FORMS} (or name a field holding the final "
                            "number with fields.final)") from None
    if form == BARE_FORM:
        answer = f"#### {answer.strip()}"  # no solution to train: the number in the chat prompt's default form
    return Problem(id=pid, question=question, answer=answer, gold=gold, form=form)


def _with_final_field(obj: dict, pid: str, where: str, fmt: DataFormat, question: str, answer: str) -> Problem:
    """A record whose final number is in a field of its own: the solution as written, whatever it states."""
    value = _field(obj, fmt.final, where)
    gold = normalize_number(str(value)) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    if gold is None:
        raise MathtuneError(f"{where}: '{fmt.final}' (fields.final) must be a number, got {str(value)[:40]!r}")
    form = stated_answer(answer)[1] or NONE_STATED
    return Problem(id=pid, question=question, answer=answer, gold=gold, form=form)


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
    """A hub split; the source was checked at the door (resolve_data)."""
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


# Known data sets' published splits (GSM8K: openai/grade-school-math, 7,473 train and 1,319 test
# problems), recognised by their text rather than their bytes or field names: sha256 over
# "question NUL gold number NEWLINE" per problem, in file order. So a copy written with other
# JSON spacing, other field names or its answers in another stated form is still recognised; a
# subset, an edit or other problems is not.
KNOWN_SETS = {
    "7cfbcccc1047de8e6c13b487be9108b74e8d24d28229e787463090e6bd312bd6": ("GSM8K", "train"),
    "cc309d35b75ab0b1d11fd93617c71ef0b34b0b749825986397c199a26c4dd0b6": ("GSM8K", "test"),
}
GSM8K_HUB_ID = "openai/gsm8k"
DEMO_DATA_NAME = "GSM8K-style demo problems (not GSM8K)"


def text_fingerprint(problems: list[Problem]) -> str:
    """The fingerprint KNOWN_SETS holds: the problems' question text and gold numbers, in order."""
    digest = hashlib.sha256()
    for p in problems:
        digest.update(f"{p.question}\x00{p.gold}\n".encode())
    return digest.hexdigest()


def _demo_folder() -> Path:
    return Path(str(resources.files("mathtune") / "demo_data")).resolve()


def _local_name(path: Path, split: str, fmt: DataFormat) -> str:
    """A local file's name: a known set's (with its split) when its text is that set's."""
    if path.parent == _demo_folder():
        return DEMO_DATA_NAME
    try:
        known = KNOWN_SETS.get(text_fingerprint(read_jsonl_problems(path, split, fmt)))
    except MathtuneError:
        known = None
    if known is not None:
        name, known_split = known
        return name if known_split == split else f"{name}'s {known_split} split"
    return f"local file {path.parent.name}/{path.name} (not GSM8K's published {split} split)"


def _hub_identity(source: str, split: str, file_split: str, fmt: DataFormat) -> dict:
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
    return {"kind": "hub", "name": name, "split": split, "id": source, "config": config, "revision": revision}


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
    """The raw 'train' or 'test' split of a source named by its text."""
    return resolve_data(source, fmt).checked().raw(split)


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
    """DataSource.split of a source named by its text."""
    return resolve_data(source, fmt).checked().split(split, val_fraction=val_fraction, seed=seed)


def training_splits(
    source: "str | DataSource", *, val_fraction: float, seed: int, train_limit: int | None = None, fmt: DataFormat = GSM8K_FORMAT
) -> tuple[list[Problem], list[Problem]]:
    """(train, validation) for fine-tuning. With train_limit, both halves are cut so the
    split keeps its proportion: the first N training problems and the first
    ceil(N * f / (1 - f)) validation problems (64 and 8 at f = 0.1), so a quick run does not
    spend most of its time validating on all 747 held-out problems."""
    data = source if isinstance(source, DataSource) else resolve_data(source, fmt).checked()
    train, val = split_train_val(data.raw("train"), val_fraction, seed)
    if train_limit is not None:
        train = train[:train_limit]
        val = val[: max(1, math.ceil(train_limit * val_fraction / (1 - val_fraction)))]
    return train, val
