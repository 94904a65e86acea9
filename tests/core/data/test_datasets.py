"""ImageFolder datasets fail loudly: missing and empty folders, class mismatches, class lists, corrupt images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch._utils import ExceptionWrapper  # how DataLoader workers hand errors to the main process

from sslib.app.cli import pretrain_main
from sslib.app.datamodule import SSLDataModule
from sslib.data import build_dataset
from sslib.data.datasets import IMAGENET100_CLASSES
from sslib.data.folder import CorruptImageError, read_class_list

Layout = dict[str, dict[str, int]]  # split -> class -> number of images
TWO_CLASSES: Layout = {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}}


def message(excinfo: pytest.ExceptionInfo) -> str:
    """The exception's message, asserting it is a single line."""
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def make_tree(root: Path, layout: Layout) -> Path:
    """``root/<split>/<class>/<i>.{png,jpg}``: tiny 8x8 RGB images, PNG and JPEG alternately."""
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.{('png', 'jpg')[i % 2]}")
    return root


def write_list(path: Path, classes: list[str]) -> Path:
    path.write_text("\n".join(classes) + "\n")
    return path


# --- missing and empty folders --------------------------------------------------------------------------


def test_missing_root_names_it_and_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset("folder", tmp_path / "nowhere", "train")
    text = message(excinfo)
    assert f"dataset root {tmp_path / 'nowhere'} does not exist" in text
    assert f"{tmp_path / 'nowhere' / 'val'}/<class>/<image files>" in text


@pytest.mark.parametrize("split", ["train", "val"])
def test_missing_val_folder_is_named_whichever_split_is_built(tmp_path, split):
    make_tree(tmp_path, {"train": {"a": 1}})
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset("folder", tmp_path, split)
    assert f"image folder {tmp_path / 'val'} does not exist" in message(excinfo)


def test_folder_without_class_folders_is_an_error(tmp_path):
    make_tree(tmp_path, {"val": {"a": 1}})
    (tmp_path / "train").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "loose.png")  # images, but not in class folders
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset("folder", tmp_path, "train")
    assert f"no class folders in {tmp_path / 'train'}" in message(excinfo)


def test_class_folders_without_images_are_named(tmp_path):
    make_tree(tmp_path, {"train": {"a": 2, "b": 0, "c": 0}, "val": {"a": 1, "b": 1, "c": 1}})
    (tmp_path / "train" / "b" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError) as excinfo:
        build_dataset("folder", tmp_path, "train")
    text = message(excinfo)
    assert f"2 class folders of {tmp_path / 'train'} hold no image files" in text
    assert ".jpg" in text and text.endswith(": b, c")


def test_class_with_no_val_samples_is_named(tmp_path):
    make_tree(tmp_path, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 0}})
    build_dataset("folder", tmp_path, "train")  # the train split itself is fine
    with pytest.raises(ValueError) as excinfo:
        build_dataset("folder", tmp_path, "val")
    assert f"1 class folders of {tmp_path / 'val'} hold no image files" in message(excinfo)


@pytest.mark.parametrize(
    ("layout", "missing_from", "classes"),
    [
        ({"train": {"a": 1, "b": 1, "c": 1}, "val": {"a": 1}}, "val", "b, c"),
        ({"train": {"a": 1}, "val": {"a": 1, "z": 1}}, "train", "z"),
    ],
)
def test_train_and_val_class_lists_must_match(tmp_path, layout, missing_from, classes):
    make_tree(tmp_path, layout)
    for split in ("train", "val"):
        with pytest.raises(ValueError) as excinfo:
            build_dataset("folder", tmp_path, split)
        text = message(excinfo)
        assert f"have no folder in {tmp_path / missing_from}: {classes}" in text


def test_long_class_lists_are_shortened(tmp_path):
    make_tree(tmp_path, {"train": {f"c{i}": 1 for i in range(8)}, "val": {"c0": 1}})
    with pytest.raises(ValueError) as excinfo:
        build_dataset("folder", tmp_path, "train")
    assert message(excinfo).endswith("c1, c2, c3, c4, c5, ... (7 in all)")


# --- corrupt images -------------------------------------------------------------------------------------


def add_corrupt(root: Path) -> list[Path]:
    """A non-image .jpg and a truncated .png in root/train/a."""
    garbage, truncated = root / "train" / "a" / "garbage.jpg", root / "train" / "a" / "truncated.png"
    garbage.write_bytes(b"not an image at all")
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-20])
    return [garbage, truncated]


def test_corrupt_image_is_a_one_line_error_naming_the_file(tmp_path):
    make_tree(tmp_path, TWO_CLASSES)
    garbage = add_corrupt(tmp_path)[0]
    dataset = build_dataset("folder", tmp_path, "train")
    index = [path for path, _ in dataset.samples].index(str(garbage))
    with pytest.raises(CorruptImageError) as excinfo:
        dataset[index]
    text = message(excinfo)
    assert text.startswith(f"corrupt image {garbage}: cannot identify image file")
    assert text.endswith("set data.skip_corrupt=true to drop unreadable images up front")


def test_corrupt_image_error_stays_one_line_from_a_dataloader_worker(tmp_path):
    """A worker's error reaches the main process through torch's ExceptionWrapper, whose message holds
    the worker's whole traceback; the error's text is still its own one line."""
    make_tree(tmp_path, TWO_CLASSES)
    garbage = add_corrupt(tmp_path)[0]
    dataset = build_dataset("folder", tmp_path, "train")
    dataset.samples = [(str(garbage), 0)]
    try:
        dataset[0]
    except CorruptImageError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(CorruptImageError) as excinfo:
        wrapper.reraise()
    assert "Original Traceback" in excinfo.value.args[0]  # what the main process receives
    assert message(excinfo).startswith(f"corrupt image {garbage}: cannot identify image file")


def test_skip_corrupt_drops_unverifiable_images_with_one_warning(tmp_path):
    make_tree(tmp_path, TWO_CLASSES)
    bad = add_corrupt(tmp_path)
    with pytest.warns(UserWarning, match=re.escape(f"skipped 2 corrupt images of 8 in {tmp_path / 'train'}")):
        dataset = build_dataset("folder", tmp_path, "train", skip_corrupt=True)
    assert len(dataset) == len(dataset.targets) == 6 and dataset.targets == [0, 0, 0, 1, 1, 1]
    assert not {str(p) for p in bad} & {path for path, _ in dataset.samples}
    assert all(dataset[i][0].size == (8, 8) for i in range(len(dataset)))


def test_truncated_jpeg_passing_the_skip_corrupt_check_still_fails_loudly(tmp_path):
    make_tree(tmp_path, TWO_CLASSES)
    jpeg = tmp_path / "train" / "a" / "1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:-40])  # PIL verify() does not decode JPEGs: it passes
    dataset = build_dataset("folder", tmp_path, "train", skip_corrupt=True)
    with pytest.raises(CorruptImageError) as excinfo:
        dataset[[path for path, _ in dataset.samples].index(str(jpeg))]
    assert message(excinfo).startswith(f"corrupt image {jpeg}: image file is truncated")
    assert message(excinfo).endswith(
        "it passed data.skip_corrupt's check (PIL verify() does not decode); remove it"
    )


def test_skip_corrupt_leaving_a_class_empty_is_an_error(tmp_path):
    make_tree(tmp_path, {"train": {"a": 0, "b": 2}, "val": {"a": 1, "b": 1}})
    add_corrupt(tmp_path)
    with pytest.raises(ValueError) as excinfo, pytest.warns(UserWarning, match="skipped 2 corrupt"):
        build_dataset("folder", tmp_path, "train", skip_corrupt=True)
    assert f"class folders of {tmp_path / 'train'} hold no readable image files" in message(excinfo)


# --- class lists and ImageNet-100 -----------------------------------------------------------------------


def test_class_list_selects_classes_from_both_splits(tmp_path):
    make_tree(tmp_path, {"train": {"a": 1, "b": 2, "c": 3}, "val": {"a": 1, "b": 1, "c": 1}})
    classes = write_list(tmp_path / "classes.txt", ["c", "", "a  # comment"])
    train = build_dataset("folder", tmp_path, "train", class_list=classes)
    val = build_dataset("folder", tmp_path, "val", class_list=str(classes))
    assert train.classes == val.classes == ["a", "c"] and train.targets == [0, 1, 1, 1]
    assert {Path(p).parent.name for p, _ in train.samples} == {"a", "c"}


def test_class_list_with_unknown_ids_names_them(tmp_path):
    make_tree(tmp_path, {"train": {"n01": 1, "n02": 1}, "val": {"n01": 1, "n02": 1}})
    classes = write_list(tmp_path / "classes.txt", ["n01", "n98", "n99"])
    with pytest.raises(ValueError) as excinfo:
        build_dataset("imagenet", tmp_path, "val", class_list=classes)
    assert message(excinfo) == f"2 classes of the class list have no folder in {tmp_path / 'train'}: n98, n99"


@pytest.mark.parametrize(
    ("content", "error", "text"),
    [
        (None, FileNotFoundError, "does not exist; expected a text file, one class per line"),
        ("\n# only a comment\n", ValueError, "names no class"),
        ("n01\nn02\nn01\n", ValueError, "repeats classes: n01"),
    ],
)
def test_bad_class_list_files_are_named(tmp_path, content, error, text):
    path = tmp_path / "classes.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error) as excinfo:
        read_class_list(path)
    assert f"class list {path}" in message(excinfo) and text in message(excinfo)


def test_packaged_imagenet100_list_has_100_wordnet_ids():
    ids = read_class_list(IMAGENET100_CLASSES)
    assert len(ids) == len(set(ids)) == 100 and all(re.fullmatch(r"n\d{8}", i) for i in ids)
    assert ids[0] == "n02869837" and ids[-1] == "n02090622"  # CMC's imagenet100.txt, in its order


@pytest.fixture
def imagenet_like(tmp_path) -> Path:
    """A tree of 101 WordNet-id classes: the 100 of ImageNet-100 plus n00000001, one image each."""
    classes = {c: 1 for c in [*read_class_list(IMAGENET100_CLASSES), "n00000001"]}
    return make_tree(tmp_path / "imagenet", {"train": classes, "val": classes})


def test_imagenet100_defaults_to_the_standard_classes_of_a_larger_tree(imagenet_like):
    dataset = build_dataset("imagenet100", imagenet_like, "val")
    assert len(dataset.classes) == len(dataset) == 100 and "n00000001" not in dataset.classes
    assert dataset.classes == sorted(read_class_list(IMAGENET100_CLASSES))


def test_imagenet100_class_count_warns_when_fewer_and_fails_when_more(imagenet_like, tmp_path):
    few = write_list(tmp_path / "few.txt", ["n02869837", "n01749939", "n02488291"])
    with pytest.warns(UserWarning, match="imagenet100 has 100 classes but 3 are selected"):
        assert len(build_dataset("imagenet100", imagenet_like, "train", class_list=few).classes) == 3
    many = write_list(tmp_path / "many.txt", sorted(p.name for p in (imagenet_like / "train").iterdir()))
    with pytest.raises(ValueError) as excinfo:
        build_dataset("imagenet100", imagenet_like, "train", class_list=many)
    assert "imagenet100 has 100 classes but 101 are selected" in message(excinfo)


def test_class_list_and_skip_corrupt_are_for_image_folders_only(tmp_path):
    with pytest.raises(ValueError, match="apply to ImageFolder datasets, not cifar10") as excinfo:
        build_dataset("cifar10", tmp_path, "train", skip_corrupt=True)
    message(excinfo)


def test_datamodule_passes_class_list_and_skip_corrupt(tmp_path):
    make_tree(tmp_path, {"train": {"a": 2, "b": 2, "c": 2}, "val": {"a": 1, "b": 1, "c": 1}})
    add_corrupt(tmp_path)
    classes = write_list(tmp_path / "classes.txt", ["a", "b"])
    dm = SSLDataModule("folder", tmp_path, batch_size=2, class_list=str(classes), skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipped 2 corrupt images of 6"):
        assert dm.num_classes == 2
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2


# --- through the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no root", "error: dataset root {root} does not exist"),
        ("no class list", "error: class list {root}/missing.txt does not exist"),
        ("empty class", "error: 1 class folders of {root}/val hold no image files"),
    ],
)
def test_cli_reports_dataset_errors_in_one_line(tmp_path, capsys, case, expected):
    root = tmp_path / "data"
    args = ["data=folder", f"data.root={root}", f"run_dir={tmp_path / 'run'}", "trainer.accelerator=cpu"]
    if case != "no root":
        make_tree(root, {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 0}})
    if case == "no class list":
        args.append(f"data.class_list={root}/missing.txt")
    assert pretrain_main([*args, "data.batch_size=2", "data.num_workers=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(expected.format(root=root)), err
