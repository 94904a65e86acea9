"""Label-free monitors: RankMe, alignment and uniformity against float64 references; the monitor's buffer;
the values logged each epoch of pre-training and the dimensional-collapse warning."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from sslib.app import methods
from sslib.app.config import compose
from sslib.metrics.monitors import RepresentationMonitor, alignment, rankme, uniformity
from tests.app.methods.test_methods import TINY, fit, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def rankme_reference(z: np.ndarray, eps: float = 1e-7) -> float:
    s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
    p = s / np.abs(s).sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def unit(z: np.ndarray) -> np.ndarray:
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_rankme_matches_the_float64_reference_and_its_bounds():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 16, generator=g) * torch.linspace(0.1, 3, 16)  # anisotropic, full rank
    assert rankme(z) == pytest.approx(rankme_reference(z.numpy()), rel=1e-4)
    assert 15.0 < rankme(torch.randn(4000, 16, generator=g)) <= 16.0  # isotropic: nearly full rank
    collapsed = torch.randn(300, 1, generator=g) @ torch.randn(1, 16, generator=g)  # one direction
    assert rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
    two = torch.randn(300, 2, generator=g) @ torch.randn(2, 16, generator=g)
    assert 1.0 < rankme(two) <= 2.0 + 1e-4


def test_alignment_and_uniformity_match_float64_loops():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(40, 8, generator=g)
    z2 = z1 + 0.3 * torch.randn(40, 8, generator=g)
    a, b = unit(z1.double().numpy()), unit(z2.double().numpy())
    assert alignment(z1, z2) == pytest.approx(
        np.mean([np.sum((x - y) ** 2) for x, y in zip(a, b, strict=True)]), rel=1e-5
    )
    pairs = [np.exp(-2 * np.sum((a[i] - a[j]) ** 2)) for i, j in itertools.combinations(range(40), 2)]
    assert uniformity(z1) == pytest.approx(math.log(np.mean(pairs)), rel=1e-5)
    assert alignment(z1, z1) == pytest.approx(0.0, abs=1e-6)
    assert uniformity(z1[:1].repeat(5, 1)) == pytest.approx(0.0, abs=1e-6)  # all at one point
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        uniformity(z1[:1])


def test_monitor_keeps_the_last_rows_of_the_epoch_and_clears():
    monitor = RepresentationMonitor(samples=10)
    batches = [torch.full((4, 3), float(i)) + torch.randn(4, 3) for i in range(5)]
    for batch in batches:
        monitor.add(batch, (batch, batch + 1))
    kept = torch.cat(monitor._rows["features"])
    assert len(kept) == 12 and torch.equal(kept[-10:], torch.cat(batches)[-10:])  # whole batches, >= 10 rows
    out = monitor.compute()
    assert out["rankme"] == pytest.approx(rankme(torch.cat(batches)[-10:]), rel=1e-5)
    assert out["alignment"] == pytest.approx(
        alignment(torch.cat(batches)[-10:], torch.cat(batches)[-10:] + 1)
    )
    assert monitor.compute() == {}  # cleared
    off = RepresentationMonitor(samples=0)
    off.add(batches[0])
    assert off.compute() == {}
    with pytest.raises(ValueError, match="integer >= 0, got -1"):
        RepresentationMonitor(samples=-1)


@pytest.mark.parametrize("method", ["mira", "deepclusterv2", "byol", "simclr"])
def test_pretraining_logs_the_monitors_each_epoch_and_warns_on_rank_collapse(tmp_path, method):
    settings = [
        f"method={method}",
        "online_eval.monitor_samples=16",
        "online_eval.rank_collapse_threshold=1.0",
    ]
    if method in ("byol", "simclr"):  # no prototypes; BYOL's predictor ends at the projector's size
        tiny = [o for o in TINY if not o.startswith("method.num_prototypes")]
        heads = ["method.predictor_dims=[32,16]"] if method == "byol" else []
        cfg = compose([*tiny, f"run_dir={tmp_path}", *settings, *heads])
    else:
        cfg = tiny_cfg(tmp_path, *settings)
    model, trainer, dm = fit(cfg, steps=3, limit_train_batches=3)
    added = []
    add = model.representation.add
    model.representation.add = lambda f, v=None: (added.append((f.shape, v is not None)), add(f, v))[1]
    with pytest.warns(
        UserWarning, match=r"possible dimensional collapse at epoch 0: RankMe \d+\.\d of at most 16"
    ):
        trainer.fit(model, dm)
    assert added == [(torch.Size([8, model.feat_dim]), True)] * 3  # the step's features and two views
    logged = trainer.callback_metrics
    assert {"monitor/rankme", "monitor/alignment", "monitor/uniformity"} <= set(logged)
    assert 1.0 <= float(logged["monitor/rankme"]) <= 16.0
    assert -4.0 <= float(logged["monitor/uniformity"]) <= 0.0
    assert model.monitor_views is None  # no step's graph kept alive


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("online_eval.monitor_samples=-1", "online_eval.monitor_samples must be an integer >= 0, got -1"),
        (
            "online_eval.rank_collapse_threshold=1.5",
            r"online_eval.rank_collapse_threshold must be in \[0, 1\], got 1.5",
        ),
    ],
)
def test_bad_monitor_settings_are_one_line_errors(tmp_path, override, match):
    with pytest.raises(ValueError, match=f"^{match}$"):
        methods.build(tiny_cfg(tmp_path, override), num_classes=10, n_global=2)
