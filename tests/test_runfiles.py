"""The atomic writer: whole files only, with the mode the user's umask gives."""

from __future__ import annotations

import os
import stat

from mathtune.core.runfiles import write_atomic


def test_atomic_files_follow_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}\n")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        os.umask(0o077)
        write_atomic(tmp_path / "b.json", b"{}\n")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600
    finally:
        os.umask(before)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
