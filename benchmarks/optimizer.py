"""One LARS step over a ResNet-18 with a DINO-sized head: sslib's two batchings against lightly's LARS.

    python benchmarks/optimizer.py                   # CPU
    python benchmarks/optimizer.py --device cuda

The parameters are those of the DINO CIFAR recipe's student (ResNet-18, CIFAR stem; projector 512 ->
2048 -> 2048 -> 256; 4096 prototypes), in sslib's parameter groups (biases and normalisation layers
excluded from the trust ratio and weight decay), with fixed random gradients. Rows, timed back to back
in every round (``paired.run_rounds``):

- ``sslib, per tensor`` / ``sslib, foreach``: :class:`sslib.optim.LARS` with ``foreach=False`` / ``True``
  (``None``, the default, takes foreach on CUDA and per tensor elsewhere);
- ``lightly``: lightly's ``LARS`` over the same parameters (``pip install 'sslib-vision[bench]'``), which
  reads two norms to the host per tensor;
- ``torch SGD, foreach``: torch's SGD with momentum, the floor a momentum optimiser costs.

``x lightly`` is the median of per-round ratios of lightly's time to the row's. Verdicts (exit status 1 on
a FAIL, unless ``--no-fail``): sslib's default batching for the device is at least as fast as lightly's
LARS and, on CUDA, at least as fast as the per-tensor batching.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sslib.backbones import build as build_backbone
from sslib.heads import MLP
from sslib.optim import LARS, param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py, also when imported by path
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402

LR, WEIGHT_DECAY, ETA = (
    0.3,
    1e-6,
    0.02,
)  # the DINO CIFAR recipe's LARS (sslib/app/conf/recipe/dino_cifar10.yaml)
MIN_RATIO = 1.0  # the default batching against lightly's LARS and, on CUDA, against one tensor at a time


def student(device: torch.device) -> nn.Module:
    """The DINO CIFAR student's parameters, with fixed random gradients."""
    backbone, dim = build_backbone("resnet18", cifar=True)
    net = nn.ModuleDict(
        {"backbone": backbone, "projector": MLP([dim, 2048, 2048, 256]), "prototypes": nn.Linear(256, 4096)}
    ).to(device)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return net


def optimizers(net: nn.Module) -> dict[str, torch.optim.Optimizer]:
    """The timed rows (module docstring); lightly's only when it is installed."""
    rows: dict[str, torch.optim.Optimizer] = {
        "sslib, per tensor": LARS(param_groups(net, WEIGHT_DECAY), lr=LR, eta=ETA, foreach=False),
        "sslib, foreach": LARS(param_groups(net, WEIGHT_DECAY), lr=LR, eta=ETA, foreach=True),
        "torch SGD, foreach": torch.optim.SGD(net.parameters(), lr=LR, momentum=0.9, foreach=True),
    }
    try:
        from lightly.utils.lars import LARS as LightlyLARS
    except ImportError:
        return rows
    rows["lightly"] = LightlyLARS(
        net.parameters(), lr=LR, momentum=0.9, weight_decay=WEIGHT_DECAY, trust_coefficient=ETA
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each row per round")
    parser.add_argument("--rounds", type=int, default=7)
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    net = student(device)
    rows = optimizers(net)
    for opt in rows.values():  # the momentum buffers exist before timing
        opt.step()

    def measure(opt: torch.optim.Optimizer) -> Callable[[], float]:
        return lambda: seconds(lambda: [opt.step() for _ in range(args.steps)], sync) / args.steps

    times = run_rounds({name: measure(opt) for name, opt in rows.items()}, args.rounds)
    n_params = sum(p.numel() for p in net.parameters())
    print(f"# LARS step, {n_params / 1e6:.1f}M parameters in {len(list(net.parameters()))} tensors, {device}")
    print("| optimiser | step ms | x lightly |")
    print("|---|---:|---:|")
    for name, series in times.items():
        ratio = f"{paired_ratio(times['lightly'], series):.2f}" if "lightly" in times else ""
        print(f"| {name} | {median(series) * 1e3:.2f} | {ratio} |")
    default = "sslib, foreach" if device.type == "cuda" else "sslib, per tensor"
    verdicts = []
    if "lightly" in times:
        verdicts.append(
            Verdict(
                f"{default} (the default on {device.type})",
                paired_ratio(times["lightly"], times[default]),
                "as fast as lightly's LARS",
                at_least=MIN_RATIO,
            )
        )
    if device.type == "cuda":
        verdicts.append(
            Verdict(
                "sslib, foreach on CUDA",
                paired_ratio(times["sslib, per tensor"], times["sslib, foreach"]),
                "as fast as per tensor",
                at_least=MIN_RATIO,
            )
        )
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
