"""Fast checks of scripts/convergence.py (Figure 2) and benchmarks/labelers.py at tiny sizes."""

from __future__ import annotations

from types import ModuleType

import pytest
import torch

from sslib.labelers.mira import mira_targets
from sslib.labelers.sinkhorn import sinkhorn_targets
from tests.helpers import load


@pytest.fixture(scope="module")
def convergence() -> ModuleType:
    return load("scripts/convergence.py")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load("benchmarks/labelers.py")


def test_sse_curves_are_finite_and_mira_converges(convergence):
    curves = convergence.sse_curves(
        batch=64, n_clusters=50, n_classes=10, dim=16, n_batches=2, ref_iters=200, n_iters=30
    )
    assert set(curves) == {"MIRA", "Sinkhorn-Knopp"}
    for sse in curves.values():
        assert sse.shape == (30,)
        assert torch.isfinite(sse).all() and (sse >= 0).all()
        assert sse[-1] < sse[0]
    mira = curves["MIRA"]
    assert mira[-1] < 1e-6 * mira[0]
    assert (mira[1:10] <= mira[:9] * 1.01).all()  # decreasing until it reaches float32 rounding


def test_sinkhorn_reference_is_sslibs_sinkhorn(convergence):
    g = torch.Generator().manual_seed(0)
    logits = torch.rand(16, 24, generator=g, dtype=torch.float64) * 2 - 1
    for n_iters in (1, 5):
        ref = convergence.sinkhorn_reference(logits, 0.05, n_iters)
        torch.testing.assert_close(ref, sinkhorn_targets(logits, 0.05, n_iters), rtol=1e-9, atol=1e-12)


def test_convergence_main_writes_the_png_and_table(convergence, tmp_path, capsys):
    out = tmp_path / "img" / "x.png"
    args = ["--batch", "32", "--clusters", "20", "--classes", "5", "--dim", "8", "--batches", "1"]
    convergence.main([*args, "--ref-iters", "50", "--iters", "12", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "| method | SSE n=1 | SSE n=3 | SSE n=10 |" in text
    assert "| MIRA |" in text and "| Sinkhorn-Knopp |" in text


def test_naive_mira_is_the_same_computation(bench):
    logits = bench.cosine_logits(32, 50, torch.device("cpu"))
    torch.testing.assert_close(
        bench.naive_mira(logits), mira_targets(logits, bench.TAU, bench.BETA, bench.N_ITERS)
    )


def test_benchmark_main_prints_the_table(bench, capsys):
    bench.main(["--shapes", "32x50", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    header = "| shape (B x K) | labeler | median ms | x bare loop | mira speed-up over naive | page faults per call | NaN in output |"
    assert header in lines
    rows = [line for line in lines if line.startswith("| 32x50 |")]
    names = ["bare loop", "mira", "sinkhorn", "dino", "naive MIRA"]  # on CUDA also "mira (torch path)"
    assert [row.split(" | ")[1] for row in rows] == names
    assert sum(line.startswith(("PASS 32x50", "FAIL 32x50")) for line in lines) == 2


def test_benchmark_rejects_bad_shapes(bench):
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "32by50"])
