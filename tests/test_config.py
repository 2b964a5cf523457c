import argparse
from pathlib import Path

import pytest

from mathtune.config import Config, load_config
from mathtune.core.errors import MathtuneError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_reference_experiment():
    c = Config()
    assert c.model.name_or_path == "Qwen/Qwen2-1.5B"
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.bias) == (8, 16, 0.1, "none")
    assert (c.train.learning_rate, c.train.epochs, c.train.gradient_accumulation_steps) == (2e-4, 3, 1)
    assert c.train.early_stopping_patience == 5
    assert c.data.val_fraction == 0.10


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "src/mathtune/configs").glob("*.yaml")))
def test_every_shipped_config_loads(path):
    load_config(path)


def test_reference_config_equals_defaults():
    assert load_config(REPO / "configs" / "qwen2-1.5b-gsm8k-lora.yaml") == Config()


def test_overrides_are_typed_like_yaml(tmp_path):
    c = load_config(None, ["train.epochs=1", "eval.limit=10", "train.packing=false", "lora.target_modules=[q_proj, v_proj]",
                           "eval.batch_size=auto", "name=x"])
    assert c.train.epochs == 1 and c.eval.limit == 10 and c.train.packing is False
    assert c.lora.target_modules == ["q_proj", "v_proj"] and c.eval.batch_size == "auto" and c.name == "x"


def _optional_sections(model=Config, prefix: str = "") -> list[tuple[str, type]]:
    """Every section of the schema that may be null (`section: X | None`), by dotted path."""
    import typing

    from pydantic import BaseModel

    found = []
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        sections = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if sections and type(None) in args:
            found.append((prefix + name, sections[0]))
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found += _optional_sections(field.annotation, prefix + name + ".")
    return found


def test_a_dotted_override_creates_an_unset_optional_section_with_its_defaults(tmp_path):
    """`--set eval.probe.variants=2` works as `--set 'eval.probe={variants: 2}'` does, whether
    the section is left out or written as null, for every optional section of the schema."""
    sections = _optional_sections()
    assert "eval.probe" in dict(sections)
    reference = REPO / "configs" / "qwen2-1.5b-gsm8k-lora.yaml"  # writes every optional section as null
    for path, section in sections:
        key, default = next((k, f.default) for k, f in section.model_fields.items() if f.default is not None)
        override = f"{path}.{key}={default}"
        for config_file in (None, reference):
            resolved = load_config(config_file, [override])
            node = resolved
            for part in path.split("."):
                node = getattr(node, part)
            assert node == section(), (path, config_file)
    assert load_config(None, ["eval.probe.variants=2"]).eval.probe.variants == 2
    assert load_config(reference, ["eval.probe.variants=2"]) == load_config(reference, ["eval.probe={variants: 2}"])
    with pytest.raises(MathtuneError, match="'eval.probe.variant'"):  # a typo is still named
        load_config(None, ["eval.probe.variant=2"])
    with pytest.raises(MathtuneError, match="'name' is not a section"):
        load_config(reference, ["name.x=2"])


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("lora: {rank: 8}", "lora.rank"),
        ("trian: {epochs: 1}", "trian"),
        ("train: {epochs: three}", "train.epochs"),
        ("lora: {r: 0}", "lora.r"),
        ("eval: {prompt: fancy}", "eval.prompt"),
        ("eval: {samples: 4}", "eval"),  # samples > 1 at temperature 0
        ("data: {val_fraction: 1.5}", "data.val_fraction"),
        ("eval: {batch_size: 0}", "eval.batch_size"),
    ],
)
def test_bad_keys_and_types_name_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(MathtuneError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"'{key}" in msg and "\n" not in msg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(MathtuneError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    with pytest.raises(MathtuneError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(MathtuneError, match="key=value"):
        load_config(None, ["train.epochs"])


@pytest.mark.parametrize("text", ["", "\n\n", "# every key takes its default\n"])
def test_an_empty_config_file_is_every_default(tmp_path, text):
    """Every key is optional, so a file that sets none is the reference experiment."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path) == Config()
    assert load_config(path, ["train.epochs=1"]).train.epochs == 1


@pytest.mark.parametrize("text, where, reason", [
    ("train:\n  epochs: [1\n", "line 2:", "expected ',' or ']', but got the end of the file"),  # not line 3
    ('name: "run\n', "line 1:", "found unexpected end of stream"),
    ("name: x\n train: 2\n", "line 2:", "mapping values are not allowed here"),
    ("name: x\ntrain: {epochs: 1\n# more\n\n", "line 2:", "expected ',' or '}'"),
])
def test_a_yaml_error_names_a_line_of_the_file_and_the_parser_s_reason(tmp_path, text, where, reason):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(MathtuneError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {where} not valid YAML: ") and reason in str(err.value)


def test_a_conflict_across_keys_names_the_set_keys_that_made_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\neval: {temperature: 0.0}\n")
    with pytest.raises(MathtuneError) as err:
        load_config(path, ["eval.samples=3", "train.epochs=1"])
    assert str(err.value).startswith("--set eval.samples=3: config section 'eval': samples > 1 needs temperature > 0")
    path.write_text("name: x\neval: {samples: 3}\n")  # the file's own conflict is the file's
    with pytest.raises(MathtuneError, match=f"^{path}: config section 'eval'"):
        load_config(path, ["train.epochs=1"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-3 as a string; people write learning rates that way."""
    from mathtune.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  gpu_hourly_usd: 2E0\n")
    config = load_config(path, ["train.grpo.beta=4e-2"])
    assert config.train.learning_rate == 1e-4 and config.train.gpu_hourly_usd == 2.0
    assert config.train.grpo.beta == 0.04
    path.write_text("name: 1e-4x\n")
    assert load_config(path).name == "1e-4x"  # not a number: stays text


def test_key_errors_name_their_source_and_suggest(tmp_path, capsys):
    from mathtune import cli

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  learning_rte: 1.0e-4\n  epocs: 2\n")
    assert cli.main(["train", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"mathtune: error: {config}: unknown config keys 'train.learning_rte' (did you mean "
                   "'train.learning_rate'?), 'train.epocs' (did you mean 'train.epochs'?)")
    config.write_text("name: x\n")
    assert cli.main(["train", str(config), "--set", "train.learning_rte=1e-4"]) == 1
    assert capsys.readouterr().err.strip() == (
        "mathtune: error: --set train.learning_rte=1e-4: unknown config key 'train.learning_rte' "
        "(did you mean 'train.learning_rate'?)")
    assert cli.main(["train", str(config), "--set", "lora.r=0"]) == 1
    assert capsys.readouterr().err.startswith("mathtune: error: --set lora.r=0: config key 'lora.r'")


def test_version_and_bare_command(capsys):
    from mathtune import __version__, cli

    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"mathtune {__version__}"
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mathtune") and "compare" in out and "demo" in out


def test_print_config_shows_every_key_resolved_and_runs_nothing(tmp_path, capsys):
    import yaml

    from mathtune.cli import main
    from mathtune.config import Config

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  learning_rate: 1e-4\n")
    assert main(["run", str(config), "--set", "train.epochs=1", "--print-config", "--out", str(tmp_path / "r")]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["learning_rate"] == 1e-4 and printed["train"]["epochs"] == 1
    assert set(printed) == set(Config.model_fields)  # every section, defaults filled in
    assert printed["lora"]["r"] == Config().lora.r
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command", ["run", "train", "eval", "score", "report", "compare", "export", "demo"])
def test_every_command_help_has_an_example(command, capsys):
    from mathtune.cli import main

    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and f"mathtune {command}" in text


def test_reference_config_lists_every_key():
    """The shipped reference config names every key of the schema (with its default value)."""
    import yaml

    from mathtune.config import Config

    written = yaml.safe_load((REPO / "configs" / "qwen2-1.5b-gsm8k-lora.yaml").read_text())
    resolved = Config().model_dump(mode="json")

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for k, v in tree.items():
            out.add(prefix + k)
            if isinstance(v, dict) and not k.endswith("rewards"):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(written) == keys(resolved)


def test_relative_local_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """A run folder's config names its model and data by absolute path, so a rerun or a
    report from another folder finds them; hub ids stay as given."""
    from mathtune.config import load_config

    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.source=data", "model.name_or_path=./model"])
    assert config.data.source == str(tmp_path / "data") and config.model.name_or_path == str(tmp_path / "model")
    hub = load_config(None, ["data.source=openai/gsm8k", "model.name_or_path=Qwen/Qwen2-1.5B"])
    assert hub.data.source == "openai/gsm8k" and hub.model.name_or_path == "Qwen/Qwen2-1.5B"
    assert load_config(None, ["data.source=~/nowhere-x"]).data.source.startswith("/")


def test_every_command_reaches_its_stage_function():
    """The CLI imports its stages lazily; each name it calls must exist."""
    import importlib

    targets = {"mathtune.demo": "run_demo", "mathtune.pipeline": "run_experiment", "mathtune.train.run": "run_train",
               "mathtune.plan": "make_plan", "mathtune.evaluation.rescore": "score_file",
               "mathtune.analysis.compare": "compare_table", "mathtune.models.export": "export_merged"}
    for module, name in targets.items():
        assert callable(getattr(importlib.import_module(module), name)), f"{module}.{name}"


def test_every_option_has_help_and_every_help_fits_80_columns(capsys, monkeypatch):
    """Each option of each command says what it does, and --help wraps at 80 columns even in a
    wider terminal (the examples are written to fit)."""
    from mathtune.cli import build_parser, main

    monkeypatch.setenv("COLUMNS", "200")
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        silent = [a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._HelpAction)]
        assert silent == [], f"mathtune {name}: options without help: {silent}"
    for argv in [["--help"]] + [[name, "--help"] for name in commands]:
        with pytest.raises(SystemExit):
            main(argv)
        lines = capsys.readouterr().out.splitlines()
        assert max(len(line) for line in lines) <= 80, (argv, max(lines, key=len))
