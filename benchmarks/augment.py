"""Images per second of multi-crop augmentation of in-memory CIFAR-shaped data: the on-device loader and
the candidates it was chosen from, against sslib's torchvision loader with worker processes.

    python benchmarks/augment.py                        # 2 workers / threads, batches of 256, 2x32 crops
    python benchmarks/augment.py --device cuda --workers 8   # on a GPU machine: torchvision keeps 8 CPU workers

Every case makes the CIFAR recipe's two 32x32 views (``augment_preset("cifar")``) of batches of
``--batch-size`` images drawn from ``--images`` generated 32x32 images, on the CPU (or the GPU with
``--device cuda``):

- ``torchvision``: ``SSLDataModule(loader="torchvision")`` with ``--workers`` worker processes
  (PIL-free per-image torchvision kernels, the reference path);
- ``device``: ``SSLDataModule(loader="device")``, sslib's batched torch ops (``sslib.data.batch_transform``),
  on the CPU each batch split over ``--workers`` Python threads of one torch thread each;
- ``kornia``: ``kornia.augmentation`` ops with the same probabilities and ranges, one
  ``AugmentationSequential`` per view, on the same uint8 tensor (when kornia is installed), each batch
  split over the threads as ``device`` does (on 32x32 images torch's own threading makes these small
  ops slower: 2 threads ran at half the speed of 1 on the 2-core machine of docs/benchmarks.md);
- ``dali``: sslib's DALI view ops (``sslib.data.dali``) fed by an external source of the same images,
  ``--workers`` threads (when DALI is installed).

Each case first makes ``--warmup`` batches, then ``--batches`` are timed; a round times every case once,
back to back (``paired.run_rounds``), and the table shows each case's median images/s over ``--repeats``
rounds and the median of its per-round speed ratio to ``torchvision``. The verdict: ``device`` at least
1x the torchvision loader's images/s on the CPU, 2x with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from sslib.app.builders import augment_preset
from sslib.app.datamodule import SSLDataModule
from sslib.data import dataset_stats
from sslib.data.device import split_over_threads
from sslib.data.loaders import dali_installed
from sslib.data.transforms import ASPECT_RATIO, CropGroup, view_specs

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py and data.py
from data import cpu_name, make_cifar, no_checksums  # noqa: E402
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds  # noqa: E402

CROPS = CropGroup(2, 32)
# Targets: the on-device loader not slower than the torchvision loader on the CPU, 2x faster on a GPU.
DEVICE_MIN_RATIO = {"cpu": 1.0, "cuda": 2.0}
STATS = dataset_stats("cifar10")


def loader_batches(root: Path, loader: str, args) -> Iterator:
    """Endless training batches of ``SSLDataModule(name="cifar10", loader=loader)`` on the generated data."""
    dm = SSLDataModule(
        name="cifar10",
        root=str(root),
        batch_size=args.batch_size,
        num_workers=args.workers if loader == "torchvision" else 0,
        global_crops=CROPS,
        persistent_workers=True,
        loader=loader,
    )
    with no_checksums():
        train = dm.train_dataloader()
    while True:
        yield from train


def kornia_batches(images: torch.Tensor, args) -> Iterator:
    """Endless batches of the two views made by ``kornia.augmentation`` from random samples of ``images``."""
    import kornia.augmentation as K

    aug = augment_preset("cifar")
    mean, std = torch.tensor(STATS.mean), torch.tensor(STATS.std)

    def view(crop: CropGroup, blur_p: float, solarize_p: float) -> K.AugmentationSequential:
        ops = [
            K.RandomResizedCrop(
                (crop.size, crop.size),
                scale=crop.scale,
                ratio=tuple(ASPECT_RATIO),
                resample=aug.interpolation.upper(),
            ),
            K.RandomHorizontalFlip(p=aug.hflip_p),
            K.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue, p=aug.color_jitter_p),
            K.RandomGrayscale(p=aug.grayscale_p),
        ]
        if blur_p > 0:
            ops.append(K.RandomGaussianBlur((23, 23), sigma=aug.blur_sigma, p=blur_p))
        if solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))  # threshold 0.5
        return K.AugmentationSequential(*ops, K.Normalize(mean, std))

    views = [view(crop, blur_p, solarize_p) for crop, blur_p, solarize_p in view_specs(CROPS, None, aug)]
    images = images.to(args.device)

    def crops(index: torch.Tensor) -> list[torch.Tensor]:
        batch = images[index].float().div_(255)
        return [v(batch) for v in views]

    with ThreadPoolExecutor(args.workers) as pool:
        while True:
            index = torch.randint(len(images), (args.batch_size,), device=args.device)
            on_cpu = args.device == "cpu" and args.workers > 1
            yield split_over_threads(pool, args.workers, crops, index) if on_cpu else crops(index), index


def dali_batches(images: torch.Tensor, args) -> Iterator:
    """Endless batches of the two views made by sslib's DALI view ops, fed HWC uint8 images."""
    from nvidia.dali import fn, pipeline_def

    from sslib.data.dali import view_ops

    aug = augment_preset("cifar")
    pixels = images.permute(0, 2, 3, 1).contiguous().numpy()
    rng = np.random.default_rng(0)
    gpu = args.device == "cuda"
    specs = view_specs(CROPS, None, aug)  # outside the pipeline: DALI rewrites its function's code

    def source() -> list[np.ndarray]:
        return list(pixels[rng.integers(len(pixels), size=args.batch_size)])

    @pipeline_def(enable_conditionals=True)
    def pipeline():
        batch = fn.external_source(source=source, batch=True, layout="HWC")
        batch = batch.gpu() if gpu else batch
        return tuple(
            view_ops(batch, crop, aug, blur, sol, STATS.mean, STATS.std) for crop, blur, sol in specs
        )

    pipe = pipeline(
        batch_size=args.batch_size, num_threads=args.workers, device_id=0 if gpu else None, seed=0
    )
    pipe.build()
    while True:
        yield pipe.run()


def seconds_per_image(stream: Iterator, batch_size: int, warmup: int, batches: int, sync: Callable) -> float:
    """Wall time per image of ``batches`` batches of ``stream``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(stream)
    sync()
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    sync()
    return (time.perf_counter() - start) / (batches * batch_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the verdict; return the exit status (1 when it fails, see ``--no-fail``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5120, help="generated 32x32 train images")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="torchvision workers; threads of the others")
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where device/kornia/dali run"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    parser.add_argument("--batches", type=int, default=8, help="timed batches")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each timing every case once")
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs CUDA")
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the on-device loader then runs on the CPU
    sync = torch.cuda.synchronize if args.device == "cuda" else lambda: None

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_cifar(root, args.images)
        with no_checksums():
            dm = SSLDataModule(name="cifar10", root=str(root), loader="device", global_crops=CROPS)
            dm.setup()
        images = dm.train_images
        cases: dict[str, Callable[[], Iterator]] = {
            "torchvision": lambda: loader_batches(root, "torchvision", args),
            "device": lambda: loader_batches(root, "device", args),
        }
        if importlib.util.find_spec("kornia") is not None:
            cases["kornia"] = lambda: kornia_batches(images, args)
        if dali_installed():
            cases["dali"] = lambda: dali_batches(images, args)

        def measure(name: str) -> float:
            torch.set_num_threads(args.workers if name in ("device", "kornia") else 1)
            stream = cases[name]()
            return seconds_per_image(stream, args.batch_size, args.warmup, args.batches, sync)

        per_image = run_rounds({name: lambda name=name: measure(name) for name in cases}, args.repeats)

    versions = f"torch {torch.__version__}"
    for module in ("torchvision", "kornia", "nvidia.dali"):
        if importlib.util.find_spec(module.split(".")[0]) is not None:
            versions += f", {module.split('.')[-1]} {__import__(module, fromlist=['_']).__version__}"
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(
        f"{cpu_name()} ({os.cpu_count()} cores), {args.workers} workers/threads; augment on {device}; {versions}"
    )
    print(f"CIFAR 2x32, {args.images} images 32x32 in memory, batch {args.batch_size}")
    print("| case | images/s | x torchvision |\n|---|---:|---:|")
    for name, values in per_image.items():
        ratio = paired_ratio(per_image["torchvision"], values)
        print(f"| {name} | {median([1 / s for s in values]):.0f} | {ratio:.2f} |", flush=True)
    ratio = paired_ratio(per_image["torchvision"], per_image["device"])
    verdict = Verdict(
        f"CIFAR 2x32 batch {args.batch_size} on {device}: device loader",
        ratio,
        f"the torchvision loader's images/s ({args.workers} workers)",
        at_least=DEVICE_MIN_RATIO[args.device],
    )
    return report([verdict], args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
