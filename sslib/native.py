"""Compile a C source shipped with sslib into a shared library at first use, and cache it on disk.

Used for small fused CPU kernels (see ``sslib/labelers/mira_kernels.c``). Nothing here is required:
:func:`load` returns ``None`` when there is no C compiler, when compiling fails, or when
``SSLIB_NATIVE=0``, and callers then use their torch code path. The library is built with
``$CC`` (else ``cc``, ``gcc`` or ``clang``) with the first of ``-O3 -march=native -fopenmp``,
``-O3 -fopenmp`` and ``-O3`` that works (so without OpenMP the kernels run on one thread) into
``$SSLIB_NATIVE_CACHE`` (default ``~/.cache/sslib/native``), named by a hash of the source, the
compiler, the flags and the CPU, and written atomically, so concurrent processes may share it (a
per-user temporary folder is used when the cache folder cannot be written).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

DISABLE_ENV = "SSLIB_NATIVE"
CACHE_ENV = "SSLIB_NATIVE_CACHE"
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-fopenmp"), ("-O3",))
COMMON_FLAGS = ("-std=c99", "-shared", "-fPIC")
COMPILE_TIMEOUT_S = 120

log = logging.getLogger(__name__)


def enabled() -> bool:
    """False when ``SSLIB_NATIVE=0`` (or ``false``/``off``/``no``) turns native kernels off."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in {"0", "false", "off", "no"}


def cache_dir() -> Path:
    """Where built libraries go, created if needed: ``$SSLIB_NATIVE_CACHE``, else
    ``$XDG_CACHE_HOME/sslib/native`` (``~/.cache/sslib/native``); a per-user folder in the system's
    temporary directory when that one cannot be written (a read-only home, say)."""
    if os.environ.get(CACHE_ENV):
        preferred = Path(os.environ[CACHE_ENV])
    else:
        preferred = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sslib" / "native"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    user = os.getuid() if hasattr(os, "getuid") else "user"
    fallback = Path(tempfile.gettempdir()) / f"sslib-native-{user}"
    fallback.mkdir(parents=True, exist_ok=True)
    log.info("%s is not writable: building native kernels in %s", preferred, fallback)
    return fallback


def compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` split like a shell would, else the first of cc, gcc, clang."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)
    return [found] if found else None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU's feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.system()}-{platform.machine()}-{flags}"


def library_path(source: Path, cc: list[str], flags: tuple[str, ...]) -> Path:
    """The cache path of ``source`` built by ``cc`` with ``flags`` on this CPU."""
    key = hashlib.sha256(
        b"\0".join([source.read_bytes(), " ".join(cc + list(flags)).encode(), _cpu_signature().encode()])
    ).hexdigest()[:16]
    return cache_dir() / f"{source.stem}-{key}.so"


def _build(source: Path, cc: list[str], flags: tuple[str, ...], target: Path) -> None:
    """Compile ``source`` to ``target`` atomically (a temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [*cc, *flags, *COMMON_FLAGS, "-o", tmp, str(source), "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def load(source: Path) -> ctypes.CDLL | None:
    """The shared library built from the C file ``source``, or ``None`` where it cannot be had.

    The first call per process builds (about a second) or finds the cached library; the reason for
    a ``None`` is logged once.
    """
    if not enabled():
        log.info("native kernels are off (%s=0): %s uses its torch code path", DISABLE_ENV, source.name)
        return None
    cc = compiler()
    if cc is None:
        log.info("no C compiler found (set CC): %s uses its torch code path", source.name)
        return None
    error = ""
    for flags in FLAG_SETS:
        target = library_path(source, cc, flags)
        try:
            if not target.exists():
                _build(source, cc, flags, target)
            return ctypes.CDLL(str(target))
        except subprocess.CalledProcessError as exc:
            lines = exc.stderr.decode(errors="replace").strip().splitlines()
            error = lines[0] if lines else f"exit status {exc.returncode}"
        except (OSError, subprocess.SubprocessError) as exc:
            error = str(exc)
    log.warning("could not build %s with %s (%s): using the torch code path", source.name, cc[0], error)
    return None
