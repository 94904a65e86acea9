"""The DALI training loader against the torchvision one, its sharding and epoch length, and loader choice.

Without CUDA, DALI runs its CPU backend (the same pipeline, decoding on the CPU); only the checks
marked ``gpu`` need a GPU.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import kstest
from torchvision.datasets import ImageFolder

from sslib.app.datamodule import SSLDataModule
from sslib.data import Augment, CropGroup, dataset_stats
from sslib.data.loaders import choose_loader, dali_installed
from tests.helpers.probes import fit_recording

needs_dali = pytest.mark.skipif(not dali_installed(), reason="NVIDIA DALI is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

STATS = dataset_stats("folder")
CLASSES, PER_CLASS = ("a", "b", "c"), 8
CROPS = dict(global_crops={"n": 2, "size": 32}, local_crops={"n": 2, "size": 16, "scale": [0.05, 0.3]})
NO_COLOUR = dict(
    color_jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=[0.0],
    solarize_p=[0.0],
    local_blur_p=0.0,
    local_solarize_p=0.0,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """root/{train,val}/{a,b,c}/*.jpg: 8 train and 1 val JPEG per class, each one solid random colour,
    of varied sizes (a crop of any size or place has the image's colour)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("val", 1)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                colour = rng.integers(20, 236, size=3, dtype=np.uint8)
                pixels = np.broadcast_to(colour, (40 + 8 * (i % 3), 56 + 4 * i, 3))
                Image.fromarray(np.ascontiguousarray(pixels)).save(
                    root / split / cls / f"{i}.jpg", quality=95
                )
    return root


def datamodule(root, loader: str, **kwargs) -> SSLDataModule:
    return SSLDataModule(name="folder", root=str(root), batch_size=8, loader=loader, **{**CROPS, **kwargs})


def epochs(loader, n: int) -> list[list[tuple]]:
    """``n`` epochs of ``loader``, each the list of its batches (setting the epoch as Lightning does)."""
    batches = []
    for epoch in range(n):
        if hasattr(loader, "sampler"):  # torchvision: order and crops are functions of the epoch
            loader.sampler.set_epoch(epoch)
        batches.append(list(loader))
    return batches


def colours(root) -> torch.Tensor:
    """(N, 3) normalised colour of every train image, in ImageFolder order (decoded by PIL)."""
    samples = ImageFolder(str(root / "train")).samples
    rgb = torch.tensor(np.stack([np.asarray(Image.open(p).convert("RGB"))[0, 0] for p, _ in samples]))
    return (rgb.float() / 255 - torch.tensor(STATS.mean)) / torch.tensor(STATS.std)


# --- equivalence with the torchvision loader ----------------------------------------------------------


@needs_dali
def test_dali_batches_have_the_structure_of_the_torchvision_batches(root):
    dali, torchvision = datamodule(root, "dali"), datamodule(root, "torchvision")
    assert dali.loader == "dali" and torchvision.loader == "torchvision"
    batches = {name: next(iter(dm.train_dataloader())) for name, dm in (("dali", dali), ("tv", torchvision))}
    low = (0 - max(STATS.mean)) / min(STATS.std)
    high = (1 - min(STATS.mean)) / min(STATS.std)
    for crops, labels, indices in batches.values():
        assert [tuple(c.shape) for c in crops] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 2
        assert all(c.dtype == torch.float32 and low <= c.min() and c.max() <= high for c in crops)
        assert labels.dtype == indices.dtype == torch.int64 and labels.shape == indices.shape == (8,)
        assert len(set(indices.tolist())) == 8
        assert labels.tolist() == [dali.train_set.targets[i] for i in indices]


@needs_dali
def test_without_colour_ops_each_view_is_its_images_normalised_colour(root):
    """Solid images: every pixel of a view is the image's colour (RGB order, normalised, CHW)."""
    expected = colours(root)
    for loader in ("dali", "torchvision"):
        (batches,) = epochs(datamodule(root, loader, augment=NO_COLOUR).train_dataloader(), 1)
        for crops, _, indices in batches:
            for view in crops:
                pixels = view.flatten(2)  # (B, 3, S*S)
                assert torch.allclose(pixels.mean(2), expected[indices], atol=0.05), loader
                assert pixels.std(2).max() < 0.02, loader


@needs_dali
def test_augmented_views_have_the_channel_statistics_of_the_torchvision_views(root):
    """Colour jitter, grayscale and solarize at the recipe's probabilities move the per-channel mean and
    std of the views alike (they differ in detail: see sslib.data.dali)."""
    augment = {"solarize_p": [0.5, 0.5], "local_solarize_p": 0.5}  # a solarize on every view type
    stats = {}
    for loader in ("dali", "torchvision"):
        views = [
            c
            for epoch in epochs(datamodule(root, loader, augment=augment).train_dataloader(), 4)
            for crops, _, _ in epoch
            for c in crops
        ]
        pixels = torch.cat([v.transpose(0, 1).flatten(1) for v in views], dim=1)  # (3, all pixels)
        stats[loader] = pixels.mean(1), pixels.std(1)
    (dali_mean, dali_std), (tv_mean, tv_std) = stats["dali"], stats["torchvision"]
    assert torch.allclose(dali_mean, tv_mean, atol=0.15), (dali_mean, tv_mean)
    assert torch.allclose(dali_std, tv_std, atol=0.15), (dali_std, tv_std)


@pytest.fixture(scope="module")
def checkerboards(tmp_path_factory):
    """root/train/a/*.png (and one val image): 12x12 boards of 2x2 squares of grey levels 60 and 190,
    lossless, so any crop holds sharp edges and no level outside [60, 190]."""
    root = tmp_path_factory.mktemp("boards")
    squares = np.indices((12, 12)).sum(0) // 2 % 2
    board = np.repeat(np.where(squares, 190, 60).astype(np.uint8)[..., None], 3, axis=2)
    for split, n in (("train", 8), ("val", 1)):
        (root / split / "a").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(board).save(root / split / "a" / f"{i}.png")
    return root


def board_views(root, loader: str, **augment) -> torch.Tensor:
    """The first views of two epochs of the boards, (16, 3, 32, 32), in grey levels of 255."""
    dm = SSLDataModule(
        name="folder",
        root=str(root),
        batch_size=8,
        loader=loader,
        global_crops={"n": 1, "size": 32, "scale": [0.5, 1.0]},
        augment={**NO_COLOUR, "hflip_p": 0.0, **augment},
    )
    mean, std = torch.tensor(STATS.mean).view(3, 1, 1), torch.tensor(STATS.std).view(3, 1, 1)
    views = [crops[0].cpu() for epoch in epochs(dm.train_dataloader(), 2) for crops, _, _ in epoch]
    return (torch.cat(views) * std + mean) * 255


@pytest.mark.parametrize("loader", [pytest.param("dali", marks=needs_dali), "torchvision"])
def test_crops_are_resized_with_the_configured_interpolation(checkerboards, loader):
    """Upsampling a board: bicubic (Keys' kernel has negative lobes) overshoots the two levels at the
    edges; bilinear only mixes them, so every pixel stays in [60, 190]."""
    levels = {
        mode: board_views(checkerboards, loader, interpolation=mode) for mode in ("bicubic", "bilinear")
    }
    bicubic, bilinear = levels["bicubic"], levels["bilinear"]
    assert bilinear.min() >= 60 - 0.5 and bilinear.max() <= 190 + 0.5
    assert bicubic.min() < 60 - 3 and bicubic.max() > 190 + 3


@needs_dali
def test_both_loaders_blur_their_views_alike(checkerboards):
    """Blurring (sigma 1.5, where DALI's Gaussian and PIL's boxes agree) flattens the boards' squares by
    the same amount in both loaders: the pixels' spread about their view's mean falls alike."""
    spread = {}
    for loader in ("dali", "torchvision"):
        for blur_p in (0.0, 1.0):
            views = board_views(checkerboards, loader, blur_p=[blur_p], blur_sigma=[1.5, 1.5])
            spread[loader, blur_p] = views.flatten(1).std(1).mean().item()
    for loader in ("dali", "torchvision"):
        assert spread[loader, 1.0] < 0.7 * spread[loader, 0.0], spread
    assert spread["dali", 1.0] == pytest.approx(spread["torchvision", 1.0], rel=0.1), spread


@needs_dali
def test_dali_blur_is_a_whole_gaussian_with_sigma_uniform_in_the_configured_range():
    """An impulse blurred by the DALI blur is its kernel: a Gaussian sampled on |x| <= ceil(3 sigma),
    whose sigma (from two neighbouring taps) is uniform in ``blur_sigma`` (as PIL's radius, a std)."""
    from nvidia.dali import fn, pipeline_def

    from sslib.data.dali import blur

    low, high, batch = 0.3, 1.5, 128
    augment = Augment(blur_sigma=(low, high))
    impulse = np.zeros((15, 15, 1), np.float32)
    impulse[7, 7] = 1.0

    @pipeline_def(enable_conditionals=True, batch_size=batch, num_threads=1, device_id=None, seed=0)
    def pipeline():
        return blur(
            fn.external_source(source=lambda: [impulse] * batch, batch=True, layout="HWC"), augment, 1.0
        )

    pipe = pipeline()
    pipe.build()
    sigmas = []
    x = np.arange(-7, 8)
    for _ in range(2):
        for out in pipe.run()[0]:
            kernel = np.asarray(out)[..., 0]
            sigma = math.sqrt(-0.5 / math.log(kernel[7, 8] / kernel[7, 7]))
            gauss = np.where(np.abs(x) <= math.ceil(3 * sigma), np.exp(-0.5 * (x / sigma) ** 2), 0.0)
            gauss /= gauss.sum()
            assert np.abs(kernel - np.outer(gauss, gauss)).max() < 1e-6, sigma
            sigmas.append(sigma)
    assert low - 1e-4 <= min(sigmas) and max(sigmas) <= high + 1e-4
    assert kstest(sigmas, "uniform", args=(low, high - low)).pvalue > 0.01


# --- epochs and sharding ------------------------------------------------------------------------------


def dali_loader(root, batch_size: int, rank: int = 0, world: int = 1):
    from sslib.data.dali import DaliTrainLoader

    samples = ImageFolder(str(root / "train")).samples
    global_crops, local_crops = CropGroup(1, 16), CropGroup(1, 8, (0.05, 0.3))
    return DaliTrainLoader(
        samples,
        global_crops,
        local_crops,
        Augment(),
        STATS.mean,
        STATS.std,
        batch_size,
        rank=rank,
        world=world,
    )


@needs_dali
@pytest.mark.parametrize("batch_size", [4, 5])
def test_epoch_length_drops_the_tail_and_epochs_stay_aligned(root, batch_size):
    n = len(CLASSES) * PER_CLASS
    loader = dali_loader(root, batch_size)
    assert len(loader) == n // batch_size
    seen = []
    for epoch in epochs(loader, 3):
        assert len(epoch) == len(loader)
        indices = torch.cat([indices for _, _, indices in epoch]).tolist()
        assert len(set(indices)) == len(indices) == len(loader) * batch_size  # no sample twice in an epoch
        seen.append(indices)
    assert seen[0] != seen[1] != seen[2]  # reshuffled every epoch


def batch_indices(batches) -> list[list[int]]:
    return [indices.tolist() for _, _, indices in batches]


@needs_dali
@pytest.mark.parametrize(("batch_size", "read"), [(4, 2), (5, 1)])
def test_an_interrupted_epoch_is_finished_then_the_next_is_whole(root, batch_size, read):
    """Leaving an epoch after ``read`` batches: iterating again yields exactly that epoch's remaining
    batches, and the pass after it a whole new epoch with every sample once, batch for batch what a
    loader of the same seed read without interruption yields (5: the dropped tail is skipped too)."""
    uninterrupted = [batch_indices(epoch) for epoch in epochs(dali_loader(root, batch_size), 2)]
    loader = dali_loader(root, batch_size)
    interrupted = iter(loader)
    head = batch_indices(next(interrupted) for _ in range(read))
    rest = batch_indices(loader)
    assert head + rest == uninterrupted[0]
    following = batch_indices(loader)
    assert following == uninterrupted[1]
    samples = [i for batch in following for i in batch]
    assert len(samples) == len(set(samples)) == len(loader) * batch_size


@needs_dali
def test_two_ranks_read_disjoint_shards_of_the_same_length(root):
    n, batch_size = len(CLASSES) * PER_CLASS, 4
    ranks = [dali_loader(root, batch_size, rank=r, world=2) for r in range(2)]
    assert [len(loader) for loader in ranks] == [n // (batch_size * 2)] * 2
    covered = set()
    for epoch_0, epoch_1 in zip(*(epochs(loader, 2) for loader in ranks), strict=True):
        mine, theirs = ({int(i) for _, _, ids in epoch for i in ids} for epoch in (epoch_0, epoch_1))
        assert len(mine) == len(theirs) == len(ranks[0]) * batch_size and not mine & theirs
        covered |= mine | theirs
    assert len(covered) > n // 2 + 4  # the shards change with the epoch's permutation


@needs_dali
def test_lightning_trains_on_the_dali_loader(root):
    model, trainer = fit_recording(datamodule(root, "dali"))
    batches = len(CLASSES) * PER_CLASS // 8
    assert trainer.num_training_batches == batches
    assert [len(set(epoch)) for epoch in model.indices] == [batches * 8] * 2


@needs_dali
@needs_cuda
@pytest.mark.gpu
def test_dali_decodes_on_the_gpu_when_cuda_is_present(root):
    dm = datamodule(root, "auto")
    assert dm.loader == "dali"
    crops, labels, indices = next(iter(dm.train_dataloader()))
    assert all(c.is_cuda for c in crops) and not labels.is_cuda and not indices.is_cuda


# --- loader choice ------------------------------------------------------------------------------------


def message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def test_auto_picks_dali_only_for_image_folders_with_cuda_and_dali(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_loader("auto", "imagenet") == "torchvision"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_loader("auto", "cifar10") == "torchvision"
    assert choose_loader("auto", "folder") == ("dali" if dali_installed() else "torchvision")
    assert choose_loader("torchvision", "imagenet") == "torchvision"


def test_dali_missing_is_one_line_saying_what_to_install(root, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # "import nvidia.dali" now raises ImportError
    assert not dali_installed()
    with pytest.raises(ValueError) as excinfo:
        datamodule(root, "dali")
    assert "pip install 'sslib-vision[dali]'" in message(excinfo)
    assert datamodule(root, "auto").loader == "torchvision"


@pytest.mark.parametrize(
    ("loader", "name", "match"),
    [("dali", "cifar10", "reads image folders"), ("nvidia", "folder", "available: auto, torchvision, dali")],
)
def test_bad_loader_choices_are_one_line_errors(loader, name, match):
    with pytest.raises(ValueError, match=match) as excinfo:
        choose_loader(loader, name)
    message(excinfo)
