"""Semi-supervised fine-tuning (MIRA paper Table 4): the whole backbone and a linear head trained on a
labelled subset of the train split, top-1/top-5 on the val split.

Two published protocols are presets (``PRESETS[(protocol, fraction)]``); each number's source is next
to it. Learning rates are those of a batch of 256 and scale linearly with ``batch_size``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from sslib.app.eval.offline import FeatureCache, _default_device
from sslib.app.eval.subsets import label_subset
from sslib.errors import ConfigError
from sslib.metrics.features import extract_features
from sslib.metrics.knn import topk_accuracy
from sslib.validation import check_choice, check_int_at_least, check_positive, check_unit_interval

SCHEDULES = ("step", "cosine")
REFERENCE_BATCH = 256  # the learning rates below are for this batch size


@dataclass(frozen=True)
class FinetuneSettings:
    """SGD (``momentum``, ``nesterov``, ``weight_decay``) on backbone + linear head for ``epochs``.

    The backbone's learning rate is ``backbone_lr * batch_size / 256`` and the head's ``head_lr *
    batch_size / 256``; ``schedule`` ``step`` multiplies both by ``gamma`` at each epoch of
    ``milestones``, ``cosine`` decays them to 0 over all steps. ``zero_init_head`` starts the head at 0
    (else N(0, 0.01) weights); ``seed`` fixes the head, the batch order and the crops.
    """

    epochs: int
    backbone_lr: float
    head_lr: float
    batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.2
    zero_init_head: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_int_at_least("epochs", self.epochs, 1)
        check_positive("backbone_lr", self.backbone_lr)
        check_positive("head_lr", self.head_lr)
        check_int_at_least("batch_size", self.batch_size, 1)
        check_unit_interval("momentum", self.momentum)
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_positive("gamma", self.gamma)
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov needs momentum > 0, got momentum=0")

    def scaled(self, lr: float) -> float:
        """``lr`` at this batch size: ``lr * batch_size / 256``."""
        return lr * self.batch_size / REFERENCE_BATCH


# SwAV (facebookresearch/swav @06b1b7c, eval_semisup.py): 20 epochs (line 61), the lr times 0.2 at
# epochs 12 and 16 (lines 67-69), trunk and head with their own lr (line 178), SGD momentum 0.9 without
# Nesterov, weight decay 0 (lines 180-181); README lines 129 and 138: --lr 0.01 --lr_last_layer 0.2 for
# 10%, --lr 0.02 --lr_last_layer 5 for 1%, on 8 GPUs x 32 images (batch 256, line 63). Train crops:
# RandomResizedCrop(224) + horizontal flip (lines 109-110), as FeatureCache.train_transform.
_SWAV = FinetuneSettings(epochs=20, backbone_lr=0.01, head_lr=0.2, milestones=(12, 16), gamma=0.2)
# SimCLR (Chen et al. 2020, appendix B.5): Nesterov momentum 0.9, lr 0.05 x B/256 for the whole network
# without warm-up, no weight decay, 60 epochs for 1% and 30 for 10% of the labels, crop + flip only;
# google-research/simclr @383d414: Nesterov SGD tf2/model.py line 32, cosine decay line 105, head at
# zero (README line 117, --zero_init_logits_layer=True).
_SIMCLR = FinetuneSettings(
    epochs=30, backbone_lr=0.05, head_lr=0.05, nesterov=True, schedule="cosine", zero_init_head=True
)
PRESETS: dict[tuple[str, float], FinetuneSettings] = {
    ("swav", 0.01): replace(_SWAV, backbone_lr=0.02, head_lr=5.0),
    ("swav", 0.1): _SWAV,
    ("simclr", 0.01): replace(_SIMCLR, epochs=60),
    ("simclr", 0.1): _SIMCLR,
}
PROTOCOLS = ("swav", "simclr")


def preset(protocol: str, fraction: float) -> FinetuneSettings:
    """The settings of ``protocol`` (``swav`` or ``simclr``) for ``fraction`` of the labels; fractions
    other than 1% and 10% take the 10% settings."""
    check_choice("protocol", protocol, PROTOCOLS)
    return PRESETS.get((protocol, fraction), PRESETS[(protocol, 0.1)])


def finetune_settings(
    protocol: str, fraction: float, seed: int = 0, overrides: dict[str, float | int | None] | None = None
) -> FinetuneSettings:
    """:func:`preset` with ``seed`` and the ``overrides`` that are not ``None``."""
    changes: dict[str, Any] = {
        k: v for k, v in (overrides or {}).items() if v is not None
    }  # checked by the dataclass
    return replace(preset(protocol, fraction), seed=seed, **changes)


def _head(
    feat_dim: int, num_classes: int, settings: FinetuneSettings, generator: torch.Generator
) -> nn.Linear:
    """The ``feat_dim -> num_classes`` head: zero weights (SimCLR) or N(0, 0.01), zero bias."""
    head = nn.Linear(feat_dim, num_classes)
    with torch.no_grad():
        if settings.zero_init_head:
            head.weight.zero_()
        else:
            head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    return head


def _schedule(optimizer: torch.optim.Optimizer, settings: FinetuneSettings, steps_per_epoch: int):
    """Per-step lr schedule: step decay at the milestone epochs, or cosine to 0."""
    total = settings.epochs * steps_per_epoch
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
        )
    milestones = [m * steps_per_epoch for m in settings.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=settings.gamma)


def finetune(
    backbone: nn.Module,
    feat_dim: int,
    train_set: Dataset,
    val_set: Dataset,
    num_classes: int,
    settings: FinetuneSettings,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> tuple[nn.Module, dict[str, float]]:
    """Fine-tune ``backbone`` (in place, train mode: BatchNorm statistics adapt) with a new linear head
    on ``train_set`` (augmented ``(image, label)`` pairs) by cross-entropy; returns the ``backbone ->
    head`` classifier in eval mode and its top-1/top-5 (percent) on ``val_set`` after the last epoch.
    """
    device = _default_device(device)
    generator = torch.Generator().manual_seed(settings.seed)
    model = nn.Sequential(backbone, _head(feat_dim, num_classes, settings, generator)).to(device)
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": settings.scaled(settings.backbone_lr)},
            {"params": model[1].parameters(), "lr": settings.scaled(settings.head_lr)},
        ],
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        weight_decay=settings.weight_decay,
    )
    loader = DataLoader(
        train_set, batch_size=settings.batch_size, shuffle=True, num_workers=num_workers, generator=generator
    )
    schedule = _schedule(optimizer, settings, len(loader))
    model.train()
    with torch.random.fork_rng(devices=[]):  # seeded crops (global RNG), restored afterwards
        torch.manual_seed(settings.seed)
        for _ in range(settings.epochs):
            for images, labels in loader:
                loss = F.cross_entropy(model(images.to(device)), labels.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    model.eval()
    return model, classifier_accuracy(model, val_set, settings.batch_size, device, num_workers)


def classifier_accuracy(
    model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> dict[str, float]:
    """Top-1/top-5 (percent) of the classifier ``model`` (images -> ``(B, C)`` logits) on ``dataset``."""
    logits, labels = extract_features(model, DataLoader(dataset, batch_size, num_workers=num_workers), device)
    return topk_accuracy(logits, labels)


def finetune_eval(
    cache: FeatureCache,
    fraction: float,
    settings: FinetuneSettings,
    subset_file: str | Path | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) on the val split of a copy of ``cache``'s backbone fine-tuned on the labelled
    subset :func:`sslib.app.eval.subsets.label_subset` of its train split (``fraction``, or ``subset_file``)."""
    base = cache.build("train", cache.train_transform())
    indices = label_subset(base, cache.dataset, fraction, settings.seed, subset_file)
    num_classes = cache.class_count(base)
    backbone = copy.deepcopy(cache.backbone)
    feat_dim = cache.features("val")[0].shape[1]
    _, acc = finetune(
        backbone,
        feat_dim,
        Subset(base, indices.tolist()),
        cache.build("val", cache.eval_transform()),
        num_classes,
        settings,
        cache.device,
        cache.num_workers,
    )
    return acc
