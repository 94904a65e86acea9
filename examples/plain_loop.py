"""MIRA in a plain PyTorch loop: sslib's backbone, heads, labeler and loss, without Lightning or Hydra.

    python examples/plain_loop.py --steps 50 --out backbone.pt

trains a CIFAR-stem ResNet-18 on the embedded digits (no download, CPU is enough) for ``--steps``
steps, printing each step's loss and the mutual information I(Y; B) of MIRA's targets (Eq. 2) with the
number of clusters they use, then saves the backbone's state dict, which loads into
``sslib.backbones.build("resnet18", cifar=True)``. The heads are smaller than the paper's
(2048-2048-256 projector, 3000 prototypes) to stay quick.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from sslib import backbones, labelers
from sslib.data import Augment, CropGroup, DigitsDataset, MultiCropTransform, dataset_stats
from sslib.heads import MLP, PrototypeHead
from sslib.losses import swapped_prediction_loss
from sslib.modules.ema import ema_update, make_teacher
from sslib.optim import build_optimizer, build_scheduler, cosine_ramp, scaled_lr


def train(steps: int, batch_size: int, seed: int = 0) -> tuple[torch.nn.Module, list[float]]:
    """Train for ``steps`` steps of ``batch_size`` images; return the backbone and each step's loss."""
    torch.manual_seed(seed)
    stats = dataset_stats("digits")
    crops = MultiCropTransform(
        CropGroup(n=2, size=32), None, Augment(blur_p=(0.0,), local_blur_p=0.0), stats.mean, stats.std
    )
    loader = DataLoader(DigitsDataset("train", transform=crops), batch_size, shuffle=True, drop_last=True)

    backbone, feat_dim = backbones.build("resnet18", cifar=True)
    student = torch.nn.Sequential(backbone, MLP([feat_dim, 512, 128]), PrototypeHead(128, 100))
    teacher = make_teacher(student)  # EMA copy that makes the targets
    labeler = labelers.build("mira")  # the paper's tau_t = 0.225, beta = 2/3
    optimizer = build_optimizer("lars", student, lr=scaled_lr(0.3, batch_size), weight_decay=1e-6)
    scheduler = build_scheduler(optimizer, total_steps=steps, warmup_steps=max(1, steps // 10))

    losses: list[float] = []
    while len(losses) < steps:
        for views, _ in loader:  # views: 2 tensors (B, 3, 32, 32)
            with torch.no_grad():
                targets = labeler.label_views([teacher(v) for v in views])  # (B, K) each, rows sum to 1
            loss = swapped_prediction_loss(targets, [student(v) for v in views], temperature=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            ema_update(teacher, student, momentum=cosine_ramp(len(losses), steps, start=0.99, end=1.0))
            losses.append(loss.item())
            info = labelers.label_stats(targets[0])
            print(f"step {len(losses) - 1}: loss {losses[-1]:.4f}, I(Y;B) {info.mutual_information:.3f} nats, "
                  f"{info.clusters_used}/{info.n_clusters} clusters used")  # fmt: skip
            if len(losses) == steps:
                break
    return backbone, losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="optimiser steps (default: 50)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument(
        "--out", default="backbone.pt", help="where to save the backbone (default: backbone.pt)"
    )
    args = parser.parse_args()
    model, _ = train(args.steps, args.batch_size)
    torch.save(model.state_dict(), args.out)
    print(f"saved the backbone to {args.out}")
