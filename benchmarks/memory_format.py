"""A ResNet-18 training pass in contiguous against channels_last memory, per crop size: what
``channels_last=auto`` decides from.

    python benchmarks/memory_format.py                          # CPU: the default sizes
    python benchmarks/memory_format.py --device cuda --batch 256 --large-batch 128

Each row is one crop size: forward and backward of sslib's ResNet-18 (the CIFAR stem up to 64 px, as
``backbone.cifar=auto`` picks, else the ImageNet stem) on a random batch, once with the backbone and the
batch in contiguous memory and once in channels_last, timed back to back in every round
(``paired.run_rounds``). ``speed-up`` is the median of per-round ratios contiguous / channels_last.
``auto`` is the layout :func:`sslib.app.methods.base.wants_channels_last` takes for that crop size on this
device (on a CPU it goes by the side of the stem's output: the crop's with the CIFAR stem, a quarter of
it with the ImageNet stem). Verdict per row (exit status 1 on a FAIL, unless ``--no-fail``): auto's layout is at most
``1 / MIN_RATIO`` slower than the other one (near-ties, where neither layout wins, pass).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sslib.app.builders import IMAGENET_STEM_STRIDE, SMALL_IMAGE_SIZE
from sslib.app.methods.base import wants_channels_last
from sslib.backbones import build as build_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py, also when imported by path
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402

MIN_RATIO = 0.95  # the other layout's time over auto's: auto may lose by 5% (a tie within the noise)


def backbone_for(size: int, device: torch.device) -> nn.Module:
    """sslib's ResNet-18 with the stem ``backbone.cifar=auto`` picks for ``size``-pixel crops."""
    backbone, _ = build_backbone("resnet18", cifar=size <= SMALL_IMAGE_SIZE)
    return backbone.to(device).train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="16,32,64,96,128,160,224", help="comma-separated crop sides")
    parser.add_argument("--batch", type=int, default=32, help="batch for crops up to 64 px (default: 32)")
    parser.add_argument("--large-batch", type=int, default=8, help="batch for larger crops (default: 8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed passes of each layout per round")
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")

    print(
        f"# ResNet-18 forward + backward, float32, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| crop px | stem | batch | contiguous ms | channels_last ms | speed-up | auto |")
    print("|---:|---|---:|---:|---:|---:|---|")
    verdicts = []
    for size in sizes:
        torch.manual_seed(0)
        batch = args.batch if size <= SMALL_IMAGE_SIZE else args.large_batch
        contiguous = backbone_for(size, device)
        last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, size, size, device=device)
        x_last = x.contiguous(memory_format=torch.channels_last)

        def measure(net: nn.Module, images: torch.Tensor) -> Callable[[], float]:
            def step() -> None:
                net(images).sum().backward()

            step()  # warm-up: oneDNN / cuDNN pick their kernels
            return lambda: seconds(lambda: [step() for _ in range(args.steps)], sync) / args.steps

        times = run_rounds(
            {"contiguous": measure(contiguous, x), "channels_last": measure(last, x_last)}, args.rounds
        )
        speedup = paired_ratio(times["contiguous"], times["channels_last"])
        stem_size = size if size <= SMALL_IMAGE_SIZE else size // IMAGENET_STEM_STRIDE
        auto = wants_channels_last("auto", device, contiguous, [stem_size])
        stem = "CIFAR" if size <= SMALL_IMAGE_SIZE else "ImageNet"
        print(
            f"| {size} | {stem} | {batch} | {median(times['contiguous']) * 1e3:.1f} | "
            f"{median(times['channels_last']) * 1e3:.1f} | {speedup:.2f} | "
            f"{'channels_last' if auto else 'contiguous'} |",
            flush=True,
        )
        chosen, other = ("channels_last", "contiguous") if auto else ("contiguous", "channels_last")
        verdicts.append(
            Verdict(
                f"{size} px: auto's {chosen}",
                paired_ratio(times[other], times[chosen]),
                f"as fast as {other}",
                at_least=MIN_RATIO,
            )
        )
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
