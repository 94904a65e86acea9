"""The evaluation tools evaluate a run on its own dataset, root and crop size unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslib.app.eval.cli import knn_main, umap_main
from sslib.app.eval.data import eval_data
from sslib.app.eval.offline import cached_features
from sslib.app.eval.sources import BackboneSource
from sslib.data import DigitsDataset
from tests.app.eval.test_eval_tools import legend, printed, save_checkpoint
from tests.app.eval.test_transfer import COLOURS, image_folder

DIGITS_AT_8 = {"name": "digits", "root": "data", "val_fraction": 0.2, "seed": 3, "global_crops": {"size": 8}}
FROM_RUN = "data: digits (from the checkpoint), root: data (from the checkpoint), image size: 8 (from the checkpoint)"


@pytest.fixture(scope="module")
def run_at_8(tmp_path_factory) -> Path:
    """A digits run trained at 8 px (not the digits' native 32) with split seed 3."""
    return save_checkpoint(tmp_path_factory.mktemp("run") / "last.ckpt", data=DIGITS_AT_8)


def test_a_run_is_evaluated_on_its_dataset_at_its_crop_size(run_at_8, count_extractions, capsys):
    assert knn_main(["--ckpt", str(run_at_8), "--device", "cpu", "--fractions", "1,0.1"]) == 0
    head, table = printed(capsys.readouterr().out)
    assert head == FROM_RUN
    assert count_extractions == [8, 8]  # train and val, at the run's 8 px
    explicit = ["--data", "digits", "--image-size", "8", "--device", "cpu", "--fractions", "1,0.1"]
    assert knn_main(["--ckpt", str(run_at_8), *explicit]) == 0
    head, given = printed(capsys.readouterr().out)
    assert head == "data: digits (given), root: data (from the checkpoint), image size: 8 (given)"
    assert given == table and len(count_extractions) == 2  # the same features, read back from the cache
    # ... of the run's own split (seed 3), not the default one
    _, labels = cached_features(
        run_at_8, "digits", "val", image_size=8, options={"val_fraction": 0.2, "seed": 3}
    )
    assert len(count_extractions) == 2 and labels.tolist() == DigitsDataset("val", seed=3).targets
    assert DigitsDataset("val", seed=3).targets != DigitsDataset("val", seed=0).targets


def test_another_dataset_takes_the_run_s_crop_size_but_not_its_root(run_at_8):
    data = eval_data(run_at_8, BackboneSource(), data="cifar10")
    assert (data.name, data.root, data.image_size, data.options) == ("cifar10", "data", 8, {})
    assert (
        data.describe() == "data: cifar10 (given), root: data (default), image size: 8 (from the checkpoint)"
    )
    data = eval_data(run_at_8, BackboneSource(), root="/elsewhere", image_size=16)
    assert (data.name, data.root, data.image_size) == ("digits", "/elsewhere", 16)
    assert data.options == {"val_fraction": 0.2, "seed": 3}


def test_a_folder_run_brings_its_class_list(tmp_path):
    classes = tmp_path / "classes.txt"
    run = save_checkpoint(
        tmp_path / "last.ckpt",
        data={
            "name": "folder", "root": "/data/birds", "class_list": str(classes), "skip_corrupt": True,
            "val_fraction": 0.2, "seed": 0, "global_crops": {"size": 96},
        },
    )  # fmt: skip
    data = eval_data(run, BackboneSource())
    assert data.options == {"class_list": str(classes), "skip_corrupt": True, "val_fraction": 0.2, "seed": 0}
    assert data.describe() == (
        "data: folder (from the checkpoint), root: /data/birds (from the checkpoint), "
        f"image size: 96 (from the checkpoint), classes: {classes} (from the checkpoint)"
    )


def test_checkpoints_without_a_run_config_keep_the_defaults(tmp_path):
    published = tmp_path / "published.pth"
    published.write_bytes(b"not read: only sslib checkpoints store a run config")
    data = eval_data(published, BackboneSource("solo-learn", "resnet18"))
    assert (data.name, data.root, data.image_size, data.options) == ("digits", "data", 32, {})
    assert data.describe() == (
        "data: digits (default: the checkpoint stores no run config), root: data (default), "
        "image size: 32 (default)"
    )


def test_a_folder_run_is_plotted_with_its_class_names(tmp_path, figures, capsys):
    root = image_folder(tmp_path / "colours", splits=("train", "val"), per_class=2)
    run = save_checkpoint(
        tmp_path / "run" / "last.ckpt",
        data={"name": "folder", "root": str(root), "global_crops": {"size": 8}},
    )
    assert umap_main(["--ckpt", str(run), "--device", "cpu", "--n-neighbors", "2"]) == 0
    head, [path] = printed(capsys.readouterr().out)
    assert head == (
        f"data: folder (from the checkpoint), root: {root} (from the checkpoint), image size: 8 (from the checkpoint)"
    )
    assert path == str(run.with_name("last-umap-folder-val.png")) and Path(path).is_file()
    assert legend(figures[0]) == sorted(COLOURS)  # the class folders, not 0, 1, 2
