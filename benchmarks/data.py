"""Images per second of the multi-crop training pipeline, without a network, against a plain baseline.

    python benchmarks/data.py                              # ImageNet-style 2x224 + 6x96 and CIFAR 2x32
    python benchmarks/data.py --presets imagenet --images 1024 --workers 8 --batch-size 64

Each preset runs on generated data in a temporary folder (offline): JPEGs of ``--image-size`` in an
ImageFolder tree, or a CIFAR-10 archive folder of random 32x32 images. Loaders, in the same run:

- ``baseline``: ``torchvision.datasets.ImageFolder`` (or ``CIFAR10``) + one ``transforms.Compose`` of
  the classic PIL transforms per view, with the same augmentations and probabilities, in a shuffled
  ``DataLoader`` with the same workers, batch size and ``pin_memory``;
- ``sslib``: ``SSLDataModule(loader="torchvision").train_dataloader()``;
- ``dali``: ``SSLDataModule(loader="dali")`` for image folders when DALI is installed (decoding on the
  GPU when CUDA is present, on the CPU otherwise).

Each loader first serves ``--warmup`` batches (worker start-up), then ``--batches`` are timed. A round
times every loader once, back to back (``paired.run_rounds``); over ``--repeats`` rounds the table shows each
loader's median images/s and the median of its per-round ratio to the baseline, and the verdict (sslib's
loader >= 1x the baseline) sets the exit status (1 on a FAIL, unless ``--no-fail``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torchvision
from PIL import Image, ImageFilter
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import CIFAR10, ImageFolder

from sslib.app.builders import augment_preset
from sslib.app.datamodule import SSLDataModule
from sslib.data import dataset_stats
from sslib.data.loaders import dali_installed
from sslib.data.transforms import INTERPOLATIONS, Augment, CropGroup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py, also when imported by path
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds  # noqa: E402

CLASSES = 4
PRESETS = {  # name: (dataset, global crops, local crops, augment preset)
    "imagenet": ("folder", CropGroup(2, 224), CropGroup(6, 96, (0.05, 0.14)), "imagenet"),
    "cifar": ("cifar10", CropGroup(2, 32), None, "cifar"),
}
SSLIB_MIN_RATIO = 1.0  # target: sslib's torchvision loader serves at least the baseline's images/s


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3): colour gradients, a few waves and noise, roughly photo-like for JPEG."""
    y, x = np.linspace(0, 1, height)[:, None, None], np.linspace(0, 1, width)[None, :, None]
    tint, phase = rng.random((2, 3))
    base = 0.35 * y + 0.35 * x * tint + 0.2 * np.sin(12 * x * tint + 9 * y + 6 * phase) + 0.25
    return (255 * np.clip(base + 0.05 * rng.standard_normal((height, width, 3)), 0, 1)).astype(np.uint8)


def make_image_folder(root: Path, n: int, size: tuple[int, int]) -> None:
    """root/{train,val}/c<k>/*.jpg: ``n`` train JPEGs of ``size`` (width, height), one val JPEG a class."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", CLASSES)):
        for i in range(count):
            folder = root / split / f"c{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(smooth_image(rng, size[1], size[0])).save(folder / f"{i}.jpg", quality=90)


def make_cifar(root: Path, n: int) -> None:
    """A CIFAR-10 archive folder (``cifar-10-batches-py``) of ``n`` random train images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, count in zip(files, [n // 5] * 5 + [CLASSES], strict=True):
        images = np.stack([smooth_image(rng, 32, 32) for _ in range(count)])
        data = images.transpose(0, 3, 1, 2).reshape(count, -1)
        entry = {"data": data, "labels": [i % 10 for i in range(count)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))


def no_checksums():
    """The generated CIFAR files cannot match torchvision's MD5 sums: skip the check."""
    return mock.patch("torchvision.datasets.cifar.check_integrity", return_value=True)


class BaselineMultiCrop:
    """One classic ``transforms.Compose`` (PIL ops, then ``ToTensor`` + ``Normalize``) per view."""

    def __init__(self, global_crops: CropGroup, local_crops: CropGroup | None, aug: Augment, stats) -> None:
        probs = aug.global_probs(global_crops.n)
        if local_crops is not None:
            probs += [(aug.local_blur_p, aug.local_solarize_p)] * local_crops.n
        groups = [global_crops] * global_crops.n + [local_crops] * (len(probs) - global_crops.n)
        self.views = [
            self.view(g, aug, blur, sol, stats) for g, (blur, sol) in zip(groups, probs, strict=True)
        ]

    @staticmethod
    def view(crop: CropGroup, aug: Augment, blur_p: float, solarize_p: float, stats) -> T.Compose:
        jitter = T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue)
        return T.Compose(
            [
                T.RandomResizedCrop(
                    crop.size, scale=crop.scale, interpolation=INTERPOLATIONS[aug.interpolation]
                ),
                T.RandomHorizontalFlip(aug.hflip_p),
                T.RandomApply([jitter], p=aug.color_jitter_p),
                T.RandomGrayscale(aug.grayscale_p),
                T.RandomApply([PilBlur(aug.blur_sigma)], p=blur_p),
                T.RandomSolarize(128, p=solarize_p),
                T.ToTensor(),
                T.Normalize(stats.mean, stats.std),
            ]
        )

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        return [view(image) for view in self.views]


class PilBlur:
    """PIL's ``GaussianBlur`` of radius ``U(*sigma)``, as the MIRA, DINO and solo-learn transforms blur."""

    def __init__(self, sigma: tuple[float, float]) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.filter(ImageFilter.GaussianBlur(random.uniform(*self.sigma)))


def baseline_loader(preset: str, root: Path, args) -> DataLoader:
    name, global_crops, local_crops, recipe = PRESETS[preset]
    transform = BaselineMultiCrop(global_crops, local_crops, augment_preset(recipe), dataset_stats(name))
    if name == "cifar10":
        with no_checksums():
            dataset = CIFAR10(str(root), train=True, transform=transform)
    else:
        dataset = ImageFolder(str(root / "train"), transform=transform)
    return DataLoader(
        dataset,
        batch_size=batch_size(preset, args),
        shuffle=True,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        drop_last=True,
    )


def sslib_loader(preset: str, root: Path, args, loader: str) -> Iterable:
    name, global_crops, local_crops, _ = PRESETS[preset]
    dm = SSLDataModule(
        name=name,
        root=str(root),
        batch_size=batch_size(preset, args),
        num_workers=args.workers,
        global_crops=global_crops,
        local_crops=local_crops,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=True,
        loader=loader,
    )
    with no_checksums():
        return dm.train_dataloader()


def batch_size(preset: str, args) -> int:
    return args.batch_size if preset == "imagenet" else args.cifar_batch_size


def forever(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def seconds_per_image(loader: Iterable, warmup: int, batches: int) -> float:
    """Wall time per image of ``batches`` batches, after ``warmup`` untimed ones (worker start-up)."""
    stream = forever(loader)
    for _ in range(warmup):
        next(stream)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(stream)[1])  # (crops, labels[, indices])
    return (time.perf_counter() - start) / images


def run_preset(preset: str, args) -> list[dict]:
    """One row per loader: median images/s and the paired ratio of its speed to the baseline's."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if preset == "imagenet":
            make_image_folder(root, args.images, args.image_size)
        else:
            make_cifar(root, args.cifar_images)
        loaders = {
            "baseline": lambda: baseline_loader(preset, root, args),
            "sslib": lambda: sslib_loader(preset, root, args, "torchvision"),
        }
        if preset == "imagenet" and dali_installed():
            device = "gpu" if torch.cuda.is_available() else "cpu"
            loaders[f"dali ({device})"] = lambda: sslib_loader(preset, root, args, "dali")
        measures = {
            label: lambda build=build: seconds_per_image(build(), args.warmup, args.batches)
            for label, build in loaders.items()
        }
        per_image = run_rounds(measures, args.repeats)
        return [
            {
                "loader": label,
                "images_s": median([1 / s for s in values]),
                "ratio": paired_ratio(per_image["baseline"], values),  # baseline time / this loader's time
            }
            for label, values in per_image.items()
        ]


def describe(preset: str, args) -> str:
    _, global_crops, local_crops, _ = PRESETS[preset]
    crops = f"{global_crops.n}x{global_crops.size}"
    if local_crops is not None:
        crops += f"+{local_crops.n}x{local_crops.size}"
    if preset == "imagenet":
        width, height = args.image_size
        data = f"{args.images} JPEGs {width}x{height}"
    else:
        data = f"{args.cifar_images} images 32x32 in memory"
    return f"{preset} {crops}, {data}, batch {batch_size(preset, args)}"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the verdicts; return the exit status (1 when a verdict fails, see ``--no-fail``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="imagenet,cifar", help="comma-separated: imagenet, cifar")
    parser.add_argument("--images", type=int, default=192, help="ImageNet-style train JPEGs")
    parser.add_argument("--image-size", default="500x375", help="WIDTHxHEIGHT of the JPEGs")
    parser.add_argument("--cifar-images", type=int, default=5120)
    parser.add_argument("--batch-size", type=int, default=16, help="ImageNet-style batch")
    parser.add_argument("--cifar-batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, DALI threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--batches", type=int, default=8, help="timed batches")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each timing every loader once")
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    args.image_size = tuple(int(v) for v in args.image_size.split("x"))
    torch.set_num_threads(1)  # the main process only collects batches

    versions = f"torch {torch.__version__}, torchvision {torchvision.__version__}"
    if dali_installed():
        import nvidia.dali

        versions += f", DALI {nvidia.dali.__version__}"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"{cpu_name()} ({os.cpu_count()} cores), {args.workers} workers; {device}; {versions}")
    print("| preset | loader | images/s | x baseline |\n|---|---|---:|---:|")
    verdicts = []
    for preset in args.presets.split(","):
        for row in run_preset(preset, args):
            print(
                f"| {describe(preset, args)} | {row['loader']} | {row['images_s']:.1f} | {row['ratio']:.2f} |",
                flush=True,
            )
            if row["loader"] == "sslib":
                subject = f"{describe(preset, args)}: sslib"
                verdicts.append(
                    Verdict(subject, row["ratio"], "the baseline's images/s", at_least=SSLIB_MIN_RATIO)
                )
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
