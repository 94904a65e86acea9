"""Verified, atomic downloads into the checkpoint cache.

A file is streamed into a temporary file next to its final path, retried (resuming with an HTTP
``Range`` request when the server allows it), checked against its SHA-256, and only then renamed
into place: the final path never holds a partial or unverified file, and failures leave nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

import torch

from sslib.errors import SslibError

CACHE_ENV = "SSLIB_ZOO_CACHE"
RETRIES = 3
RETRY_DELAY_S = 1.0  # grows linearly with the attempt number
TIMEOUT_S = 30.0
CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


class DownloadError(SslibError, RuntimeError):
    """A download that failed for good (after retries) or whose content did not verify."""


class _Incomplete(Exception):
    """The server closed the connection before sending the announced number of bytes."""


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The zoo's cache folder: ``cache_dir``, else ``$SSLIB_ZOO_CACHE``, else ``<torch hub dir>/checkpoints/sslib``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(torch.hub.get_dir()) / "checkpoints" / "sslib"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None) -> Path:
    """Download ``url`` to ``dest`` atomically; with ``sha256``, only a file with that hash lands there."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        _download_with_retries(url, tmp, dest)
        if sha256 is not None and (actual := sha256_file(tmp)) != sha256:
            raise DownloadError(
                f"sha256 mismatch for {url}: expected {sha256}, got {actual}; the download was deleted"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _download_with_retries(url: str, tmp: Path, dest: Path) -> None:
    """Fill ``tmp`` with the body of ``url``, retrying transient failures ``RETRIES`` times."""
    for attempt in range(1, RETRIES + 1):
        try:
            _download_once(url, tmp)
            return
        except urllib.error.HTTPError as err:
            if err.code == 416:  # our Range is past the end: start over
                tmp.write_bytes(b"")
            elif err.code < 500 and err.code != 429:
                raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
            reason = f"HTTP {err.code} {err.reason}"
        except urllib.error.URLError as err:  # could not connect: refused, DNS failure, ...
            reason = f"cannot connect ({err.reason})"
        except (_Incomplete, HTTPException, OSError) as err:  # connection dropped or timed out mid-body
            reason = str(err) or type(err).__name__
        if attempt < RETRIES:
            time.sleep(RETRY_DELAY_S * attempt)
    raise DownloadError(
        f"download of {url} failed after {RETRIES} attempts: {reason}; if you are offline, "
        f"fetch the file elsewhere and save it as {dest}"
    )


def _download_once(url: str, tmp: Path) -> None:
    """One request: resume ``tmp`` with a Range request if it has bytes, else (or if refused) restart it."""
    have = tmp.stat().st_size
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        if response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            start, total = _content_range(content_range)
            if start != have:  # not the resume we asked for: start over on the next attempt
                tmp.write_bytes(b"")
                raise _Incomplete(
                    f"server answered a resume at byte {have} with Content-Range '{content_range}'"
                )
        else:  # a full body (servers without Range support, file:// URLs): start over
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with open(tmp, "ab" if response.status == 206 else "wb") as f:
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
    size = tmp.stat().st_size
    if total is not None and size != total:
        raise _Incomplete(f"connection closed after {size} of {total} bytes")


def _content_range(header: str) -> tuple[int | None, int | None]:
    """``(first byte, complete size)`` of a ``bytes first-last/size`` header; None for what is unknown."""
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if not match:
        return None, None
    return int(match[1]), None if match[2] == "*" else int(match[2])
