"""Files written atomically (checkpoints, configs, exported weights) get the permissions of any new file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sslib.io import atomic_write_bytes


@pytest.fixture
def umask():
    """Set the process's umask for one test."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.mark.parametrize(
    ("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)], ids=["022", "027", "077"]
)
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask, mask: int, mode: int):
    umask(mask)
    path = tmp_path / "sub" / "last.ckpt"
    atomic_write_bytes(path, b"new")
    atomic_write_bytes(path, b"replaced")  # a rewrite too
    assert path.read_bytes() == b"replaced"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
