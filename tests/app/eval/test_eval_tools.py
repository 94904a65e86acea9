"""Offline evaluation tools: feature cache, label-fraction kNN, linear probe, UMAP, and their scripts."""

from __future__ import annotations

import importlib.util
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import Subset

from sslib import backbones
from sslib.app.eval.cli import finetune_main, knn_main, linear_main, transfer_main, umap_main
from sslib.app.eval.offline import (
    FeatureCache,
    ProbeSettings,
    cached_features,
    knn_eval,
    linear_eval,
    linear_eval_augmented,
    stratified_subset,
)
from sslib.data import DigitsDataset
from tests.helpers import ROOT

SIZE = "8"  # digits at 8x8: a ResNet-18 pass over all 1797 images takes a few seconds on CPU


def save_checkpoint(path: Path, drop_key: str | None = None, data: dict | None = None) -> Path:
    """A tiny sslib training checkpoint (resnet18, CIFAR stem, random weights), without training; its run
    config's ``data`` block is ``data`` (default: the digits at 32 px)."""
    torch.manual_seed(0)
    backbone, _ = backbones.build("resnet18", cifar=True)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items() if k != drop_key}
    cfg = {
        "backbone": {"name": "resnet18", "cifar": "auto", "zero_init_residual": False},
        "data": data or {"name": "digits", "global_crops": {"size": 32}},
        "method": {"name": "mira"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": cfg, "num_classes": 10}}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """One checkpoint for the module, so its features are extracted once and then read from the cache."""
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.ckpt")


def printed(out: str) -> tuple[str, list[str]]:
    """A tool's output: the line naming the dataset, root and image size, and the lines below it."""
    head, blank, *rest = out.strip().splitlines()
    assert blank == ""
    return head, rest


def clusters(n_per_class: int, num_classes: int = 4, dim: int = 16, seed: int = 0):
    """Well separated Gaussian clusters: features ``(n, dim)`` and labels ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=g), labels


# --- feature cache ---------------------------------------------------------------------------------------


def test_features_are_cached_next_to_the_checkpoint(ckpt, count_extractions):
    features, labels = cached_features(ckpt, "digits", "val", image_size=8, device="cpu")
    assert features.shape == (360, 512) and features.dtype == torch.float32 and labels.shape == (360,)
    again, again_labels = cached_features(ckpt, "digits", "val", image_size=8, device="cpu")
    assert len(count_extractions) == 1  # the second call read the file
    assert torch.equal(again, features) and torch.equal(again_labels, labels)
    path = FeatureCache(ckpt, "digits", image_size=8).path("val")
    assert path.parent == ckpt.parent / "last.ckpt.features" and path.is_file()
    assert FeatureCache(ckpt, "digits", image_size=16).path("val") != path  # keyed by the image size


def test_a_changed_checkpoint_is_extracted_again(tmp_path, count_extractions, monkeypatch):
    path = save_checkpoint(tmp_path / "a.ckpt")
    monkeypatch.setattr(FeatureCache, "build", lambda self, split, transform: _two_digits(transform))
    cached_features(path, "digits", "val", image_size=8, device="cpu")
    with path.open("ab") as f:  # any change of the file changes its sha256
        f.write(b"\0")
    cache = FeatureCache(path, "digits", image_size=8, device="cpu")
    cache.features("val")
    assert len(count_extractions) == 2 and len(list(cache.path("val").parent.iterdir())) == 2


def _two_digits(transform) -> Subset:
    """The first two digits of the val split: a dataset small enough for a few backbone passes."""
    return Subset(DigitsDataset("val", transform=transform), [0, 1])


# --- kNN on label fractions ------------------------------------------------------------------------------


def test_subsets_are_stratified_reproducible_and_nested():
    labels = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))  # class c has 10 (c + 1) samples
    ten = stratified_subset(labels, 0.1, seed=3)
    assert torch.equal(ten, stratified_subset(labels, 0.1, seed=3))
    assert not torch.equal(ten, stratified_subset(labels, 0.1, seed=4))
    assert torch.equal(labels[ten].bincount(), torch.arange(1, 11))  # 10% of every class
    assert torch.equal(labels[stratified_subset(labels, 0.01)].bincount(), torch.ones(10, dtype=torch.long))
    assert set(stratified_subset(labels, 0.05, seed=3).tolist()) <= set(ten.tolist())
    assert torch.equal(stratified_subset(labels, 1.0), torch.arange(len(labels)))


def test_knn_k1_matches_sklearn_cosine():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 16, generator=g), torch.randn(100, 16, generator=g)
    train_labels, test_labels = (
        torch.randint(0, 5, (300,), generator=g),
        torch.randint(0, 5, (100,), generator=g),
    )
    results = knn_eval(train, train_labels, test, test_labels, k=1, fractions=(1.0, 0.1), seed=0)
    for fraction, acc in results.items():
        idx = stratified_subset(train_labels, fraction, seed=0)
        sk = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(
            train[idx].numpy(), train_labels[idx].numpy()
        )
        expected = 100.0 * (torch.from_numpy(sk.predict(test.numpy())) == test_labels).float().mean().item()
        assert acc["top1"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, True])
def test_bad_fractions_are_one_line_errors(fraction):
    features, labels = clusters(5)
    with pytest.raises(ValueError, match=r"^label fraction must be in \(0, 1\], got .*$"):
        knn_eval(features, labels, features, labels, fractions=(1.0, fraction))


# --- linear probe ----------------------------------------------------------------------------------------


def test_linear_probe_separates_separable_features():
    train, train_labels = clusters(50, seed=0)
    val, val_labels = clusters(20, seed=0)
    settings = ProbeSettings(epochs=20, lr=0.1, batch_size=32)
    acc = linear_eval(train, train_labels, val, val_labels, settings, device="cpu")
    assert acc["top1"] > 90 and acc["top5"] == 100
    assert acc == linear_eval(train, train_labels, val, val_labels, settings, device="cpu")  # seeded


def test_probe_settings_are_checked():
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        ProbeSettings(epochs=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        ProbeSettings(weight_decay=-1.0)


def test_augmented_probe_feeds_fresh_crops_through_the_frozen_backbone(tmp_path, monkeypatch):
    """Each step passes newly augmented train images through the backbone in eval mode without gradients;
    the backbone (weights and BatchNorm statistics) is unchanged and the seeded result repeats."""
    cache = FeatureCache(save_checkpoint(tmp_path / "a.ckpt"), "digits", image_size=8, device="cpu")
    monkeypatch.setattr(FeatureCache, "build", lambda self, split, transform: _two_digits(transform))
    cache.features("val")  # cached now, so the calls below are the probe's training steps only
    backbone = cache.backbone
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    calls = []
    backbone.register_forward_hook(
        lambda module, args, out: calls.append((args[0].clone(), module.training, torch.is_grad_enabled()))
    )
    settings = ProbeSettings(epochs=2, batch_size=2)
    acc = linear_eval_augmented(cache, settings)
    assert [(tuple(x.shape), training, grad) for x, training, grad in calls] == [
        ((2, 3, 8, 8), False, False)
    ] * 2
    assert not torch.equal(calls[0][0], calls[1][0])  # epoch 2 draws other crops of the same two images
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())
    assert all(p.grad is None for p in backbone.parameters())
    assert set(acc) == {"top1", "top5"} and acc["top1"] in (0.0, 50.0, 100.0)  # 2 val images
    assert linear_eval_augmented(cache, settings) == acc


# --- scripts ---------------------------------------------------------------------------------------------


def run_script(name: str, args: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [f"scripts/{name}.py", *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / f"{name}.py"), run_name="__main__")
    assert done.value.code == 0


def test_knn_and_linear_scripts_on_digits(ckpt, monkeypatch, capsys):
    common = ["--ckpt", str(ckpt), "--data", "digits", "--image-size", SIZE, "--device", "cpu"]
    run_script(
        "knn", [*common, "--k", "20", "--temperature", "0.07", "--fractions", "1,0.1,0.01"], monkeypatch
    )
    head, table = printed(capsys.readouterr().out)
    assert head == "data: digits (given), root: data (default), image size: 8 (given)"
    assert table[:2] == ["| labels | k | T | top-1 | top-5 |", "| --- | --- | --- | --- | --- |"]
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 100%", "| 10%", "| 1%"]
    top1 = float(table[2].split(" | ")[3])
    assert top1 > 30  # random ResNet features of digits still cluster (chance is 10%)

    run_script("linear", [*common, "--epochs", "5"], monkeypatch)  # reads the features cached by knn
    table = printed(capsys.readouterr().out)[1]
    assert table[0] == "| linear probe | epochs | top-1 | top-5 |"
    assert re.fullmatch(r"\| frozen features \| 5 \| \d+\.\d\d \| \d+\.\d\d \|", table[2])


def test_umap_script_saves_a_png(ckpt, tmp_path, monkeypatch, capsys):
    pytest.importorskip("umap")
    out = tmp_path / "umap.png"
    run_script(
        "umap", ["--ckpt", str(ckpt), "--image-size", SIZE, "--device", "cpu", "--out", str(out)], monkeypatch
    )
    assert printed(capsys.readouterr().out)[1] == [str(out)]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def legend(figure: Figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_umap_plot_with_a_stand_in_reducer(ckpt, tmp_path, figures, capsys):
    out = tmp_path / "plots" / "val.png"
    assert umap_main(["--ckpt", str(ckpt), "--image-size", SIZE, "--device", "cpu", "--out", str(out)]) == 0
    assert printed(capsys.readouterr().out)[1] == [str(out)]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert legend(figures[0]) == [str(digit) for digit in range(10)]  # the class names, as plain text


def test_missing_umap_is_one_line(ckpt, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap raises ImportError
    assert umap_main(["--ckpt", str(ckpt)]) == 2
    assert capsys.readouterr().err == "error: UMAP needs umap-learn: pip install 'sslib-vision[umap]'\n"


def test_umap_script_does_not_shadow_the_umap_package(tmp_path, monkeypatch, capsys):
    installed = importlib.util.find_spec("umap") is not None
    # `python scripts/umap.py` puts scripts/ first on sys.path, where `import umap` would find the script.
    monkeypatch.setattr(sys, "path", [str(ROOT / "scripts"), *sys.path])
    monkeypatch.delitem(sys.modules, "umap", raising=False)
    monkeypatch.setattr(sys, "argv", ["scripts/umap.py", "--ckpt", str(tmp_path / "missing.ckpt")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "umap.py"), run_name="__main__")
    missing = f"checkpoint '{tmp_path / 'missing.ckpt'}' does not exist"
    expected = missing if installed else "UMAP needs umap-learn: pip install 'sslib-vision[umap]'"
    assert (done.value.code, capsys.readouterr().err) == (2, f"error: {expected}\n")


@pytest.mark.parametrize(
    ("main", "extra", "message"),
    [
        (knn_main, [], "checkpoint '{missing}' does not exist"),
        (knn_main, ["--fractions", "1,0"], "label fraction must be in (0, 1], got 0.0"),
        (
            knn_main,
            ["--fractions", "1,ten"],
            "--fractions must be comma-separated numbers in (0, 1], got '1,ten'",
        ),
        (knn_main, ["--data", "mnist"], "unknown dataset 'mnist'; available: "),
        (linear_main, ["--epochs", "0"], "epochs must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(main, extra, message, ckpt, tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    target = missing if "missing" in message else ckpt
    assert main(["--ckpt", str(target), "--image-size", SIZE, *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: " + message.format(missing=missing))


def test_mismatched_checkpoint_is_one_line_exit_2(tmp_path, capsys):
    bad = save_checkpoint(tmp_path / "bad.ckpt", drop_key="conv1.weight")
    assert knn_main(["--ckpt", str(bad), "--image-size", SIZE, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not match backbone resnet18: 1 missing keys" in err


@pytest.mark.parametrize(
    ("main", "extra", "message"),
    [
        (knn_main, ["--k", "0"], "--k must be an integer >= 1, got 0"),
        (knn_main, ["--k", "-3"], "--k must be an integer >= 1, got -3"),
        (knn_main, ["--temperature", "0"], "--temperature must be a finite number > 0, got 0.0"),
        (knn_main, ["--temperature", "nan"], "--temperature must be a finite number > 0, got nan"),
        (knn_main, ["--device", "tpu9"], "device must be a torch device such as cpu or cuda:0, got 'tpu9'"),
        (knn_main, ["--image-size", "0"], "image_size must be an integer >= 1, got 0"),
        (knn_main, ["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
        (linear_main, ["--lr", "0"], "lr must be a finite number > 0, got 0.0"),
        (umap_main, ["--n-neighbors", "1"], "--n-neighbors must be an integer >= 2, got 1"),
        (umap_main, ["--min-dist", "-0.5"], "--min-dist must be in [0, 1], got -0.5"),
        (umap_main, ["--split", "test"], "split must be one of train, val, got 'test'"),
        (
            finetune_main,
            ["--fractions", "0.01,0.1", "--epochs", "0"],
            "epochs must be an integer >= 1, got 0",
        ),
        (finetune_main, ["--protocol", "byol"], "protocol must be one of swav, simclr, got 'byol'"),
        (
            transfer_main,
            ["--data", "cifar10:data", "--num-c", "0"],
            "the C grid needs at least 1 value, got 0",
        ),
        (
            transfer_main,
            ["--data", "cifar10:data", "--max-iter", "0"],
            "--max-iter must be an integer >= 1, got 0",
        ),
    ],
)
def test_bad_arguments_are_refused_before_any_work(main, extra, message, ckpt, no_work, capsys):
    assert main(["--ckpt", str(ckpt), *extra]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
