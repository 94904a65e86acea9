"""Verified, atomic downloads into the checkpoint cache, with :mod:`pooch`.

pooch streams a file into a temporary file next to its final path, checks its SHA-256 and only then
moves it into place, so the final path never holds a partial or unverified file; a failed attempt is
retried, and a file already cached with the right hash is used without any network access.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch
import requests
import torch

from sslib.errors import SslibError

CACHE_ENV = "SSLIB_ZOO_CACHE"
ATTEMPTS = 3  # pooch waits 1 s, then 2 s, between them
_POOCH_GOT = re.compile(r"but got ([0-9a-f]{64})")  # the hash in pooch's mismatch message


class DownloadError(SslibError, RuntimeError):
    """A download that failed for good (after retries) or whose content did not verify."""


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The zoo's cache folder: ``cache_dir``, else ``$SSLIB_ZOO_CACHE``, else ``<torch hub dir>/checkpoints/sslib``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(torch.hub.get_dir()) / "checkpoints" / "sslib"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    return pooch.file_hash(str(path), alg="sha256")


def fetch(url: str, dest: Path, sha256: str | None) -> Path:
    """``dest``, downloaded from ``url`` unless it is there with hash ``sha256`` (any file when None).

    With ``sha256``, only a file with that hash lands at ``dest``; a progress bar is drawn on stderr
    when it is a terminal. Failures are one-line :class:`DownloadError` s and leave nothing behind.
    """
    files = pooch.create(
        path=dest.parent,
        base_url="",
        registry={dest.name: sha256},
        urls={dest.name: url},
        retry_if_failed=ATTEMPTS - 1,
    )
    try:
        files.fetch(dest.name, downloader=_downloader(url))
    except requests.RequestException as err:  # before ValueError: requests' InvalidURL is both
        response = err.response
        reason = (
            f"HTTP {response.status_code} {response.reason}"
            if response is not None
            else f"cannot connect ({err})"
            if isinstance(err, requests.ConnectionError)
            else str(err)
        )
        raise DownloadError(
            f"download of {url} failed after {ATTEMPTS} attempts: {reason}; if you are offline, "
            f"fetch the file elsewhere and save it as {dest}"
        ) from None
    except ValueError as err:  # pooch's hash check, after the last attempt
        got = _POOCH_GOT.search(str(err))
        raise DownloadError(
            f"sha256 mismatch for {url}: expected {sha256}, got {got[1] if got else 'another hash'}; "
            "the download was deleted"
        ) from None
    return dest


def _downloader(url: str) -> Callable[[str, str, object], None]:
    """pooch's downloader for ``url`` (HTTP, FTP, SFTP, DOI), or a copy for ``file://`` URLs."""
    if urlparse(url).scheme == "file":
        return _copy_local_file
    try:
        return pooch.downloaders.choose_downloader(url, progressbar=sys.stderr.isatty())
    except ValueError as err:  # a protocol pooch does not know
        raise DownloadError(f"cannot download {url}: {err}") from None


def _copy_local_file(url: str, output_file: str, _pooch: object) -> None:
    """A pooch downloader for ``file://`` URLs (what ``sslib export`` writes by default)."""
    shutil.copyfile(url2pathname(urlparse(url).path), output_file)
