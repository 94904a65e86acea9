"""benchmarks/crop_forward.py at a tiny size: its table, its verdicts and their exit status."""

from __future__ import annotations

import pytest

from tests.helpers import load

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench():
    return load("benchmarks/crop_forward.py")


TINY = ["--batch", "2", "--shapes", "2x8,1x8+2x4", "--rounds", "1"]


def test_table_has_a_row_per_crop_set_and_a_verdict_each(bench, capsys):
    assert bench.main([*TINY, "--max-overhead", "1000"]) == 0
    out = capsys.readouterr().out
    assert "| 2x8 |" in out and "| 1x8+2x4 |" in out
    assert out.count("PASS per_crop on") == 2


def test_an_unmet_target_fails_the_run_unless_exploring(bench, capsys):
    assert bench.main([*TINY, "--max-overhead", "1e-9"]) == 1
    assert "2 of 2 verdicts FAIL" in capsys.readouterr().out
    assert bench.main([*TINY, "--max-overhead", "1e-9", "--no-fail"]) == 0


def test_bad_shapes_are_one_line_errors(bench):
    with pytest.raises(SystemExit, match=r"--shapes must look like 2x32\+6x16, got '2by32'"):
        bench.parse_shapes("2by32")
