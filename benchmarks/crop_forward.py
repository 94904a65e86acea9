"""What forwarding each crop alone costs: MIRA's ``per_crop`` against SwAV/DINO's ``resolution``.

One training step of backbone + projector (forward, backward) on a multi-crop batch, in the two modes of
``method.crop_forward`` (``sslib.modules.crops.embed_crops``), timed back to back in each round (see
``benchmarks/paired.py``). ``per_crop`` runs one backbone call per crop instead of one per resolution,
so it pays more, smaller calls; the verdict bounds that overhead.

    python benchmarks/crop_forward.py                      # CPU, ResNet-18, the default shapes
    python benchmarks/crop_forward.py --device cuda --batch 256 --shapes 2x224+6x96
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402

from sslib.backbones import build as build_backbone  # noqa: E402
from sslib.heads import MLP  # noqa: E402
from sslib.modules.crops import embed_crops  # noqa: E402


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"2x32+6x16"`` -> ``[(2, 32), (6, 16)]`` (number of crops x side)."""
    try:
        return [(int(n), int(s)) for n, s in (part.split("x") for part in text.split("+"))]
    except ValueError:
        raise SystemExit(f"--shapes must look like 2x32+6x16, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", default="2x32,2x32+6x16", help="comma-separated crop sets (default: 2x32,2x32+6x16)"
    )
    parser.add_argument("--batch", type=int, default=32, help="samples per crop (default: 32)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--max-overhead", type=float, default=2.0, help="target: per_crop / resolution at most"
    )
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    backbone, dim = build_backbone("resnet18", cifar=True)
    projector = MLP([dim, 2048, 2048, 256])
    backbone, projector = backbone.to(device), projector.to(device)

    verdicts, rows = [], []
    for text in args.shapes.split(","):
        crops = [
            torch.randn(args.batch, 3, s, s, device=device) for n, s in parse_shapes(text) for _ in range(n)
        ]

        def step(mode: str, crops: list[torch.Tensor] = crops) -> float:
            def run() -> None:
                _, z = embed_crops(backbone, projector, crops, mode)
                z.square().mean().backward()

            return seconds(run, sync)

        step("resolution"), step("per_crop")  # warm-up
        times = run_rounds(
            {"resolution": lambda: step("resolution"), "per_crop": lambda: step("per_crop")}, args.rounds
        )
        ratio = paired_ratio(times["per_crop"], times["resolution"])
        rows.append((text, median(times["resolution"]), median(times["per_crop"]), ratio))
        verdicts.append(
            Verdict(
                f"per_crop on {text} (batch {args.batch})", ratio, "x resolution", at_most=args.max_overhead
            )
        )

    print("| crops | resolution (ms) | per_crop (ms) | per_crop / resolution |\n|---|---|---|---|")
    for text, res, per, ratio in rows:
        print(f"| {text} | {res * 1e3:.1f} | {per * 1e3:.1f} | {ratio:.2f}x |")
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
