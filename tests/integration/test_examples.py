"""The scripts under examples/ run as a user would run them."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import torch

from sslib import backbones
from tests.helpers import ROOT
from tests.helpers.isolation import WITHOUT_FRAMEWORKS

EXAMPLES = ROOT / "examples"
STEP_LINE = re.compile(r"step (\d+): loss (\S+), I\(Y;B\) (\S+) nats, (\d+)/(\d+) clusters used")

# Runs the example as __main__ where Lightning, Hydra and OmegaConf cannot be imported.
RUN_WITHOUT_FRAMEWORKS = (
    WITHOUT_FRAMEWORKS
    + """
import runpy
sys.argv = sys.argv[1:]  # the example sees its own path and options
runpy.run_path(sys.argv[0], run_name="__main__")
"""
)


def test_plain_loop_trains_mira_and_saves_a_loadable_backbone(tmp_path):
    steps, out = 3, tmp_path / "backbone.pt"
    result = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_FRAMEWORKS, str(EXAMPLES / "plain_loop.py"),
         "--steps", str(steps), "--batch-size", "16", "--out", str(out)],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
    rows = [STEP_LINE.fullmatch(line) for line in result.stdout.splitlines() if line.startswith("step ")]
    assert all(rows) and [int(r[1]) for r in rows] == list(range(steps))
    for row in rows:
        loss, mi, used, n_clusters = float(row[2]), float(row[3]), int(row[4]), int(row[5])
        assert math.isfinite(loss) and loss > 0
        assert 0 <= mi <= math.log(n_clusters) and 1 <= used <= n_clusters
    backbone, _ = backbones.build("resnet18", cifar=True)
    state = torch.load(out, weights_only=True)
    backbone.load_state_dict(state)  # strict: exactly the backbone's keys
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert state["bn1.running_mean"].abs().sum() > 0  # trained: BatchNorm saw the crops
