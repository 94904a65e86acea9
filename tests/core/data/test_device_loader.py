"""The on-device loader (``data.loader=device``) against the torchvision path: crop geometry, the same
pixels for the same parameters, per-view parameter distributions, per-channel statistics, order and
resume, sharding over two gloo processes, the memory check and loader choice."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest, chisquare, kstest
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from sslib.app.builders import augment_preset
from sslib.app.datamodule import SSLDataModule
from sslib.data import Augment, CropGroup, batched, dataset_stats, device
from sslib.data.batch_transform import NO_OP, BatchMultiCrop, BatchViewTransform
from sslib.data.kernels import adjust_hue, pil_gaussian_blur
from sslib.data.keyed_random import keyed_uniform
from sslib.data.loaders import choose_loader
from sslib.data.transforms import ASPECT_RATIO, INTERPOLATIONS, SOLARIZE_THRESHOLD
from tests.helpers.ddp import run_on_ranks
from tests.helpers.probes import fit_recording

pytestmark = pytest.mark.usefixtures("one_thread")

STATS = dataset_stats("folder")
EVERY_OP = Augment(blur_p=(1.0, 0.5), solarize_p=(0.0, 0.5), local_blur_p=0.5, local_solarize_p=0.3)
CROPS = dict(global_crops={"n": 2, "size": 32}, local_crops={"n": 2, "size": 16, "scale": [0.05, 0.3]})


def message(excinfo: pytest.ExceptionInfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def smooth_images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, H, W): colour gradients and noise, so crops and colour ops change the pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)[None, :, None]
    images = []
    for _ in range(n):
        tint, phase = rng.random((2, 3))
        base = 0.4 * y * tint + 0.3 * x + 0.25 * np.sin(9 * x * tint + 7 * y + 6 * phase) + 0.2
        images.append(255 * np.clip(base + 0.08 * rng.standard_normal((height, width, 3)), 0, 1))
    return torch.from_numpy(np.stack(images).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/{train,val}/{a,b}/*.png: 32 train images of 32x32 per class (lossless), 2 val."""
    root = tmp_path_factory.mktemp("folder32")
    for split, n in (("train", 32), ("val", 2)):
        images = smooth_images(2 * n, seed=len(split))
        for i, image in enumerate(images):
            path = root / split / "ab"[i % 2] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    return root


def datamodule(root, loader: str, **kwargs) -> SSLDataModule:
    return SSLDataModule(name="folder", root=str(root), loader=loader, **{"batch_size": 8, **CROPS, **kwargs})


# --- keyed random numbers ------------------------------------------------------------------------------


def test_keyed_uniforms_depend_on_the_key_alone_and_are_uniform():
    index = torch.arange(4000)
    u = keyed_uniform(3, 1, index, 0, 2)
    shuffled = torch.randperm(4000)
    assert torch.equal(keyed_uniform(3, 1, index[shuffled], 0, 2), u[shuffled])  # not the batch's order
    assert torch.equal(keyed_uniform(3, 1, index[:10], 0, 2), u[:10])  # nor its size
    for other in ((4, 1, 0), (3, 2, 0), (3, 1, 1)):  # seed, epoch, stream
        seed, epoch, stream = other
        assert (keyed_uniform(seed, epoch, index, stream, 2) != u).float().mean() > 0.99
    assert u.min() >= 0 and u.max() < 1
    assert kstest(u.flatten().numpy(), "uniform").pvalue > 0.01
    assert abs(np.corrcoef(u[:, 0].numpy(), u[:, 1].numpy())[0, 1]) < 0.05


# --- geometry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width", "scale"), [(32, 32, (0.08, 1.0)), (32, 32, (0.05, 0.3)), (24, 40, (0.5, 1.0))]
)
def test_crop_boxes_follow_torchvisions_random_resized_crop(height, width, scale):
    n = 3000
    u = keyed_uniform(0, 0, torch.arange(n), 0, 2 * batched.CROP_ATTEMPTS + 2)
    ours = batched.crop_boxes(u, height, width, scale, tuple(ASPECT_RATIO)).numpy()
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = np.array([RandomResizedCrop.get_params(image, list(scale), ASPECT_RATIO) for _ in range(n)])
    assert (ours[:, 2:] > 0).all() and (ours[:, 0] + ours[:, 2] <= height).all()
    assert (ours[:, 1] + ours[:, 3] <= width).all()
    for name, column in {
        "area": lambda b: b[:, 2] * b[:, 3],
        "aspect": lambda b: b[:, 3] / b[:, 2],
        "top": lambda b: b[:, 0] / np.maximum(height - b[:, 2], 1),
        "left": lambda b: b[:, 1] / np.maximum(width - b[:, 3], 1),
    }.items():
        assert kstest(column(ours), column(theirs)).pvalue > 0.001, name


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("height", "width", "size"), [(32, 32, 32), (32, 32, 16), (24, 40, 28)])
def test_resized_crops_are_torchvisions_to_rounding(interpolation, height, width, size):
    """Same boxes and flips: the pixels of torchvision's antialiased resized_crop of uint8 images
    (which rounds after each axis, in fixed point), to 2 of 255 levels, nearly all equal."""
    n = 64
    images = smooth_images(n, height, width)
    u = keyed_uniform(0, 0, torch.arange(n), 0, 2 * batched.CROP_ATTEMPTS + 2)
    boxes = batched.crop_boxes(u, height, width, (0.08, 1.0), tuple(ASPECT_RATIO))
    flip = torch.arange(n) % 2 == 1
    ours = batched.resized_crop(images, boxes, size, interpolation, flip) * 255
    theirs = []
    for image, (top, left, h, w), mirrored in zip(images, boxes.tolist(), flip, strict=True):
        view = TF.resized_crop(
            image, top, left, h, w, [size, size], INTERPOLATIONS[interpolation], antialias=True
        )
        theirs.append(TF.horizontal_flip(view) if mirrored else view)
    diff = (ours - torch.stack(theirs).float()).abs()
    assert diff.max() <= 2 + 1e-3 and (diff > 0.5).float().mean() < 0.08, (
        diff.max(),
        (diff > 0.5).float().mean(),
    )


def test_blur_matrix_is_pils_box_blur():
    views = torch.rand(20, 3, 16, 16)
    sigma = torch.linspace(0.1, 2.0, 20, dtype=torch.float64)
    ours = batched.blur(views, sigma, batched.box_reach(2.0))
    theirs = torch.stack([pil_gaussian_blur(v, s.item()) for v, s in zip(views, sigma, strict=True)])
    assert torch.allclose(ours, theirs, atol=1e-5)


# --- the same parameters give torchvision's pixels ----------------------------------------------------


JITTER_KERNELS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, adjust_hue)


def reference_view(crop: torch.Tensor, p, b: int, view: BatchViewTransform) -> torch.Tensor:
    """Sample ``b``'s view by ``ViewTransform``'s torchvision kernels, one image at a time, from its crop."""
    x = crop
    if p.jitter[b]:
        for op in p.order[b].tolist():
            if view.ranges[op][0] != view.ranges[op][1]:
                x = JITTER_KERNELS[op](x, p.factors[b, op].item())
    if p.gray[b]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if p.blur[b] and view.blur_p > 0:
        x = pil_gaussian_blur(x, p.sigma[b].item())
    if p.solarize[b] and view.solarize_p > 0:
        x = TF.solarize(x, SOLARIZE_THRESHOLD)
    return TF.normalize(x, list(STATS.mean), list(STATS.std))


@pytest.mark.parametrize("augment", [EVERY_OP, augment_preset("digits")], ids=["every_op", "digits"])
def test_batched_views_are_the_torchvision_ops_with_the_same_parameters(augment):
    n = 96
    images = smooth_images(n)
    view = BatchViewTransform(CropGroup(2, 32), augment, 0.5, 0.5, STATS.mean, STATS.std, stream=1)
    p = view.params(0, 2, torch.arange(n), 32, 32)
    ours = view(images, p)
    crops = batched.resized_crop(images, p.boxes, 32, augment.interpolation, p.flip)
    theirs = torch.stack([reference_view(crops[b], p, b, view) for b in range(n)])
    assert torch.allclose(ours, theirs, atol=2e-5), (ours - theirs).abs().max()
    assert p.jitter.any() and p.gray.any() or augment.grayscale_p == 0


# --- per-view parameter distributions ------------------------------------------------------------------


def view_params(n: int = 4000):
    """The parameters of every view of ``n`` samples under EVERY_OP (2 global, 2 local views)."""
    multicrop = BatchMultiCrop(
        CropGroup(2, 32), CropGroup(2, 16, (0.05, 0.3)), EVERY_OP, STATS.mean, STATS.std
    )
    return multicrop.views, [v.params(0, 0, torch.arange(n), 32, 32) for v in multicrop.views]


def test_each_views_probabilities_are_its_own():
    views, params = view_params()
    expected = [(1.0, 0.0), (0.5, 0.5), (0.5, 0.3), (0.5, 0.3)]
    for view, p, (blur_p, solarize_p) in zip(views, params, expected, strict=True):
        assert (view.blur_p, view.solarize_p) == (blur_p, solarize_p)
        for name, prob in {
            "flip": EVERY_OP.hflip_p,
            "jitter": EVERY_OP.color_jitter_p,
            "gray": EVERY_OP.grayscale_p,
            "blur": blur_p,
            "solarize": solarize_p,
        }.items():
            hits = int(getattr(p, name).sum())
            if prob in (0.0, 1.0):
                assert hits == prob * len(p.flip), name
            else:
                assert binomtest(hits, len(p.flip), prob).pvalue > 0.001, (name, hits, prob)
    views_flipped = torch.stack([p.flip for p in params]).float()
    assert abs(np.corrcoef(views_flipped.numpy())[0, 1]) < 0.06  # the views draw independently


def test_jitter_factors_order_and_blur_sigma_follow_their_ranges():
    views, params = view_params()
    view, p = views[0], params[0]
    for op, (low, high) in enumerate(view.ranges):
        factors = p.factors[:, op].numpy()
        assert kstest(factors, "uniform", args=(low, high - low)).pvalue > 0.001, op
    orders = Counter(tuple(row) for row in p.order.tolist())
    assert len(orders) == math.factorial(4) and chisquare(list(orders.values())).pvalue > 0.001
    low, high = EVERY_OP.blur_sigma
    assert kstest(p.sigma.numpy(), "uniform", args=(low, high - low)).pvalue > 0.001


# --- the loader -----------------------------------------------------------------------------------------


def epochs(loader, n: int, start: int = 0) -> list[list[tuple]]:
    batches = []
    for epoch in range(start, start + n):
        loader.sampler.set_epoch(epoch)
        batches.append(list(loader))
    return batches


def test_device_batches_have_the_torchvision_batches_order_structure_and_statistics(folder):
    """The same samples in the same batches; per-channel mean and std of all views over 4 epochs alike
    (blur and solarize on every view type)."""
    augment = {"solarize_p": [0.5, 0.5], "local_solarize_p": 0.5, "blur_p": [0.5]}
    stats = {}
    for loader in ("device", "torchvision"):
        dm = datamodule(folder, loader, augment=augment)
        assert dm.loader == loader
        batches = [b for epoch in epochs(dm.train_dataloader(), 4) for b in epoch]
        stats[loader] = batches
    for (ours, labels, indices), (theirs, their_labels, their_indices) in zip(*stats.values(), strict=True):
        assert torch.equal(indices, their_indices) and torch.equal(labels, their_labels)
        assert [(c.shape, c.dtype) for c in ours] == [(c.shape, c.dtype) for c in theirs]
        assert labels.dtype == indices.dtype == torch.int64
    moments = {}
    for loader, batches in stats.items():
        for group, views in (("global", slice(0, 2)), ("local", slice(2, 4))):
            pixels = torch.cat(
                [v.transpose(0, 1).flatten(1) for crops, _, _ in batches for v in crops[views]], 1
            )
            moments[loader, group] = torch.stack([pixels.mean(1), pixels.std(1)])
    for group in ("global", "local"):
        # Two seeds of the torchvision loader differ by up to 0.07 here (64 images, 4 epochs).
        assert torch.allclose(moments["device", group], moments["torchvision", group], atol=0.12), moments


def test_a_resumed_epoch_continues_with_the_same_batches_and_crops(folder):
    whole = datamodule(folder, "device", seed=3)
    whole.start_epoch = 1
    (uninterrupted,) = epochs(whole.train_dataloader(), 1, start=1)
    resumed = datamodule(folder, "device", seed=3)
    resumed.start_epoch, resumed.start_batch = 1, 3
    rest = list(resumed.train_dataloader())
    assert len(rest) == len(uninterrupted) - 3 and len(resumed.train_dataloader()) == len(uninterrupted)
    for (crops, _, indices), (their_crops, _, their_indices) in zip(rest, uninterrupted[3:], strict=True):
        assert torch.equal(indices, their_indices)
        assert all(torch.equal(a, b) for a, b in zip(crops, their_crops, strict=True))


def test_crops_do_not_depend_on_the_cpu_threads_splitting_a_batch():
    images, targets = smooth_images(16), torch.zeros(16, dtype=torch.int64)
    transform = BatchMultiCrop(CropGroup(2, 32), None, EVERY_OP, STATS.mean, STATS.std)
    one, three = (
        list(device.DeviceTrainLoader(images, targets, transform, 8, seed=1, threads=t)) for t in (1, 3)
    )
    for (a, _, ia), (b, _, ib) in zip(one, three, strict=True):
        assert torch.equal(ia, ib) and all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))


def test_making_a_batch_on_its_device_reads_nothing_back_from_it():
    # Meta tensors have no values: any read of one (.tolist(), .nonzero(), bool(t)) raises, as a read
    # from a GPU would wait for its queue. Only the parameters' host part (counts) is read, on the CPU.
    images = smooth_images(8)
    transform = BatchMultiCrop(
        CropGroup(2, 32), CropGroup(2, 16, (0.05, 0.3)), EVERY_OP, STATS.mean, STATS.std
    )
    loader = device.DeviceTrainLoader(images.to("meta"), torch.zeros(8, dtype=torch.int64), transform, 4)
    crops, labels, index = next(iter(loader))
    assert [c.shape for c in crops] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2
    assert all(c.device.type == "meta" for c in crops) and index.device.type == "cpu"
    p = transform.views[0].params(0, 0, index, 32, 32)
    expected_steps = torch.where(p.jitter.unsqueeze(1), p.order, NO_OP)  # every op has a spread here
    assert torch.equal(p.steps, expected_steps)
    assert p.counts == [torch.bincount(s, minlength=NO_OP + 1).tolist() for s in p.steps.T]
    assert torch.equal(p.blurred, p.blur.nonzero().squeeze(1))
    moved = p.to(torch.device("meta"))
    assert moved.counts == p.counts and moved.boxes.device.type == "meta"
    assert p.to(torch.device("cpu")).boxes is p.boxes


def test_lightning_trains_on_the_device_loader_in_the_torchvision_order(folder):
    model, _ = fit_recording(datamodule(folder, "device"))
    expected = [
        [i for _, _, ids in epoch for i in ids.tolist()]
        for epoch in epochs(datamodule(folder, "torchvision").train_dataloader(), 2)
    ]
    assert model.indices == expected and expected[0] != expected[1]


# --- two ranks ------------------------------------------------------------------------------------------


N_SHARDED, BATCH_SHARDED = 48, 6


def shard_batches(rank: int) -> dict[str, torch.Tensor]:
    """This rank's indices and first crops of two epochs of the device loader (run under gloo)."""
    images = smooth_images(N_SHARDED)
    transform = BatchMultiCrop(CropGroup(1, 16), None, EVERY_OP, STATS.mean, STATS.std)
    loader = device.DeviceTrainLoader(
        images, torch.zeros(N_SHARDED, dtype=torch.int64), transform, BATCH_SHARDED
    )
    out = {"length": torch.tensor(len(loader))}
    for epoch in range(2):
        batches = epochs(loader, 1, start=epoch)[0]
        out[f"indices{epoch}"] = torch.cat([ids for _, _, ids in batches])
        out[f"crops{epoch}"] = torch.cat([crops[0] for crops, _, _ in batches])
    return out


def test_two_ranks_take_disjoint_shards_covering_the_epoch_with_single_process_crops(tmp_path_factory):
    ranks = run_on_ranks(shard_batches, tmp_path_factory.mktemp("device_ddp"))
    images = smooth_images(N_SHARDED)
    transform = BatchMultiCrop(CropGroup(1, 16), None, EVERY_OP, STATS.mean, STATS.std)
    for epoch in range(2):
        mine, theirs = (r[f"indices{epoch}"] for r in ranks)
        assert len(mine) == len(theirs) == N_SHARDED // 2 and not set(mine.tolist()) & set(theirs.tolist())
        assert sorted(mine.tolist() + theirs.tolist()) == list(range(N_SHARDED))
        for r in ranks:  # a sample's crop is the one a single process makes: keyed by (seed, epoch, index)
            index = r[f"indices{epoch}"]
            (alone,) = transform(images[index], 0, epoch, index)
            assert torch.allclose(r[f"crops{epoch}"], alone, atol=1e-5)
    assert [int(r["length"]) for r in ranks] == [N_SHARDED // 2 // BATCH_SHARDED] * 2
    assert not torch.equal(ranks[0]["indices0"], ranks[0]["indices1"])


# --- bad input and loader choice ------------------------------------------------------------------------


def test_a_dataset_too_large_for_the_device_is_one_line_with_the_sizes(folder, monkeypatch):
    monkeypatch.setattr(device, "free_bytes", lambda _: 50_000)
    with pytest.raises(ValueError, match="data.loader=device") as excinfo:
        datamodule(folder, "device").setup()
    text = message(excinfo)
    assert "64 training images of folder take 0.00 GiB" in text and "use data.loader=torchvision" in text
    with pytest.raises(ValueError, match=r"take 2\.00 GiB as uint8, more than the 1\.00 GiB free on cpu"):
        device.check_fits("cifar10", 10, 2 * device.GIB, torch.device("cpu"), free=device.GIB)


def test_images_of_different_sizes_are_one_line(folder, tmp_path):
    for split in ("train", "val"):
        for cls, size in (("a", (32, 32)), ("b", (30, 32))):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", size).save(tmp_path / split / cls / "0.png")
    with pytest.raises(ValueError, match="needs images of one size") as excinfo:
        datamodule(tmp_path, "device", batch_size=2).setup()
    assert "30x32" in message(excinfo)


def test_the_digits_load_into_memory_as_they_are():
    dm = SSLDataModule("digits", batch_size=32, loader="device")
    dm.setup()
    assert torch.equal(dm.train_images, dm.train_set.images)
    crops, labels, indices = next(iter(dm.train_dataloader()))
    assert [tuple(c.shape) for c in crops] == [(32, 3, 32, 32)] * 2
    assert labels.tolist() == [dm.train_set.targets[i] for i in indices]


def test_cifar_arrays_become_channels_first_tensors():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)  # CIFAR's (N, H, W, C)
    cifar = SimpleNamespace(data=pixels)
    images = device.uint8_images(cifar)
    assert images.shape == (5, 3, 32, 32) and device.uint8_bytes(cifar) == images.numel()
    assert torch.equal(images[3], TF.pil_to_tensor(Image.fromarray(pixels[3])))


def test_auto_never_picks_the_device_loader(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (
        choose_loader("auto", "cifar10") == "torchvision" and choose_loader("auto", "digits") == "torchvision"
    )
    assert choose_loader("device", "cifar100") == "device"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_crops_are_made_on_the_gpu_as_on_the_cpu():
    dm = SSLDataModule("digits", batch_size=32, loader="device")
    crops, labels, indices = next(iter(dm.train_dataloader()))
    assert all(c.is_cuda for c in crops) and not labels.is_cuda and not indices.is_cuda
    transform = BatchMultiCrop(*dm.crops, dm.stats.mean, dm.stats.std)
    on_cpu = transform(dm.train_set.images[indices], dm.seed, 0, indices)
    for gpu, cpu in zip(crops, on_cpu, strict=True):  # the same parameters; a rounding may flip a level
        diff = (gpu.cpu() - cpu).abs()
        assert (diff > 1e-3).float().mean() < 0.01 and diff.max() < 0.1, diff.max()
