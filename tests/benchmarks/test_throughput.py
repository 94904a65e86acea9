"""benchmarks/throughput.py at a tiny size: its rows (sslib per loader, the lightly peer), ratios and verdicts."""

from __future__ import annotations

import pytest

from tests.helpers import load

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--recipes", "cifar", "--batch-size", "4", "--cifar-images", "40", "--workers", "0"]
TINY += ["--steps", "1", "--rounds", "2", "--warmup", "0"]


@pytest.fixture(scope="module")
def bench():
    return load("benchmarks/throughput.py")


def rows(text: str) -> dict[str, list[str]]:
    """``{loader: cells}`` of the table's rows."""
    table = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| cifar")
    ]
    return {cells[2]: cells for cells in table}


def test_rows_per_loader_and_the_peer_with_ratios_to_the_torchvision_row(bench, capsys):
    pytest.importorskip("lightly", reason="the peer row needs the bench extra")
    assert bench.main([*TINY, "--methods", "swav", "--no-fail"]) == 0
    out = capsys.readouterr().out
    table = rows(out)
    assert "| recipe | method | loader | images/s | x torchvision | step ms | labeler share |" in out
    assert table["torchvision"][4] == "1.00"  # the reference row
    assert "not available: DALI reads image folders" in table["dali"][3]
    [peer] = [name for name in table if name.startswith("lightly ") and "step only" not in name]
    for name in ("torchvision", "device", peer):
        images_s, ratio, step_ms, share = (table[name][i] for i in (3, 4, 5, 6))
        assert float(images_s) > 0 and float(ratio) > 0 and float(step_ms) > 0
        assert 0 <= float(share.rstrip("%")) < 100  # sslib's Sinkhorn, lightly's sinkhorn: both timed
    per_crop = "torchvision, per-crop forward"  # lightly's one backbone pass per crop, in sslib
    for name in ("torchvision, step only", f"{per_crop}, step only", f"{peer}, step only"):
        assert float(table[name][3]) > 0 and table[name][6].endswith("%")  # the step on one kept batch
    assert float(table[per_crop][3]) > 0
    verdicts = [line[5:] for line in out.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert [v.split(" 1.")[0].split(" 0.")[0] for v in verdicts] == [
        "cifar swav: sslib's whole loop",
        "cifar swav: sslib's step",
    ]
    assert all(f"as fast as {peer}'s (target >= 1x)" in v for v in verdicts)


def test_a_failing_peer_verdict_sets_the_exit_status(bench, monkeypatch, capsys):
    pytest.importorskip("lightly", reason="the peer row needs the bench extra")
    monkeypatch.setattr(bench, "PEER_MIN_RATIO", float("inf"))
    args = [*TINY, "--methods", "dino", "--loaders", "torchvision", "--rounds", "1"]
    assert bench.main(args) == 1
    assert bench.main([*args, "--no-fail"]) == 0
    out = capsys.readouterr().out
    assert out.count("FAIL cifar dino: sslib's whole loop") == out.count("FAIL cifar dino: sslib's step") == 2
    assert rows(out)[next(n for n in rows(out) if n.startswith("lightly "))][6] == ""  # not timed apart


def test_a_loader_this_version_lacks_is_a_row_saying_so(bench, monkeypatch):
    monkeypatch.setattr(bench, "LOADERS", ("auto", "torchvision"))
    assert bench.unavailable("device", "cifar", None) == "data.loader=device is not in this version of sslib"
    assert bench.unavailable("torchvision", "cifar", None) is None


def test_verdicts_cover_the_on_device_speed_up_and_on_cuda_the_labeler_share(bench):
    import torch

    rows_ = [
        {"loader": "torchvision", "images_s": 100.0, "x_tv": 1.0, "labeler_share": 0.01},
        {"loader": "device", "images_s": 150.0, "x_tv": 1.5, "labeler_share": 0.05},
    ]
    verdicts = bench.verdicts_of("cifar", "mira", rows_, torch.device("cuda"))
    assert [(v.subject, v.passed) for v in verdicts] == [
        ("cifar mira: on-device loader", False),  # 1.5x < 2x
        ("cifar mira torchvision: labeler", True),  # 1% < 3%
        ("cifar mira device: labeler", False),  # 5%
    ]
    on_cpu = bench.verdicts_of("cifar", "mira", rows_, torch.device("cpu"))
    assert [(v.subject, v.passed) for v in on_cpu] == [("cifar mira: on-device loader", True)]  # >= 1x
    rows_[1]["x_tv"] = 0.9
    [slower] = bench.verdicts_of("cifar", "mira", rows_, torch.device("cpu"))
    assert not slower.passed
