"""Throughput of one training step per method at the CIFAR recipe, against the bare backbone's step.

    python benchmarks/train_step.py                      # CPU: batch 32, ResNet-18 (CIFAR stem), 32x32
    python benchmarks/train_step.py --device cuda --batch-size 256 --precision bf16

Each row times forward + backward + optimiser step (+ EMA update) on random 32x32 crops, the recipe's
two global views, after warm-up; the labeler is timed inside the same steps. The baseline, timed in the
same rounds (``paired.run_rounds``: each round times the baseline step and the method's step back to
back), is the forward and backward of the same backbone alone on the same crops, concatenated. The
``x backbone`` column is the median of the per-round ratios, i.e. the method's whole step (heads,
teacher, labeler, loss, optimiser, EMA) in units of the backbone's own pass; a row above
``STEP_MAX_RATIO`` is a FAIL and the exit status is 1 (unless ``--no-fail``).
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from sslib.app import methods
from sslib.app.config import compose
from sslib.modules.ema import ema_update
from sslib.optim import build_optimizer, param_groups

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/paired.py, also when imported by path
from paired import Verdict, add_verdict_arguments, median, paired_ratio, report, run_rounds, seconds  # noqa: E402

RUNS = [
    ("mira", None),
    ("swav", None),
    ("dino", None),
    ("mira", "sinkhorn"),
    ("mira", "dino"),
    ("byol", None),
    ("barlow", None),
    ("simclr", None),
]
STEP_MAX_RATIO = 3.0  # target: a method's whole step costs at most this many bare backbone passes


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class TimedLabeler:
    """Wraps ``labeler.assign`` to accumulate its (synchronised) wall time."""

    def __init__(self, labeler, device: torch.device) -> None:
        self.seconds, self.device, inner = 0.0, device, labeler.assign

        def timed(logits):
            sync(device)
            start = time.perf_counter()
            out = inner(logits)
            sync(device)
            self.seconds += time.perf_counter() - start
            return out

        labeler.assign = timed


def bench(method: str, labeler: str | None, args, device: torch.device) -> dict:
    """Median step times of ``method`` (with ``labeler``) and of its bare backbone, their paired ratio, and
    the labeler's time per step and share of the method's step."""
    overrides = [f"method={method}", "data=cifar10", f"data.batch_size={args.batch_size}"]
    cfg = compose(overrides + ([f"labeler={labeler}"] if labeler else []))
    model = methods.build(cfg, num_classes=10, n_global=2)
    model.prepare_for(device)  # channels_last where channels_last=auto takes it, as the trainer's setup does
    model = model.to(device).train()
    opt = build_optimizer("lars", param_groups(model.ssl_modules(), 1e-6), lr=0.3, weight_decay=1e-6)
    labeler = getattr(model, "labeler", None)
    timer = TimedLabeler(labeler, device) if labeler is not None else None
    crops = model.device_batch([torch.randn(args.batch_size, 3, 32, 32, device=device) for _ in range(2)])
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()

    def method_step() -> None:
        with amp:
            loss, _, _ = model.ssl_step(crops)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if model.teacher is not None:
            student = model.ssl_modules()
            ema_update(model.teacher, torch.nn.ModuleDict({k: student[k] for k in model.teacher}), 0.99)

    def backbone_step() -> None:  # the baseline: the backbone's forward and backward, nothing else
        with amp:
            feats = model.backbone(torch.cat(crops))
        opt.zero_grad(set_to_none=True)
        feats.float().square().mean().backward()

    wait = functools.partial(sync, device)
    for _ in range(args.warmup):
        method_step()
        backbone_step()
    if timer is not None:
        timer.seconds = 0.0
    measures: dict[str, Callable[[], float]] = {
        "backbone": lambda: seconds(backbone_step, wait),
        "step": lambda: seconds(method_step, wait),
    }
    times = run_rounds(measures, args.steps)
    step = median(times["step"])
    return {
        "method": method,
        "labeler": cfg.labeler.name if timer is not None else "-",
        "step_ms": step * 1e3,
        "images_s": args.batch_size / step,
        "views_s": 2 * args.batch_size / step,
        "backbone_ms": median(times["backbone"]) * 1e3,
        "x_backbone": paired_ratio(times["step"], times["backbone"]),
        "labeler_ms": timer.seconds / args.steps * 1e3 if timer else 0.0,
        "labeler_share": timer.seconds / sum(times["step"]) if timer else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table and the verdicts; return the exit status (1 when a verdict fails, see ``--no-fail``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 32 on CPU")
    parser.add_argument(
        "--steps", type=int, default=5, help="rounds, each timing one backbone and one method step"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--runs", default=",".join(f"{m}+{lab or 'default'}" for m, lab in RUNS))
    add_verdict_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.batch_size = args.batch_size or (256 if device.type == "cuda" else 32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# train step, ResNet-18 CIFAR stem, 2x32x32 views, batch {args.batch_size}, {args.precision}, "
        f"{name}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| method | labeler | step ms | images/s | views/s | backbone ms | x backbone | labeler ms | labeler share |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for run in args.runs.split(","):
        method, labeler = run.split("+")
        row = bench(method, None if labeler == "default" else labeler, args, device)
        print(
            f"| {row['method']} | {row['labeler']} | {row['step_ms']:.1f} | {row['images_s']:.1f} | "
            f"{row['views_s']:.1f} | {row['backbone_ms']:.1f} | {row['x_backbone']:.2f} | "
            f"{row['labeler_ms']:.2f} | {row['labeler_share']:.1%} |",
            flush=True,
        )
        subject = f"{row['method']}+{row['labeler']}: step"
        verdicts.append(
            Verdict(subject, row["x_backbone"], "the backbone's forward+backward", at_most=STEP_MAX_RATIO)
        )
    return report(verdicts, args.no_fail)


if __name__ == "__main__":
    raise SystemExit(main())
