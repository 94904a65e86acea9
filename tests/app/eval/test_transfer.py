"""Transfer linear evaluation: metrics against float64 references, the logistic regression against
scikit-learn, C chosen on val and refitted on train + val, and the path from a folder of images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from torch import nn

from sslib.app.eval.transfer import (
    c_grid,
    fit_logistic,
    logistic_transfer,
    mean_per_class_accuracy,
    top1_accuracy,
    voc11_average_precision,
    voc11_map,
)
from sslib.app.eval.transfer_data import parse_source, transfer_eval, voc_multi_hot
from tests.app.eval.test_eval_tools import run_script, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def mean_per_class_reference(pred: np.ndarray, target: np.ndarray) -> float:
    recalls = []
    for c in np.unique(target):
        members = target == c
        recalls.append(np.sum(pred[members] == c) / np.sum(members))
    return 100.0 * float(np.mean(np.asarray(recalls, dtype=np.float64)))


def ap11_reference(scores: np.ndarray, positive: np.ndarray) -> float:
    """VOC2007's 11-point AP (devkit VOCevalcls.m), one operating point per distinct score threshold."""
    points = []
    for s in np.unique(scores):
        chosen = scores >= s
        tp = np.sum(positive.astype(bool) & chosen)
        points.append((tp / np.sum(chosen), tp / np.sum(positive)))
    precision, recall = np.array(points, dtype=np.float64).T
    return float(
        np.mean(
            [
                precision[recall >= t].max() if np.any(recall >= t) else 0.0
                for t in (k / 10 for k in range(11))
            ]
        )
    )


def test_mean_per_class_accuracy_weighs_every_class_equally():
    target = torch.tensor([0] * 90 + [1] * 10)
    pred = torch.zeros(100, dtype=torch.long)  # always the majority class
    assert top1_accuracy(pred, target) == pytest.approx(90.0)
    assert mean_per_class_accuracy(pred, target) == pytest.approx(50.0)
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randint(0, 7, (500,), generator=g), torch.randint(0, 7, (500,), generator=g)
    assert mean_per_class_accuracy(pred, target) == pytest.approx(
        mean_per_class_reference(pred.numpy(), target.numpy()), rel=1e-12
    )


def test_11_point_map_matches_the_reference_with_ties():
    g = torch.Generator().manual_seed(0)
    targets = torch.rand(200, 5, generator=g) < 0.3
    scores = targets.double() + torch.randn(200, 5, generator=g, dtype=torch.float64)
    scores[:50] = scores[:50].round()  # ties
    for c in range(5):
        assert voc11_average_precision(scores[:, c], targets[:, c]) == pytest.approx(
            ap11_reference(scores[:, c].numpy(), targets[:, c].numpy()), abs=1e-12
        )
    assert voc11_map(scores, targets) == pytest.approx(
        100 * np.mean([ap11_reference(scores[:, c].numpy(), targets[:, c].numpy()) for c in range(5)]),
        abs=1e-10,
    )
    perfect = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert voc11_average_precision(perfect, torch.tensor([1, 1, 0, 0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one positive"):
        voc11_average_precision(perfect, torch.zeros(4))


def blobs(n: int, num_classes: int = 4, dim: int = 12, noise: float = 2.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99))
    y = torch.arange(n) % num_classes
    return centres[y] + noise * torch.randn(n, dim, generator=g), y


def test_logistic_regression_is_scikit_learns_and_c_is_chosen_on_val_then_refit_on_train_val():
    train, val, test = blobs(120, seed=0), blobs(60, seed=1), blobs(200, seed=2)
    x, y = train
    model = fit_logistic(x, y, c=0.5)
    reference = LogisticRegression(C=0.5, solver="lbfgs", max_iter=1000).fit(x.double().numpy(), y.numpy())
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-6, atol=1e-8)

    cs = c_grid(7)
    result = logistic_transfer(train, val, test, "top1", cs)
    val_scores = {}
    for c in cs:
        clf = LogisticRegression(C=c, solver="lbfgs", max_iter=1000).fit(x.double().numpy(), y.numpy())
        val_scores[c] = 100 * clf.score(val[0].double().numpy(), val[1].numpy())
    assert result.val_scores == pytest.approx(val_scores)
    best = max(val_scores, key=val_scores.get)
    assert result.c == best and len(set(val_scores.values())) > 1  # the grid matters on these blobs
    refit = LogisticRegression(C=best, solver="lbfgs", max_iter=1000).fit(
        torch.cat([x, val[0]]).double().numpy(), torch.cat([y, val[1]]).numpy()
    )
    assert result.score == pytest.approx(100 * refit.score(test[0].double().numpy(), test[1].numpy()))


def test_map_metric_fits_one_binary_classifier_per_class():
    (x, y), (vx, vy), (tx, ty) = blobs(80, seed=0), blobs(40, seed=1), blobs(80, seed=2)
    hot = [nn.functional.one_hot(t, 4).float() for t in (y, vy, ty)]
    result = logistic_transfer((x, hot[0]), (vx, hot[1]), (tx, hot[2]), "map11", [1.0])
    scores = np.stack(
        [
            LogisticRegression(C=1.0, max_iter=1000)
            .fit(torch.cat([x, vx]).double().numpy(), torch.cat([hot[0], hot[1]])[:, k].numpy())
            .decision_function(tx.double().numpy())
            for k in range(4)
        ],
        axis=1,
    )
    expected = 100 * np.mean([ap11_reference(scores[:, k], hot[2][:, k].numpy()) for k in range(4)])
    assert result.score == pytest.approx(expected, abs=1e-6)


def test_bad_metric_grid_and_sources_are_one_line_errors():
    split = blobs(8)
    with pytest.raises(ValueError, match="metric must be one of top1, mean_per_class, map11, got 'top5'"):
        logistic_transfer(split, split, split, "top5")
    with pytest.raises(ValueError, match="non-empty and positive"):
        logistic_transfer(split, split, split, "top1", [0.0])
    with pytest.raises(ValueError, match="NAME:ROOT"):
        parse_source("cifar10")
    with pytest.raises(ValueError, match="unknown transfer dataset 'mnist'; available: aircraft"):
        parse_source("mnist:data")


def test_voc_annotation_becomes_multi_hot():
    annotation = {"annotation": {"object": [{"name": "dog"}, {"name": "person"}, {"name": "dog"}]}}
    hot = voc_multi_hot(annotation)
    assert hot.sum() == 2 and hot[11] == 1 and hot[14] == 1  # dog, person
    assert voc_multi_hot({"annotation": {"object": {"name": "cat"}}})[7] == 1  # a single object


COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def image_folder(root: Path, splits=("train", "test"), per_class: int = 10) -> Path:
    """Noisy 12 x 12 images whose mean colour is their class."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


MEAN_COLOUR = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 3) features


@pytest.mark.parametrize("splits", [("train", "test"), ("train", "val", "test")])
def test_transfer_on_a_folder_of_images(tmp_path, splits):
    root = image_folder(tmp_path / "colours", splits)
    result = transfer_eval(MEAN_COLOUR, "folder", root, image_size=12, device="cpu", cs=c_grid(5))
    assert result.metric == "top1" and result.score == pytest.approx(100.0)
    (root / "test" / "yellow").mkdir()
    with pytest.raises(ValueError, match="test and .*train have different classes: yellow"):
        transfer_eval(MEAN_COLOUR, "folder", root, image_size=12, device="cpu")


def test_transfer_script_on_a_checkpoint_and_a_folder(tmp_path, monkeypatch, capsys):
    ckpt = save_checkpoint(tmp_path / "run" / "last.ckpt")
    root = image_folder(tmp_path / "colours", per_class=6)
    args = [
        "--ckpt",
        str(ckpt),
        "--data",
        f"pets:{root}",
        "--image-size",
        "12",
        "--num-c",
        "3",
        "--device",
        "cpu",
    ]
    run_script("transfer", args, monkeypatch)
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0] == "| dataset | root | metric | C | score |"
    assert re.fullmatch(
        rf"\| pets \| {re.escape(str(root))} \| mean_per_class \| \S+ \| \d+\.\d\d \|", table[2]
    )
