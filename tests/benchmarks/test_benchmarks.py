"""The benchmarks' paired verdicts: per-round ratios, printed PASS/FAIL lines and the exit status."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from tests.helpers import ROOT, load

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def paired():
    return load("benchmarks/paired.py")


def test_rounds_rotate_the_cases_and_the_ratio_is_the_median_of_per_round_ratios(paired):
    calls, readings = [], {"candidate": iter([2.0, 6.0, 3.0]), "baseline": iter([1.0, 2.0, 3.0])}

    def measure(name: str):
        return lambda: calls.append(name) or next(readings[name])

    times = paired.run_rounds({"candidate": measure("candidate"), "baseline": measure("baseline")}, 3)
    assert calls == ["candidate", "baseline", "baseline", "candidate", "candidate", "baseline"]
    assert times == {"candidate": [2.0, 6.0, 3.0], "baseline": [1.0, 2.0, 3.0]}
    # per round 2, 3 and 1: median 2, where the ratio of the medians would be 3 / 2
    assert paired.paired_ratio(times["candidate"], times["baseline"]) == 2.0
    with pytest.raises(ValueError, match="equal, non-empty series, got 3 and 2 rounds"):
        paired.paired_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        paired.run_rounds({"a": lambda: 1.0}, 0)


def test_verdict_lines_and_exit_status(paired, capsys):
    slow = paired.Verdict("256x3000: mira", 1.6, "the bare loop's time", at_most=1.5, note="torch path 1.9x")
    fast = paired.Verdict("256x3000: mira", 3.25, "faster than naive MIRA", at_least=3.0)
    assert str(slow) == "FAIL 256x3000: mira 1.600x the bare loop's time (target <= 1.5x; torch path 1.9x)"
    assert str(fast) == "PASS 256x3000: mira 3.250x faster than naive MIRA (target >= 3x)"
    assert paired.report([fast]) == 0 and paired.report([fast, slow]) == 1
    assert paired.report([slow], no_fail=True) == 0
    printed = capsys.readouterr().out
    assert printed.count("1 of 2 verdicts FAIL") == 1 and "(--no-fail: exit status 0)" in printed
    with pytest.raises(ValueError, match="needs exactly one of at_most, at_least"):
        paired.Verdict("x", 1.0, "y", at_most=1.0, at_least=0.5)


def verdict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("PASS ", "FAIL "))]


# Each benchmark at a tiny size, with a target no timing can meet: the constant, and the arguments.
UNMEETABLE = {
    "labelers": ("MIRA_MAX_RATIO", 0.0, ["--shapes", "16x20", "--repeats", "2"]),
    "data": (
        "SSLIB_MIN_RATIO",
        math.inf,
        ["--presets", "cifar", "--cifar-images", "160", "--cifar-batch-size", "16", "--workers", "0"]
        + ["--warmup", "1", "--batches", "1", "--repeats", "2"],
    ),
    "memory_format": (
        "MIN_RATIO",
        math.inf,
        ["--device", "cpu", "--sizes", "16", "--batch", "2", "--rounds", "1", "--steps", "1"],
    ),
    "optimizer": ("MIN_RATIO", math.inf, ["--device", "cpu", "--steps", "1", "--rounds", "1"]),
    "train_step": (
        "STEP_MAX_RATIO",
        0.0,
        ["--device", "cpu", "--runs", "swav+default", "--batch-size", "2", "--steps", "2", "--warmup", "0"],
    ),
}


@pytest.mark.parametrize("name", sorted(UNMEETABLE))
def test_a_failing_verdict_is_printed_and_gives_exit_status_1(name, monkeypatch, capsys):
    bench = load(f"benchmarks/{name}.py")
    constant, target, args = UNMEETABLE[name]
    monkeypatch.setattr(bench, constant, target)
    assert bench.main(args) == 1
    lines = verdict_lines(capsys.readouterr().out)
    assert lines and lines[-1].startswith("FAIL ")
    assert bench.main([*args, "--no-fail"]) == 0
    assert any(line.startswith("FAIL ") for line in verdict_lines(capsys.readouterr().out))


def test_train_step_rows_show_the_method_against_its_backbone(capsys):
    bench = load("benchmarks/train_step.py")
    bench.main(
        ["--device", "cpu", "--runs", "barlow+default", "--batch-size", "2", "--steps", "2", "--warmup", "0"]
    )
    lines = capsys.readouterr().out.splitlines()
    header = "| method | labeler | step ms | images/s | views/s | backbone ms | x backbone | labeler ms | labeler share |"
    assert header in lines
    [row] = [line.strip("|").split(" | ") for line in lines if line.startswith("| barlow |")]
    backbone_ms, ratio = float(row[5]), float(row[6])
    assert backbone_ms > 0 and ratio > 0
    [line] = verdict_lines("\n".join(lines))
    assert line.startswith(
        "PASS barlow+-: step " if ratio <= bench.STEP_MAX_RATIO else "FAIL barlow+-: step "
    )


def test_the_script_exit_status_follows_its_verdicts():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "labelers.py"), "--shapes", "8x10", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = verdict_lines(out.stdout)
    assert len(lines) == 2, out.stderr[-2000:]
    assert out.returncode == (1 if any(line.startswith("FAIL ") for line in lines) else 0)


def test_labelers_compiled_row_and_its_one_code_path_verdict(monkeypatch, capsys):
    """``--compiled`` adds the torch.compile row and its verdict against the default (here the compiler is
    replaced by the identity: the row then times the torch path, and the wiring is what is tested)."""
    bench = load("benchmarks/labelers.py")
    compiled: list = []
    monkeypatch.setattr(bench.torch, "compile", lambda fn, **kw: compiled.append(kw) or fn)
    bench.main(["--shapes", "8x10", "--repeats", "1", "--compiled", "--no-fail"])
    out = capsys.readouterr().out
    assert compiled == [{"dynamic": False}]
    assert any(line.startswith("| 8x10 | mira (torch.compile) |") for line in out.splitlines())
    [line] = [v for v in verdict_lines(out) if "mira (torch.compile)" in v]
    assert "the default mira's time (target <= 1.25x" in line


def test_optimizer_rows_time_both_batchings_against_lightly(capsys):
    bench = load("benchmarks/optimizer.py")
    assert bench.main(["--device", "cpu", "--steps", "1", "--rounds", "2", "--no-fail"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.strip("|").split(" | ")[0].strip(): line.strip("|").split(" | ")[1:]
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| optimiser")
    }
    assert set(rows) == {"sslib, per tensor", "sslib, foreach", "torch SGD, foreach", "lightly"}
    assert all(float(ms) > 0 for ms, _ in rows.values())
    assert float(rows["lightly"][1]) == 1.0
    [line] = verdict_lines(out)
    assert "sslib, per tensor (the default on cpu)" in line


def test_memory_format_rows_name_the_layout_auto_takes(capsys):
    bench = load("benchmarks/memory_format.py")
    args = ["--device", "cpu", "--sizes", "16,32,96", "--batch", "2", "--large-batch", "1"]
    bench.main([*args, "--rounds", "1", "--steps", "1", "--no-fail"])
    out = capsys.readouterr().out
    rows = [
        line.strip("|").split(" | ")
        for line in out.splitlines()
        if line.startswith("| ") and "px" not in line
    ]
    assert [(r[0].strip(), r[1], r[-1].strip()) for r in rows] == [
        ("16", "CIFAR", "contiguous"),
        ("32", "CIFAR", "channels_last"),
        ("96", "ImageNet", "contiguous"),  # a 24 px stem output
    ]
    assert len(verdict_lines(out)) == 3
