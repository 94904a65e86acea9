"""benchmarks/gpu_check.sh: within its 8-minute budget, and refusing cleanly without CUDA."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
BUDGET_S = 8 * 60


def test_the_checks_time_limits_fit_in_eight_minutes():
    text = SCRIPT.read_text()
    limits = [int(s) for s in re.findall(r'^\s*check "[^"]+" (\d+) \d+', text, flags=re.M)]
    assert len(limits) >= 7  # tests, labelers, DALI, on-device crops, throughput, three pretrain loops
    in_loop = re.search(r"for loader in ([\w ]+); do", text).group(1).split()
    total = sum(limits) + (len(in_loop) - 1) * limits[-2]  # the loop's check runs once per loader
    assert total <= BUDGET_S
    assert f"add up to {total} s" in text  # the header states the budget it was written for


@pytest.mark.skipif(torch.cuda.is_available(), reason="the script runs its checks where CUDA is present")
def test_without_cuda_it_says_so_and_fails(tmp_path):
    out = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "r.md")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1 and "no CUDA device" in out.stderr
    assert not (tmp_path / "r.md").exists()
