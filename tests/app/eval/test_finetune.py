"""Semi-supervised fine-tuning: the shipped SimCLR subsets, subset files checked, the presets and their
schedules, fine-tuning beating the frozen probe on the same labels, and scripts/finetune.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from sslib.app.eval.finetune import PRESETS, FinetuneSettings, _schedule, finetune, finetune_settings
from sslib.app.eval.offline import FeatureCache, ProbeSettings, knn_eval, linear_eval
from sslib.app.eval.subsets import SIMCLR_SUBSETS, knn_subsets, label_subset, listed_subset, read_image_list
from sslib.data import DigitsDataset, eval_transform
from sslib.data.folder import CheckedImageFolder
from sslib.metrics.features import extract_features
from sslib.metrics.knn import knn_accuracy
from tests.app.eval.test_eval_tools import SIZE, ckpt, printed, run_script  # noqa: F401 (ckpt is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shipped_simclr_subsets_are_1_and_10_percent_of_imagenet_and_nested():
    one, ten = (read_image_list(SIMCLR_SUBSETS[f]) for f in (0.01, 0.1))
    assert (len(one), len(ten)) == (12811, 128116)  # 1% and 10% of the 1 281 167 train images
    assert len({n.split("_")[0] for n in one}) == len({n.split("_")[0] for n in ten}) == 1000
    assert set(one) <= set(ten)


def fake_imagenet(root: Path, per_class: int = 3) -> tuple[CheckedImageFolder, list[str]]:
    """Three classes of ImageNet with the 10% list's images (empty files: only names are read) and
    ``per_class`` more; returns the train folder and the 1% list's names of its classes."""
    listed = read_image_list(SIMCLR_SUBSETS[0.01])
    classes = sorted({n.split("_")[0] for n in listed})[:3]
    mine = [n for n in listed if n.split("_")[0] in classes]
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            (root / cls / f"{cls}_9999{i}.JPEG").touch()
    for name in read_image_list(SIMCLR_SUBSETS[0.1]):  # the 10% list holds the 1% one
        if name.split("_")[0] in classes:
            (root / name.split("_")[0] / name).touch()
    return CheckedImageFolder(root, classes), mine


def test_imagenet_subsets_pick_the_listed_images_and_bad_lists_are_one_line_errors(tmp_path):
    folder, mine = fake_imagenet(tmp_path / "train")
    idx = label_subset(folder, "imagenet100", 0.01)  # the 1000-class list restricted to the folder's classes
    assert sorted(Path(folder.samples[i][0]).name for i in idx) == sorted(mine)
    with pytest.raises(ValueError, match=r"^\d+ images of SimCLR's 1percent.txt belong to no class of"):
        label_subset(folder, "imagenet", 0.01)  # full ImageNet: every listed class must be there

    subset = tmp_path / "mine.txt"
    subset.write_text(f"{mine[0]}\n\n{mine[1]}\n")
    assert [
        Path(folder.samples[i][0]).name for i in label_subset(folder, "folder", 0.5, subset_file=subset)
    ] == sorted(mine[:2])
    cls = mine[0].split("_")[0]
    cases = {
        f"{mine[0]}\n{cls}_123456789.JPEG\n": rf"^1 images of subset file .* are missing from .*: {cls}_123456789.JPEG$",
        "n99999999_1.JPEG\n": r"^1 images of subset file .* belong to no class of .*: n99999999_1.JPEG$",
        f"{mine[0]}\n{mine[0]}\n": rf"^subset file .* repeats images: {mine[0]}$",
        "\n": r"^subset file .* names no image",
    }
    for text, match in cases.items():
        subset.write_text(text)
        with pytest.raises(ValueError, match=match):
            label_subset(folder, "folder", 0.5, subset_file=subset)
    with pytest.raises(FileNotFoundError, match="subset file .*absent.txt does not exist"):
        listed_subset(folder, read_image_list(tmp_path / "absent.txt"), "x")


def test_presets_name_the_published_numbers_and_overrides_apply():
    assert (PRESETS["swav", 0.01].backbone_lr, PRESETS["swav", 0.01].head_lr) == (0.02, 5.0)
    assert (PRESETS["swav", 0.1].backbone_lr, PRESETS["swav", 0.1].head_lr) == (0.01, 0.2)
    assert PRESETS["simclr", 0.01].epochs == 60 and PRESETS["simclr", 0.1].nesterov
    assert all(s.weight_decay == 0 for s in PRESETS.values())
    s = finetune_settings("swav", 0.01, seed=3, overrides={"epochs": 2, "head_lr": None, "batch_size": 512})
    assert (s.epochs, s.head_lr, s.seed, s.scaled(s.backbone_lr)) == (2, 5.0, 3, 0.04)
    with pytest.raises(ValueError, match="protocol must be one of swav, simclr, got 'byol'"):
        finetune_settings("byol", 0.1)
    with pytest.raises(ValueError, match="schedule must be one of step, cosine, got 'linear'"):
        FinetuneSettings(epochs=1, backbone_lr=0.1, head_lr=0.1, schedule="linear")


def test_step_schedule_divides_both_lrs_at_the_milestone_epochs():
    settings = FinetuneSettings(epochs=4, backbone_lr=0.1, head_lr=1.0, milestones=(1, 3), gamma=0.2)
    opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": g} for g in (0.1, 1.0)])
    schedule, lrs = _schedule(opt, settings, steps_per_epoch=2), []
    for _ in range(8):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        schedule.step()
    expected = [[0.1, 1.0]] * 2 + [[0.02, 0.2]] * 4 + [[0.004, 0.04]] * 2
    assert lrs == [pytest.approx(e) for e in expected]


def tiny_backbone() -> nn.Module:
    """A random conv net with 4-d features: too few for a frozen linear probe on 10 classes."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 4),
    )  # fmt: skip


def test_finetuning_beats_the_frozen_probe_on_the_same_labels():
    transform = eval_transform(8, (0.3,) * 3, (0.3,) * 3, resize=8)
    train, val = DigitsDataset("train", transform=transform), DigitsDataset("val", transform=transform)
    idx = label_subset(train, "digits", 0.5, seed=0)
    labelled = Subset(train, idx.tolist())
    assert len(labelled) == pytest.approx(len(train) / 2, abs=10)

    frozen = tiny_backbone()
    loader = lambda data: torch.utils.data.DataLoader(data, batch_size=256)  # noqa: E731
    probe = linear_eval(
        *extract_features(frozen, loader(labelled), "cpu"), *extract_features(frozen, loader(val), "cpu"),
        ProbeSettings(epochs=30, lr=0.5), num_classes=10, device="cpu",
    )  # fmt: skip
    settings = FinetuneSettings(epochs=30, backbone_lr=0.5, head_lr=0.5, batch_size=64, milestones=(20,))
    model, tuned = finetune(tiny_backbone(), 4, labelled, val, 10, settings, device="cpu")
    assert tuned["top1"] > probe["top1"] + 15, (tuned, probe)
    assert not model.training


def test_finetune_script_on_digits(ckpt, monkeypatch, capsys):  # noqa: F811
    args = ["--ckpt", str(ckpt), "--data", "digits", "--image-size", SIZE, "--device", "cpu"]
    run_script(
        "finetune", [*args, "--fractions", "0.1", "--epochs", "1", "--protocol", "simclr"], monkeypatch
    )
    head, table = printed(capsys.readouterr().out)
    assert head == "data: digits (given), root: data (default), image size: 8 (given)"
    assert table[0] == "| labels | protocol | epochs | top-1 | top-5 |"
    assert re.fullmatch(r"\| 10% \| simclr \| 1 \| \d+\.\d\d \| \d+\.\d\d \|", table[2])


def test_knn_banks_of_imagenet_are_the_simclr_lists(tmp_path):
    _, mine = fake_imagenet(tmp_path / "imagenet100" / "train")
    (tmp_path / "imagenet100" / "val").mkdir()
    for cls in sorted({n.split("_")[0] for n in mine}):
        (tmp_path / "imagenet100" / "val" / cls).mkdir()
        (tmp_path / "imagenet100" / "val" / cls / "v.JPEG").touch()
    (tmp_path / "weights.ckpt").write_bytes(b"only hashed")
    cache = FeatureCache(tmp_path / "weights.ckpt", "imagenet100", tmp_path / "imagenet100")
    with pytest.warns(UserWarning, match="imagenet100 has 100 classes but 3 are selected"):
        banks = knn_subsets(cache, [1.0, 0.1, 0.01])
    assert set(banks) == {0.1, 0.01}  # 100% is the whole split
    train = cache.build("train", None)
    assert sorted(Path(train.samples[i][0]).name for i in banks[0.01]) == sorted(mine)

    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(30, 5, generator=g), torch.arange(30) % 3
    bank = torch.tensor([0, 1, 2, 3, 4, 5])
    got = knn_eval(features, labels, features, labels, k=3, fractions=[0.2], subsets={0.2: bank})
    assert got[0.2] == knn_accuracy(features[bank], labels[bank], features, labels, 3, k=3, temperature=0.07)
