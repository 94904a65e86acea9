"""Tests for sslib.data: digits split, multi-crop augmentation, dataset lookup and the data module."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image, ImageFilter
from scipy.stats import kstest
from torchvision.datasets import CIFAR10
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

import sslib.app.conf
from sslib.app.builders import augment_preset
from sslib.app.datamodule import SSLDataModule
from sslib.data import (
    DATASET_STATS,
    Augment,
    CropGroup,
    DigitsDataset,
    MultiCropTransform,
    build_dataset,
    eval_transform,
    sampling,
    transforms,
)
from sslib.data.kernels import adjust_hue, box_radius, pil_gaussian_blur
from sslib.data.sampling import EpochSampler

N_DIGITS = 1797
IDENTITY = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # "normalised" views stay in [0, 1]
NO_RANDOM_COLOUR = dict(color_jitter_p=0.0, grayscale_p=0.0, hflip_p=0.0, blur_p=(0.0,))
PRESETS = Path(sslib.app.conf.__file__).parent / "data" / "augment"


pytestmark = pytest.mark.usefixtures("one_thread")


def message(excinfo: pytest.ExceptionInfo) -> str:
    """The exception's message, asserting it is a single line."""
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def make_image_folder(root: Path) -> None:
    """root/{train,val}/{a,b}/*.png: 3 train and 2 val RGB images per class, of varied sizes."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(20 + 4 * i, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")


# --- digits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("val_fraction", [0.2, 0.3])
def test_digits_split_is_stratified_disjoint_and_sized(val_fraction):
    train, val = DigitsDataset("train", val_fraction), DigitsDataset("val", val_fraction)
    assert len(val) == int(np.ceil(N_DIGITS * val_fraction)) and len(train) + len(val) == N_DIGITS
    assert set(train.indices).isdisjoint(val.indices)
    assert sorted(train.indices + val.indices) == list(range(N_DIGITS))
    totals = Counter(train.targets) + Counter(val.targets)
    for label, count in Counter(val.targets).items():
        assert abs(count - val_fraction * totals[label]) <= 1, (label, count, totals[label])
    assert train.classes == [str(d) for d in range(10)] and set(val.targets) == set(range(10))


def test_digits_split_is_deterministic_per_seed():
    assert DigitsDataset("val", seed=0).indices == DigitsDataset("val", seed=0).indices
    assert DigitsDataset("val", seed=0).indices != DigitsDataset("val", seed=1).indices
    assert torch.equal(DigitsDataset("val").images, DigitsDataset("val").images)


def test_digits_images_are_32x32_rgb_uint8():
    dataset = DigitsDataset("val")
    image, label = dataset[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # grayscale replicated
    assert dataset.images.max() == 255 and dataset.images.min() == 0
    mean = dataset.images.float().div(255).mean().item()
    assert mean == pytest.approx(DATASET_STATS["digits"].mean[0], abs=0.01)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"split": "test"}, "split"), ({"val_fraction": 0.0}, "val_fraction")]
)
def test_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        DigitsDataset(**kwargs)
    message(excinfo)


# --- transforms -----------------------------------------------------------------------------------------


def test_multicrop_views_have_right_count_shape_dtype_and_range():
    stats = DATASET_STATS["digits"]
    local = CropGroup(3, 16, (0.05, 0.3))
    transform = MultiCropTransform(CropGroup(2, 32), local, Augment(), stats.mean, stats.std)
    image = DigitsDataset("val")[0][0]
    views = transform(image)
    assert transform.n_global == 2 and transform.n_crops == len(views) == 5
    assert [tuple(v.shape) for v in views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    lo, hi = (0 - stats.mean[0]) / stats.std[0], (1 - stats.mean[0]) / stats.std[0]
    for view in views:
        assert view.dtype == torch.float32
        assert lo - 1e-4 <= view.min() and view.max() <= hi + 1e-4


def test_multicrop_accepts_pil_images():
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    views = MultiCropTransform(CropGroup(1, 24), None, Augment(), **IDENTITY)(pil)
    assert len(views) == 1 and views[0].shape == (3, 24, 24) and views[0].dtype == torch.float32


@pytest.mark.parametrize("solarized_view", [0, 1])
def test_global_views_are_asymmetric(solarized_view):
    """Solarize p=1 on one global view and 0 on the other: only that view has its bright strokes inverted."""
    solarize_p = tuple(float(i == solarized_view) for i in range(2))
    augment = Augment(**NO_RANDOM_COLOUR, solarize_p=solarize_p)
    transform = MultiCropTransform(CropGroup(2, 32, (1.0, 1.0)), None, augment, **IDENTITY)
    image = DigitsDataset("val")[0][0]
    views = transform(image)
    solarized, plain = views[solarized_view], views[1 - solarized_view]
    assert torch.allclose(plain, image.float() / 255, atol=1e-6)
    assert plain.max() > 0.9 and solarized.max() <= 0.5
    assert torch.allclose(solarized, torch.where(plain >= 0.5, 1 - plain, plain), atol=1e-6)


@pytest.mark.parametrize("path", sorted(PRESETS.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_preset_file_states_every_augment_field(path):
    yaml = OmegaConf.to_container(OmegaConf.load(path))
    assert list(yaml) == [field.name for field in dataclasses.fields(Augment)]
    assert augment_preset(path.stem) == Augment(**yaml)


def test_augment_defaults_are_the_imagenet_preset():
    assert Augment() == augment_preset("imagenet")
    assert (Augment().interpolation, Augment().blur_sigma) == ("bicubic", (0.1, 2.0))


SOLO_LEARN_CIFAR = dict(
    color_jitter_p=0.8, grayscale_p=0.2, hflip_p=0.5, interpolation="bicubic", blur_sigma=(0.1, 2.0)
)


@pytest.mark.parametrize(
    ("preset", "values"),
    [
        # solo-learn scripts/pretrain/cifar/augmentations/asymmetric.yaml, both views.
        (
            "cifar",
            dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, blur_p=(0.0,), solarize_p=(0.0, 0.2)),
        ),
        # solo-learn scripts/pretrain/cifar/augmentations/symmetric.yaml: one pipeline for both views.
        (
            "cifar_symmetric",
            dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=(0.5,), solarize_p=(0.0,)),
        ),
    ],
)
def test_cifar_presets_are_solo_learns(preset, values):
    augment = augment_preset(preset)
    for name, value in {**SOLO_LEARN_CIFAR, **values, "local_blur_p": 0.0, "local_solarize_p": 0.0}.items():
        assert getattr(augment, name) == value, name


def test_digits_default_to_their_own_preset():
    assert SSLDataModule("digits").crops[2] == augment_preset("digits")
    assert SSLDataModule("cifar10").crops[2] == augment_preset("cifar")


def test_augment_presets_match_the_recipes():
    imagenet, cifar = Augment(), augment_preset("cifar")
    assert imagenet.global_probs(2) == [(1.0, 0.0), (0.1, 0.2)]
    assert (imagenet.local_blur_p, imagenet.local_solarize_p) == (0.5, 0.0)
    assert cifar.global_probs(2) == [(0.0, 0.0), (0.0, 0.2)] and cifar.local_blur_p == 0.0
    assert (cifar.brightness, cifar.contrast, cifar.saturation, cifar.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (cifar.color_jitter_p, cifar.grayscale_p, cifar.hflip_p) == (0.8, 0.2, 0.5)
    assert augment_preset("cifar", solarize_p=[0.1, 0.3]).solarize_p == (0.1, 0.3)  # YAML lists work
    assert Augment(blur_p=0.5, solarize_p=[0.3]).global_probs(3) == [(0.5, 0.3)] * 3  # one value: every view
    assert imagenet.global_probs(1) == [(1.0, 0.0)]  # fewer views: the first values


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: CropGroup(-1, 32), "^n must be an integer >= 0"),
        (lambda: CropGroup(2, 0), "^size must be an integer >= 1"),
        (lambda: CropGroup(2, 32, (0.0, 1.0)), "scale"),
        (lambda: CropGroup(2, 32, (0.6, 0.4)), "scale"),
        (lambda: CropGroup(2, 32, (0.2, 1.5)), "scale"),
        (lambda: MultiCropTransform(CropGroup(0, 32), None, Augment(), **IDENTITY), "global crop"),
        (lambda: MultiCropTransform(CropGroup(3, 32), None, Augment(), **IDENTITY), "blur_p has 2 values"),
        (
            lambda: MultiCropTransform(CropGroup(1, 32), None, Augment(), (0.5,) * 2, (0.5,) * 2),
            "mean and std",
        ),
        (lambda: Augment(solarize_p=(0.0, 1.5)), r"solarize_p\[1\]"),
        (lambda: Augment(hue=0.7), "hue"),
        (lambda: augment_preset("cifar", blurp=0.1), "blurp"),
        (lambda: augment_preset("stl10"), "available: cifar, cifar_symmetric, digits, imagenet"),
        (
            lambda: Augment(interpolation="nearest"),
            "interpolation must be one of bicubic, bilinear, got 'nearest'",
        ),
        (
            lambda: Augment(blur_sigma=(2.0, 0.1)),
            r"blur_sigma must be \[lo, hi\] with 0 < lo <= hi, got \(2.0, 0.1\)",
        ),
        (lambda: Augment(blur_sigma=[0.0, 1.0]), "blur_sigma"),
        (lambda: Augment(blur_sigma=0.5), "blur_sigma"),
        (lambda: Augment(blur_sigma="ab"), "blur_sigma"),
    ],
)
def test_transform_arguments_are_checked_with_one_line_errors(build, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        build()
    message(excinfo)


@pytest.mark.parametrize("hue", [-0.5, -0.1, 0.0, 0.07, 0.5])
def test_fast_hue_matches_torchvision(hue):
    image = torch.rand(2, 3, 24, 20)
    image[:, :, :4] = 0.5  # grey pixels (no hue)
    image[:, 1, 4:8] = image[:, 0, 4:8]  # red = green ties
    assert torch.allclose(adjust_hue(image, hue), TF.adjust_hue(image, hue), atol=1e-5)


def pil_blur(image: torch.Tensor, radius: float) -> torch.Tensor:
    """uint8 (3, H, W) -> PIL's GaussianBlur(radius) of it, as float in [0, 1]."""
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius))
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.7, 1.3, 2.0, 4.5])
@pytest.mark.parametrize("shape", [(3, 40, 36), (3, 5, 7)])
def test_blur_is_pils_gaussian_blur(sigma, shape):
    """PIL rounds to uint8 after each of its 6 passes (so up to 3/255 apart); its edges repeat."""
    image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    error = (pil_gaussian_blur(image.float() / 255, sigma) - pil_blur(image, sigma)).abs()
    assert error.max() <= 3.5 / 255 and error.mean() <= 1.2 / 255, (error.max() * 255, error.mean() * 255)


@pytest.mark.parametrize("sigma", [0.1, 0.6, 1.0, 2.0, 3.7])
def test_box_radius_gives_the_gaussian_variance(sigma):
    """Three passes of the extended box of radius r = l + a have variance sigma**2 (Gwosdek et al.)."""
    radius = box_radius(sigma)
    whole, frac = int(radius), radius - int(radius)
    box = torch.tensor([frac] + [1.0] * (2 * whole + 1) + [frac], dtype=torch.float64) / (2 * radius + 1)
    kernel = box
    for _ in range(2):
        kernel = torch.nn.functional.conv1d(
            kernel.view(1, 1, -1), box.view(1, 1, -1), padding=len(box) - 1
        ).view(-1)
    x = torch.arange(len(kernel), dtype=torch.float64) - len(kernel) // 2
    assert kernel.sum().item() == pytest.approx(1.0)
    assert (kernel * x**2).sum().item() == pytest.approx(sigma**2, rel=1e-6)


def test_blurred_views_are_pil_blurs_with_radius_uniform_in_blur_sigma(monkeypatch):
    """Each blurred view is PIL's GaussianBlur of the crop, with radius ~ U(blur_sigma) of the config."""
    radii = []

    def recording_blur(view, sigma):
        radii.append(sigma)
        return pil_gaussian_blur(view, sigma)

    monkeypatch.setattr(transforms, "pil_gaussian_blur", recording_blur)
    low, high = 0.4, 1.7
    augment = Augment(**{**NO_RANDOM_COLOUR, "blur_p": (1.0,)}, solarize_p=(0.0,), blur_sigma=[low, high])
    view = MultiCropTransform(CropGroup(1, 20, (1.0, 1.0)), None, augment, **IDENTITY).global_views[0]
    image = torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    for _ in range(200):
        blurred = view(image)  # scale 1 on a square image: the crop is the image
        assert (blurred - pil_blur(image, radii[-1])).abs().max() <= 3.5 / 255
    assert low <= min(radii) and max(radii) <= high
    assert kstest(radii, "uniform", args=(low, high - low)).pvalue > 0.01


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_crops_are_resized_with_the_preset_interpolation(interpolation):
    """A view without colour ops is torchvision's resized crop of the image, in the configured mode."""
    augment = Augment(**NO_RANDOM_COLOUR, solarize_p=(0.0,), interpolation=interpolation)
    crop = CropGroup(1, 48, (0.2, 1.0))
    view = MultiCropTransform(crop, None, augment, **IDENTITY).global_views[0]
    image = torch.randint(0, 256, (3, 30, 26), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mode = getattr(TF.InterpolationMode, interpolation.upper())
    for seed in range(5):
        torch.manual_seed(seed)
        params = RandomResizedCrop.get_params(image, list(crop.scale), transforms.ASPECT_RATIO)
        expected = TF.resized_crop(image, *params, [48, 48], interpolation=mode, antialias=True)
        torch.manual_seed(seed)
        assert torch.allclose(view(image), TF.to_dtype(expected, torch.float32, scale=True), atol=1e-6)


def test_eval_transform_sizes():
    image = DigitsDataset("val")[0][0]
    out = eval_transform(32, **IDENTITY)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out, image.float() / 255)
    pil = Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))
    assert eval_transform(32, **IDENTITY, resize=36)(pil).shape == (3, 32, 32)


# --- dataset lookup -------------------------------------------------------------------------------------


def test_unknown_dataset_lists_allowed_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as excinfo:
        build_dataset("mnist", tmp_path, "train")
    assert all(name in message(excinfo) for name in DATASET_STATS)
    allowed = "available: digits, cifar10, cifar100, imagenet, imagenet100, folder"
    with pytest.raises(ValueError, match=allowed):
        SSLDataModule(name="mnist")


def test_cifar_offline_error_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset("cifar100", tmp_path, "train", download=False)
    text = message(excinfo)
    assert str(tmp_path) in text and "'cifar-100-python/'" in text and "download=True" in text


def test_cifar_failed_download_is_one_line_without_chained_traceback(tmp_path, monkeypatch):
    def fail(self):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(CIFAR10, "download", fail)
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset("cifar10", tmp_path, "val", download=True)
    text = message(excinfo)
    assert str(tmp_path) in text and "'cifar-10-batches-py/'" in text and "download failed" in text
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


def test_folder_dataset_reads_an_image_folder(tmp_path):
    make_image_folder(tmp_path)
    train = build_dataset("folder", tmp_path, "train", eval_transform(16, **IDENTITY, resize=18))
    val = build_dataset("folder", tmp_path, "val")
    assert len(train) == 6 and len(val) == 4 and train.classes == ["a", "b"]
    image, label = train[5]
    assert image.shape == (3, 16, 16) and label == 1


@pytest.mark.parametrize("name", ["folder", "imagenet100"])
def test_missing_image_folder_names_the_path(tmp_path, name):
    with pytest.raises(FileNotFoundError) as excinfo:
        build_dataset(name, tmp_path / "nowhere", "val")
    assert str(tmp_path / "nowhere" / "val") in message(excinfo)


def test_image_folders_cannot_be_downloaded(tmp_path):
    with pytest.raises(ValueError, match="cannot be downloaded") as excinfo:
        build_dataset("imagenet", tmp_path, "train", download=True)
    assert str(tmp_path / "train") in message(excinfo)


# --- epoch sampler --------------------------------------------------------------------------------------


def rank_shards(monkeypatch, n: int, world: int, seed: int = 0, epoch: int = 0) -> list[list[int]]:
    """The indices ``EpochSampler(n, seed, epoch)`` yields on each of ``world`` ranks."""
    shards = []
    for rank in range(world):
        monkeypatch.setattr(sampling, "_rank_and_world", lambda rank=rank: (rank, world))
        sampler = EpochSampler(n, seed=seed, epoch=epoch)
        pairs = list(sampler)
        assert len(pairs) == len(sampler) and {e for e, _ in pairs} <= {epoch}
        shards.append([i for _, i in pairs])
    return shards


@pytest.mark.parametrize(("n", "world"), [(24, 1), (24, 2), (25, 2), (10, 3), (7, 4), (3, 4)])
def test_rank_shards_are_disjoint_equal_and_cover_the_epochs_permutation(monkeypatch, n, world):
    """Rank r takes every world-th index of the epoch's permutation; the n % world last ones are dropped
    so that every rank has n // world samples (and the same number of batches)."""
    (permutation,) = rank_shards(monkeypatch, n, 1, seed=3, epoch=2)
    assert sorted(permutation) == list(range(n))
    shards = rank_shards(monkeypatch, n, world, seed=3, epoch=2)
    assert [len(shard) for shard in shards] == [n // world] * world
    kept = permutation[: n // world * world]
    assert set().union(*shards) == set(kept) and sum(map(len, shards)) == len(kept)  # disjoint, covering
    assert [shard[k] for k in range(n // world) for shard in shards] == kept  # dealt round-robin


def test_rank_shards_are_a_function_of_seed_and_epoch(monkeypatch):
    shards = rank_shards(monkeypatch, 25, 2, seed=1, epoch=4)
    assert rank_shards(monkeypatch, 25, 2, seed=1, epoch=4) == shards
    assert rank_shards(monkeypatch, 25, 2, seed=1, epoch=5) != shards
    assert rank_shards(monkeypatch, 25, 2, seed=2, epoch=4) != shards
    monkeypatch.setattr(sampling, "_rank_and_world", lambda: (1, 2))
    sampler = EpochSampler(25, seed=1)
    sampler.set_epoch(4)  # as Lightning does at every epoch start
    assert [i for _, i in sampler] == shards[1]


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_rank_gets_the_same_number_of_batches(monkeypatch, drop_last):
    """1437 digits on 2 ranks, batches of 64: 718 samples each, 11 full batches (+ 1 of 14)."""
    counts = []
    for rank in range(2):
        monkeypatch.setattr(sampling, "_rank_and_world", lambda rank=rank: (rank, 2))
        dm = SSLDataModule("digits", batch_size=64, drop_last=drop_last)
        counts.append([len(labels) for _, labels, _ in dm.train_dataloader()])
    assert counts[0] == counts[1] == [64] * 11 + ([] if drop_last else [718 - 11 * 64])


def _ddp_shard(rank: int) -> dict:
    """This rank's indices of epoch 3 of a 25-sample EpochSampler under a real process group."""
    sampler = EpochSampler(25, seed=7)
    sampler.set_epoch(3)
    return {"indices": torch.tensor([i for _, i in sampler])}


def test_rank_shards_under_torch_distributed(tmp_path, monkeypatch):
    from tests.helpers.ddp import run_on_ranks

    shards = [result["indices"].tolist() for result in run_on_ranks(_ddp_shard, tmp_path)]
    assert shards == rank_shards(monkeypatch, 25, 2, seed=7, epoch=3)
    assert len(shards[0]) == len(shards[1]) == 12 and not set(shards[0]) & set(shards[1])


# --- data module ----------------------------------------------------------------------------------------

YAML_CONFIG = """
name: digits
root: unused
batch_size: 64
num_workers: 0
global_crops: {n: 2, size: 32, scale: [0.2, 1.0]}
local_crops: {n: 3, size: 16, scale: [0.05, 0.2]}
augment: {solarize_p: [0.0, 0.5]}
download: false
val_fraction: 0.2
pin_memory: false
persistent_workers: true
drop_last: true
seed: 0
"""


def test_datamodule_digits_batches_have_the_promised_structure():
    cfg = OmegaConf.create(YAML_CONFIG)  # what Hydra hands over: DictConfig / ListConfig values
    dm = SSLDataModule(**cfg)
    assert (dm.num_classes, dm.n_global, dm.n_crops) == (10, 2, 5)
    dm.setup("fit")
    train = dm.train_dataloader()
    assert len(train) == 1437 // 64
    crops, labels, indices = next(iter(train))
    assert isinstance(crops, list) and len(crops) == 5
    assert [tuple(c.shape) for c in crops] == [(64, 3, 32, 32)] * 2 + [(64, 3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in crops)
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert indices.shape == (64,) and indices.dtype == torch.int64 and len(set(indices.tolist())) == 64
    assert labels.tolist() == [dm.train_set.targets[i] for i in indices]  # indices locate the samples
    bank, val = dm.val_dataloader()
    assert len(bank.dataset) == 1437 and len(val.dataset) == 360
    for loader in (bank, val):
        images, labels = next(iter(loader))
        assert images.shape == (64, 3, 32, 32) and images.dtype == torch.float32 and labels.shape == (64,)
    assert not train.persistent_workers  # only with num_workers > 0


def test_datamodule_uses_the_dataset_recipe_with_yaml_overrides():
    overrides = {"solarize_p": [0.0, 0.5], "hflip_p": 0.0}
    views = SSLDataModule("cifar10", augment=overrides).train_transform.global_views
    assert views[1].probs == {
        "hflip": 0.0,
        "color_jitter": 0.8,
        "grayscale": 0.2,
        "blur": 0.0,
        "solarize": 0.5,
    }  # CIFAR recipe: no blur
    assert views[0].probs["solarize"] == 0.0
    imagenet = SSLDataModule(name="imagenet", global_crops={"n": 2, "size": 224}).train_transform.global_views
    assert [v.probs["blur"] for v in imagenet] == [1.0, 0.1]


def test_datamodule_on_image_folder(tmp_path):
    make_image_folder(tmp_path)
    dm = SSLDataModule(
        name="folder",
        root=str(tmp_path),
        batch_size=2,
        global_crops={"n": 2, "size": 16},
        local_crops={"n": 2, "size": 8},
    )
    assert dm.num_classes == 2
    crops, labels, indices = next(iter(dm.train_dataloader()))
    assert [tuple(c.shape) for c in crops] == [(2, 3, 16, 16)] * 2 + [(2, 3, 8, 8)] * 2
    assert labels.shape == indices.shape == (2,)
    bank, val = dm.val_dataloader()
    assert next(iter(val))[0].shape == (2, 3, 16, 16) and len(bank.dataset) == 6


def test_datamodule_batch_larger_than_train_split_is_an_error():
    with pytest.raises(ValueError, match="batch_size 5000") as excinfo:
        SSLDataModule(batch_size=5000).setup()
    message(excinfo)
