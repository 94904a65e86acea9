"""What the official-step tests (MIRA, SwAV and DeepCluster-v2, DINO) share: float64 multi-crop batches,
a bare float64 Lightning trainer on the CPU, and the float64 loss of every step."""

from __future__ import annotations

import lightning as L
import torch


def multicrop_batches(
    steps: int, batch: int, seed: int = 1, permuted_indices: bool = False
) -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    """``steps`` batches ``(crops, labels, indices)`` in float64: 2 global crops (B, 3, 8, 8), then 2 local
    crops (B, 3, 4, 4), labels in {0, 1, 2}; the indices are ``range(B)`` in every batch, or with
    ``permuted_indices`` a permutation of ``range(steps * B)`` split into batches (drawn first)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(steps * batch, generator=g).split(batch) if permuted_indices else None
    out = []
    for step in range(steps):
        crops = [torch.randn(batch, 3, 8, 8, generator=g, dtype=torch.float64) * s for s in (1.0, 2.0)]
        crops += [torch.randn(batch, 3, 4, 4, generator=g, dtype=torch.float64) + s for s in (0.5, -0.5)]
        labels = torch.randint(0, 3, (batch,), generator=g)
        out.append((crops, labels, torch.arange(batch) if order is None else order[step]))
    return out


def float64_trainer(**kwargs) -> L.Trainer:
    """A CPU trainer in float64 with no logger, validation, checkpoints, progress bar or summary;
    ``kwargs`` (e.g. ``max_steps``, ``max_epochs``, ``callbacks``) go to ``lightning.Trainer``."""
    return L.Trainer(
        accelerator="cpu",
        precision="64-true",
        logger=False,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def record_losses(model) -> list[float]:
    """The float64 SSL loss of every step of ``model`` (the logged ``train/loss`` is rounded to float32)."""
    losses, step = [], model.ssl_step

    def recorded(*args, **kwargs):
        out = step(*args, **kwargs)
        losses.append(float(out[0].detach()))
        return out

    model.ssl_step = recorded
    return losses
