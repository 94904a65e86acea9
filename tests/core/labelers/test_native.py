"""sslib.native: C sources built at first use, cached by content, and None (never an error) when they cannot be."""

from __future__ import annotations

import logging
import shutil
import subprocess

import pytest

from sslib import native

ADD_C = "int add(int a, int b) { return a + b; }\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, and load()'s per-process memo cleared before and after."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(native.CACHE_ENV, str(folder))
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    native.load.cache_clear()
    yield folder
    native.load.cache_clear()


def source(tmp_path, text: str = ADD_C, name: str = "add.c"):
    path = tmp_path / name
    path.write_text(text)
    return path


def count_compiles(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    run = subprocess.run

    def recording_run(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return run(cmd, *args, **kwargs)

    monkeypatch.setattr(native.subprocess, "run", recording_run)
    return calls


def test_builds_once_then_loads_from_the_cache_and_rebuilds_when_the_source_changes(
    cache, tmp_path, monkeypatch
):
    calls = count_compiles(monkeypatch)
    src = source(tmp_path)
    lib = native.load(src)
    assert lib is not None and lib.add(2, 3) == 5
    assert len(calls) == 1 and "-O3" in calls[0]
    built = sorted(p.name for p in cache.iterdir())
    assert len(built) == 1 and built[0].startswith("add-") and built[0].endswith(".so")

    native.load.cache_clear()  # a new process: finds the library, compiles nothing
    assert native.load(src).add(4, 5) == 9 and len(calls) == 1

    src.write_text(ADD_C.replace("a + b", "a * b"))
    native.load.cache_clear()
    assert native.load(src).add(4, 5) == 20 and len(calls) == 2
    assert len(list(cache.iterdir())) == 2


def test_a_compiler_rejecting_the_fast_flags_gets_the_next_flag_set(cache, tmp_path, monkeypatch):
    gcc = shutil.which("cc") or shutil.which("gcc")
    fussy = tmp_path / "fussy-cc"
    fussy.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do [ "$a" = "-march=native" ] && { echo "error: -march=native unsupported" >&2; exit 1; }; done\n'
        f'exec {gcc} "$@"\n'
    )
    fussy.chmod(0o755)
    monkeypatch.setenv("CC", str(fussy))
    src = source(tmp_path)
    assert native.load(src).add(1, 1) == 2
    expected = native.library_path(src, [str(fussy)], native.FLAG_SETS[1])
    assert [p.name for p in cache.iterdir()] == [expected.name]


def test_turned_off_by_the_environment(cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    with caplog.at_level(logging.INFO, logger="sslib.native"):
        assert native.load(source(tmp_path)) is None
    assert "native kernels are off (SSLIB_NATIVE=0)" in caplog.text
    assert not cache.exists()


def test_a_missing_compiler_or_a_broken_source_gives_none_a_log_line_and_no_debris(
    cache, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="sslib.native"):
        assert native.load(source(tmp_path)) is None
    assert "could not build add.c" in caplog.text and "no-such-cc" in caplog.text

    monkeypatch.delenv("CC")
    native.load.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sslib.native"):
        assert native.load(source(tmp_path, "int broken(", "broken.c")) is None
    assert "could not build broken.c" in caplog.text and "error" in caplog.text
    assert list(cache.iterdir()) == []  # temporary outputs of failed builds are removed


def test_an_unwritable_cache_folder_falls_back_to_a_temporary_one(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(native.CACHE_ENV, str(blocker / "cache"))  # a folder inside a file: cannot exist
    monkeypatch.setattr(native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    native.load.cache_clear()
    with caplog.at_level(logging.INFO, logger="sslib.native"):
        assert native.load(source(tmp_path)).add(3, 4) == 7
    native.load.cache_clear()
    assert "is not writable" in caplog.text
    assert [p.name.split("-")[0] for p in (tmp_path / "tmp").glob("sslib-native-*/*.so")] == ["add"]


def test_the_cache_key_separates_compilers_and_flags(tmp_path):
    src = source(tmp_path)
    paths = {
        native.library_path(src, ["gcc"], native.FLAG_SETS[0]),
        native.library_path(src, ["clang"], native.FLAG_SETS[0]),
        native.library_path(src, ["gcc"], native.FLAG_SETS[2]),
    }
    assert len(paths) == 3


def test_compiler_is_cc_split_like_a_shell_else_found_on_path(cache, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CC", "ccache gcc -m64")
    assert native.compiler() == ["ccache", "gcc", "-m64"]
    monkeypatch.delenv("CC")
    assert native.compiler() is not None  # this machine has one (the native-path tests need it)
    monkeypatch.setenv("PATH", str(tmp_path))  # none on PATH
    assert native.compiler() is None
    with caplog.at_level(logging.INFO, logger="sslib.native"):
        assert native.load(source(tmp_path)) is None
    assert "no C compiler found (set CC)" in caplog.text
