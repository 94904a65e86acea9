"""Checkpoint files: atomic writes, so a reader (or a resumed run) never sees a half-written file, and safe
reads (``weights_only=True``) whose failures are one line naming the file."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from sslib.errors import ConfigError, MissingFileError


def _new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: ``0o666`` less the process's umask (``0o644`` under
    the usual ``022``, so other users of a shared machine can read it)."""
    umask = os.umask(0)  # the umask can only be read by setting it
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a temporary file in the same folder, fsync it, then rename it over ``path``.

    The file gets the permissions of any new file (``0o666`` less the umask), not the owner-only ones of the
    temporary file. Missing parent folders are created.

    Args:
        path: The file to write.
        data: Its new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, _new_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8.

    Args:
        path: The file to write.
        text: Its new content.
    """
    atomic_write_bytes(path, text.encode())


def load_torch_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, so the file can never run code.

    Args:
        path: The checkpoint file.
        map_location: Where the tensors are loaded, as ``torch.load``'s ``map_location``.
        mmap: Whether to map the file instead of reading it whole.

    Returns:
        The loaded object.

    Raises:
        MissingFileError: If the file does not exist.
        ConfigError: If the file holds other objects, or is empty, truncated or not a torch file; one
            line naming it and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):  # torch.save writes zip archives; other bytes fail as pickles
            raise _unreadable(path, err) from None
        raise ConfigError(
            f"checkpoint '{path}' holds objects other than tensors and plain containers; sslib reads "
            "checkpoints with weights_only=True and does not run their code: export it from the library "
            "that wrote it, or use a file you trust that holds tensors only"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:  # empty, truncated
        raise _unreadable(path, err) from None


def _unreadable(path: Path, err: Exception) -> ConfigError:
    kind = "is empty" if path.stat().st_size == 0 else "is not a readable torch checkpoint"
    return ConfigError(
        f"checkpoint '{path}' {kind} ({type(err).__name__}), e.g. cut short by a crash or a full disk: "
        "delete it and resume from an earlier checkpoint, or start the run again"
    )
