"""The bad-input corpus: every case runs the real `mathtune` command in a process of its own,
as a user would, and must end with a non-zero exit, one line on stderr that names the
problem (with the file and line where there is one), no traceback, and no new output.

Read-only folders and a full disk are real where the machine allows it (chmod for a normal
user, `chattr +i` or a read-only mount for root; a tiny tmpfs for a full disk); where it does
not, the case is skipped and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from synthetic_run import write_run

GOOD = json.dumps({"question": "Ann has 2 apples and buys 3. How many now?", "answer": "2 + 3 = 5\n#### 5"})


@dataclass
class Ctx:
    tmp: Path
    model: Path
    data: Path
    gsm8k: Path
    out: Path = field(init=False)

    def __post_init__(self):
        self.out = self.tmp / "out"

    def data_folder(self, test_lines: list[str], train_lines: list[str] | None = None) -> Path:
        folder = self.tmp / "data"
        folder.mkdir(exist_ok=True)
        (folder / "test.jsonl").write_text("".join(line + "\n" for line in test_lines), encoding="utf-8")
        if train_lines is not None:
            (folder / "train.jsonl").write_text("".join(line + "\n" for line in train_lines), encoding="utf-8")
        return folder

    def config(self, text: str) -> Path:
        path = self.tmp / "c.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def eval_args(self, *extra: str, data: Path | None = None, model: Path | None = None) -> list[str]:
        return ["eval", "--model", str(model or self.model), "--data", str(data or self.data), "--limit", "2",
                "--max-new-tokens", "4", "--out", str(self.out), *extra]

    def run_folder(self) -> Path:
        return write_run(self.tmp / "runs", self.gsm8k, n_problems=9)


@dataclass
class Case:
    name: str
    argv: Callable[[Ctx], list[str]]
    expect: Callable[[Ctx], list[str]]  # substrings the error line must hold
    needs: str | None = None  # "readonly" or "full-disk": a folder to make so first
    absent: Callable[[Ctx], list[str]] = lambda c: []  # substrings the error line must not hold
    env: dict[str, str | None] = field(default_factory=dict)  # set (None: removed) for this case
    in_tmp: bool = False  # run in the case's own folder (for relative paths)
    silent: bool = False  # nothing on stdout either: the error comes before any output


def _model_copy(ctx: Ctx, keep: Callable[[str], bool]) -> Path:
    folder = ctx.tmp / "model-copy"
    folder.mkdir()
    for item in ctx.model.iterdir():
        if keep(item.name):
            shutil.copy(item, folder / item.name)
    return folder


def _no_weights(ctx: Ctx) -> Path:
    return _model_copy(ctx, lambda name: not name.endswith(".safetensors"))


def _corrupt_weights(ctx: Ctx) -> Path:
    folder = _model_copy(ctx, lambda name: True)
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json and not weights")
    return folder


def _no_chat_template(ctx: Ctx) -> Path:
    """The tiny model with a tokenizer that has neither a chat template nor ChatML's tokens."""
    from tiny import build_tokenizer, corpus_from_jsonl

    folder = _model_copy(ctx, lambda name: not name.startswith(("tokenizer", "chat_template", "special_tokens")))
    tok = build_tokenizer(corpus_from_jsonl(ctx.data / "test.jsonl"), vocab_size=600, specials=["<|endoftext|>"])
    tok.chat_template = None
    tok.save_pretrained(folder)
    return folder


def _other_adapter(ctx: Ctx) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config.from_pretrained(ctx.model)
    config.hidden_size, config.intermediate_size = 48, 96
    other = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    other.save_pretrained(ctx.tmp / "adapter")
    return ctx.tmp / "adapter"


def _edit_record(ctx: Ctx, name: str, index: int, change: Callable[[dict], None]) -> Path:
    """A run folder whose eval/NAME.jsonl has record `index` changed by hand."""
    run = ctx.run_folder()
    path = run / "eval" / name
    lines = path.read_text().splitlines()
    row = json.loads(lines[index])
    change(row)
    lines[index] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")
    return run


def _edited_record(ctx: Ctx) -> Path:
    return _edit_record(ctx, "base.jsonl", 2, lambda row: row.update(correct_strict="yes"))


def _record_without_field(ctx: Ctx) -> Path:
    return _edit_record(ctx, "tuned.jsonl", 1, lambda row: row.pop("correct_flexible"))


def _newer_run(ctx: Ctx) -> Path:
    """A run folder written by a later mathtune, whose config has a key this one lacks."""
    run = ctx.run_folder()
    with (run / "config.yaml").open("a") as fh:
        fh.write("future_section:\n  setting: 1\n")
    return run


def _malformed_summary(ctx: Ctx) -> Path:
    run = ctx.run_folder()
    (run / "eval" / "base.summary.json").write_text('{"n": 9, "accuracy_strict": ')
    return run


def _edited_metrics(ctx: Ctx) -> Path:
    run = ctx.run_folder()
    with (run / "train" / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": "last", "loss": 0.1}\n')
    return run


def _folder(ctx: Ctx, name: str) -> Path:
    (ctx.tmp / name).mkdir()
    return ctx.tmp / name


def _file(ctx: Ctx, name: str) -> Path:
    (ctx.tmp / name).write_text("x")
    return ctx.tmp / name


def _latin1_data(ctx: Ctx) -> Path:
    folder = ctx.data_folder([GOOD])
    with (folder / "test.jsonl").open("ab") as fh:
        fh.write('{"question": "Un caf\u00e9 co\u00fbte 3 euros", "answer": "#### 3"}\n'.encode("latin-1"))
    return folder


def _analysed_run(ctx: Ctx) -> Path:
    from mathtune.analysis.analyze import run_analysis

    run = ctx.run_folder()
    run_analysis(run)
    return run


def _edited_analysis(ctx: Ctx) -> Path:
    run = _analysed_run(ctx)
    analysis = json.loads((run / "analysis.json").read_text())
    analysis["benchmark"]["models"]["tuned"]["n"] = 1000
    (run / "analysis.json").write_text(json.dumps(analysis, indent=2))
    return run


def _truncated_analysis(ctx: Ctx) -> Path:
    run = _analysed_run(ctx)
    text = (run / "analysis.json").read_text()
    (run / "analysis.json").write_text(text[: len(text) // 2])
    return run


def _scores(ctx: Ctx, lines: list[str]) -> Path:
    path = ctx.tmp / "completions.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


COMPLETION = json.dumps({"completion": "#### 5", "answer": "#### 5"})

CASES = [
    # --- configs ---
    Case("config file missing", lambda c: ["run", str(c.tmp / "nope.yaml")], lambda c: ["not found", "nope.yaml"]),
    Case("config not a mapping", lambda c: ["run", str(c.config("- a\n- b\n"))], lambda c: ["c.yaml", "mapping"]),
    Case("config not YAML", lambda c: ["run", str(c.config("train: {epochs: [1, 2\n"))],
         lambda c: ["c.yaml", "not valid YAML", "line"]),
    # The parser stops at the end of a 2-line file; the line to look at is the one the bracket opened on.
    Case("config YAML bracket never closed", lambda c: ["run", str(c.config("train:\n  epochs: [1\n"))],
         lambda c: ["c.yaml: line 2: not valid YAML", "expected ',' or ']'", "line 2, column 11"],
         absent=lambda c: ["line 3"]),
    Case("config conflict made by --set", lambda c: ["plan", str(c.config(
        "train: {method: grpo, batch_size: 8, grpo: {group_size: 4}}\n")), "--set", "train.grpo.group_size=3",
        "--set", "train.batch_size=4"],
        lambda c: ["--set train.grpo.group_size=3", "--set train.batch_size=4", "multiple of grpo.group_size (3)"],
        absent=lambda c: ["c.yaml"]),
    Case("config unknown key", lambda c: ["run", str(c.config("trian: {epochs: 1}\n"))], lambda c: ["trian"]),
    Case("config wrong type", lambda c: ["run", str(c.config("train: {epochs: three}\n"))],
         lambda c: ["train.epochs"]),
    Case("config is a folder", lambda c: ["run", str(c.tmp)], lambda c: [str(c.tmp), "folder"]),
    Case("--set without =", lambda c: ["run", str(c.config("name: x\n")), "--set", "train.epochs"],
         lambda c: ["key=value"]),
    Case("--set wrong type", lambda c: ["plan", str(c.config("name: x\n")), "--set", "lora.r=abc"],
         lambda c: ["lora.r"]),
    Case("--set unknown key", lambda c: ["plan", str(c.config("name: x\n")), "--set", "train.epochz=2"],
         lambda c: ["train.epochz"]),
    # --- data files ---
    Case("data file empty", lambda c: c.eval_args(data=c.data_folder([])), lambda c: ["test.jsonl", "no problems"]),
    Case("data line not JSON", lambda c: c.eval_args(data=c.data_folder([GOOD, "{broken"])),
         lambda c: ["test.jsonl:2", "malformed JSON"]),
    Case("data answer without #### N", lambda c: c.eval_args(
        data=c.data_folder([GOOD, json.dumps({"question": "q?", "answer": "it is 4"})])),
        lambda c: ["test.jsonl:2", "#### N"]),
    Case("data gold not a number", lambda c: c.eval_args(
        data=c.data_folder([GOOD, json.dumps({"question": "q?", "answer": "so\n#### four"})])),
        lambda c: ["test.jsonl:2", "not a number"]),
    Case("data empty question", lambda c: c.eval_args(
        data=c.data_folder([GOOD, json.dumps({"question": "  ", "answer": "#### 4"})])),
        lambda c: ["test.jsonl:2", "question"]),
    Case("data duplicate id", lambda c: c.eval_args(data=c.data_folder([
        json.dumps({"id": "p1", "question": "q?", "answer": "#### 4"}),
        json.dumps({"id": "p2", "question": "r?", "answer": "#### 5"}),
        json.dumps({"id": "p1", "question": "s?", "answer": "#### 6"})])),
        lambda c: ["test.jsonl:3", "duplicate id 'p1'", "line 1"]),
    Case("data line not an object", lambda c: c.eval_args(data=c.data_folder([GOOD, "[1, 2]"])),
         lambda c: ["test.jsonl:2", "JSON object"]),
    Case("data not UTF-8", lambda c: c.eval_args(data=_latin1_data(c)),
         lambda c: ["test.jsonl:2", "UTF-8"]),
    Case("data folder missing", lambda c: c.eval_args(data=c.tmp / "no-data"), lambda c: ["data folder not found"]),
    Case("data folder without the split", lambda c: c.eval_args("--split", "test", data=c.tmp),
         lambda c: ["data file not found", "test.jsonl"]),
    Case("train file empty", lambda c: ["train", str(c.config(
        f"model: {{name_or_path: {c.model}}}\ndata: {{source: {c.data_folder([GOOD], [])}}}\n")), "--out", str(c.out)],
        lambda c: ["train.jsonl", "no problems"]),
    # --- models ---
    Case("model path missing", lambda c: c.eval_args(model=c.tmp / "no-model"), lambda c: ["model path not found"]),
    Case("model folder without weights", lambda c: c.eval_args(model=_no_weights(c)), lambda c: ["weights"]),
    Case("model folder empty", lambda c: c.eval_args(model=_folder(c, "empty-model")), lambda c: ["empty-model"]),
    Case("model weights corrupt", lambda c: c.eval_args(model=_corrupt_weights(c)),
         lambda c: ["model.safetensors"]),
    Case("tokenizer without chat template", lambda c: c.eval_args("--prompt", "chat", model=_no_chat_template(c)),
         lambda c: ["chat template", "--prompt cot8"]),
    # --- adapters ---
    Case("adapter for another base model", lambda c: c.eval_args("--adapter", str(_other_adapter(c))),
         lambda c: ["does not fit this model"]),
    Case("adapter folder missing", lambda c: c.eval_args("--adapter", str(c.tmp / "no-adapter")),
         lambda c: ["adapter", "no-adapter"]),
    Case("adapter folder without adapter_config.json", lambda c: c.eval_args("--adapter", str(c.tmp)),
         lambda c: ["adapter_config.json"]),
    # --- run folders ---
    Case("report on a missing folder", lambda c: ["report", str(c.tmp / "no-run")], lambda c: ["run folder not found"]),
    Case("report on a folder that is no run", lambda c: ["report", str(c.tmp)], lambda c: ["nothing to analyze"]),
    Case("run from a later mathtune", lambda c: ["report", str(_newer_run(c))],
         lambda c: ["config.yaml", "future_section"]),
    Case("record edited by hand", lambda c: ["report", str(_edited_record(c))],
         lambda c: ["base.jsonl:3", "correct_strict"]),
    Case("record missing a field", lambda c: ["report", str(_record_without_field(c))],
         lambda c: ["tuned.jsonl:2", "correct_flexible"]),
    Case("analysis.json edited by hand", lambda c: ["report", str(_edited_analysis(c))],
         lambda c: ["analysis.json", "changed after mathtune wrote it", "--overwrite"]),
    Case("analysis.json cut short", lambda c: ["report", str(_truncated_analysis(c))],
         lambda c: ["analysis.json", "is not whole JSON (cut short"]),
    Case("summary not JSON", lambda c: ["report", str(_malformed_summary(c))],
         lambda c: ["base.summary.json", "malformed JSON"]),
    Case("metrics edited by hand", lambda c: ["report", str(_edited_metrics(c))],
         lambda c: ["metrics.jsonl:", "step"]),
    Case("compare an unfinished run", lambda c: ["compare", str(c.run_folder()), str(c.tmp)],
         lambda c: ["no config.yaml"]),
    Case("export without an adapter", lambda c: ["export", str(c.run_folder()), "--merged", str(c.out)],
         lambda c: ["adapter"]),
    Case("extra task data missing", lambda c: c.eval_args("--extra", "mmlu", "--extra-data", f"mmlu={c.tmp / 'no-mmlu'}"),
         lambda c: ["task mmlu", "no-mmlu"]),
    Case("extra data without =", lambda c: c.eval_args("--extra", "mmlu", "--extra-data", "mmlu"),
         lambda c: ["--extra-data takes TASK=PATH"]),
    Case("mix source missing", lambda c: ["train", str(c.config(
        f"model: {{name_or_path: {c.model}}}\ndata: {{source: {c.data}, mix: [{{source: {c.tmp / 'none.jsonl'}}}]}}\n")),
        "--out", str(c.out)], lambda c: ["none.jsonl", "not found"]),
    Case("field mapping that fits no record", lambda c: c.eval_args("--question-field", "problem"),
         lambda c: ["test.jsonl:1", "'problem'"]),
    # --- model and adapter settings: one line before any weights load ---
    Case("unknown target module", lambda c: ["train", str(c.config(
        f"model: {{name_or_path: {c.model}}}\ndata: {{source: {c.data}}}\nlora: {{target_modules: [q_proj, vproj]}}\n")),
        "--out", str(c.out)], lambda c: ["lora.target_modules ['vproj'] match no module", "q_proj"]),
    Case("unknown target module in a plan", lambda c: ["plan", str(c.config(
        f"model: {{name_or_path: {c.model}}}\ndata: {{source: {c.data}}}\n")), "--set", "lora.target_modules=[vproj]"],
        lambda c: ["['vproj'] match no module"]),
    Case("8-bit base with DoRA", lambda c: ["run", str(c.config(
        f"model: {{name_or_path: {c.model}, quantization: 8bit}}\ndata: {{source: {c.data}}}\nlora: {{use_dora: true}}\n")),
        "--out", str(c.out)], lambda c: ["lora.use_dora with model.quantization 8bit cannot train", "4bit"]),
    Case("quantization of a .gguf model", lambda c: ["train", str(c.config(
        f"model: {{name_or_path: {_file(c, 'model.gguf')}, quantization: 4bit}}\ndata: {{source: {c.data}}}\n")),
        "--out", str(c.out)], lambda c: ["c.yaml", "model.quantization", ".gguf file is already quantized"]),
    Case("eval --quantization of a .gguf model", lambda c: c.eval_args("--quantization", "4bit",
                                                                       model=_file(c, "model.gguf")),
         lambda c: ["quantization 4bit", ".gguf file is already quantized"]),
    Case("probe with a model path missing", lambda c: ["probe", "--model", str(c.tmp / "no-model"), "--data", str(c.data),
                                                       "--limit", "2", "--out", str(c.out)],
         lambda c: ["model path not found"]),
    # --- output folders ---
    Case("output folder read-only", lambda c: c.eval_args(), lambda c: [str(c.out)], needs="readonly"),
    Case("disk full", lambda c: c.eval_args(), lambda c: ["No space left on device"], needs="full-disk"),
    Case("output path is a file", lambda c: c.eval_args("--out", str(_file(c, "out-file"))),
         lambda c: ["out-file"]),
    Case("run --out under a file", lambda c: ["run", str(c.config(
        f"model: {{name_or_path: {c.model}}}\ndata: {{source: {c.data}}}\n")), "--out", str(_file(c, "afile") / "sub")],
        lambda c: ["--out", "afile/sub", "is a file"], silent=True),
    Case("probe --out under a file", lambda c: ["probe", "--model", str(c.model), "--data", str(c.data), "--limit", "2",
                                                "--out", str(_file(c, "afile") / "sub")],
         lambda c: ["--out", "afile/sub", "is a file"], silent=True),
    Case("--data mistyped, offline", lambda c: c.eval_args(data=Path("data/gsm8k")),
         lambda c: ["data folder not found: data/gsm8k (no such local path"],
         env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, in_tmp=True, silent=True),
    Case("--data mistyped, hub unreachable", lambda c: c.eval_args(data=Path("data/gsm8k")),
         lambda c: ["data folder not found: data/gsm8k (no such local path"],
         env={"HF_ENDPOINT": "https://127.0.0.1", **{v: None for v in (
             "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy",
             "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")}}, in_tmp=True, silent=True),
    Case("plan takes no --out", lambda c: ["plan", str(c.config("name: x\n")), "--out", str(c.out)],
         lambda c: ["unrecognized arguments: --out"]),
    # --- command lines and completion files ---
    Case("--limit 0", lambda c: c.eval_args("--limit", "0"), lambda c: ["--limit", "positive integer"]),
    Case("unknown prompt", lambda c: c.eval_args("--prompt", "fancy"), lambda c: ["--prompt", "fancy"]),
    Case("unknown command", lambda c: ["evaluate"], lambda c: ["evaluate"]),
    Case("plan for an unknown device", lambda c: ["plan", str(c.config("name: x\n")), "--device", "tpu9"],
         lambda c: ["tpu9"]),
    Case("score a missing file", lambda c: ["score", str(c.tmp / "none.jsonl")], lambda c: ["none.jsonl"]),
    Case("score an empty file", lambda c: ["score", str(_scores(c, []))], lambda c: ["completions.jsonl", "empty"]),
    Case("score a malformed line", lambda c: ["score", str(_scores(c, [COMPLETION, "{oops"]))],
         lambda c: ["completions.jsonl:2", "malformed JSON"]),
    Case("score a line without completion", lambda c: ["score", str(_scores(c, [COMPLETION, '{"answer": "#### 1"}']))],
         lambda c: ["completions.jsonl:2", "completion"]),
]


def _listing(root: Path) -> dict[str, bytes | None]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _readonly(folder: Path) -> Callable[[], None]:
    """Make folder unwritable for this process; returns how to undo it."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode == 0:
        return lambda: subprocess.run(["umount", str(folder)], check=True)
    pytest.skip("root here, and neither chattr +i nor a read-only mount works: no way to make a read-only folder")


def _full_disk(folder: Path) -> Callable[[], None]:
    """A 64 KiB tmpfs, filled up."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): no way to make a real full disk")
    undo = lambda: subprocess.run(["umount", str(folder)], check=True)  # noqa: E731
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
    except BaseException:
        undo()
        raise
    return undo


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(case, tmp_path, tiny_model_dir, small_data_dir, gsm8k_dir):
    ctx = Ctx(tmp_path, tiny_model_dir, small_data_dir, gsm8k_dir)
    undo = None
    if case.needs == "readonly":
        undo = _readonly(ctx.out)
    elif case.needs == "full-disk":
        undo = _full_disk(ctx.out)
    try:
        argv = case.argv(ctx)
        before = _listing(tmp_path)
        env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
        for name, value in case.env.items():
            env.pop(name, None) if value is None else env.__setitem__(name, value)
        proc = subprocess.run([sys.executable, "-m", "mathtune", *argv], capture_output=True, text=True,
                              env=env, stdin=subprocess.DEVNULL, timeout=300, cwd=tmp_path if case.in_tmp else None)
        after = _listing(tmp_path)
    finally:
        if undo:
            undo()
    err = proc.stderr.strip()
    assert proc.returncode not in (0, -9), f"exit {proc.returncode}; stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert lines[0].startswith(("mathtune: error:", "mathtune ")) and "error:" in lines[0], lines[0]
    for part in case.expect(ctx):
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    for part in case.absent(ctx):
        assert part not in lines[0], f"{part!r} in {lines[0]!r}"
    if case.silent:
        assert proc.stdout == "", f"printed before the error: {proc.stdout[:500]}"
    assert after == before, f"output changed: {sorted(set(after) ^ set(before)) or 'a file was rewritten'}"
