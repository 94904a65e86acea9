"""A run's optimiser and per-step lr schedule from its config (``cfg.optim``), without a Trainer."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from sslib.optim import build_optimizer
from sslib.optim.params import param_groups
from sslib.optim.schedules import build_scheduler, resolve_warmup_start_ratio, scaled_lr


def configure(
    cfg: DictConfig,
    modules: nn.Module,
    probe: nn.Module,
    world_size: int,
    total_steps: int,
    steps_per_epoch: float,
) -> tuple[Optimizer, LambdaLR]:
    """Optimiser over ``modules`` and ``probe``, and its scheduler (step it once per iteration).

    With global batch ``N = cfg.data.batch_size * world_size`` and ``s = N / 256`` (1 without
    ``optim.scale_lr``):

    - ``modules``: peak lr ``optim.lr * s``; weights get ``optim.weight_decay`` and LARS adaptation,
      biases and norms (with ``optim.exclude_bias_norm``) neither (:func:`param_groups`);
    - ``probe``: its own group, peak lr ``online_eval.probe_lr * N / 256``, no weight decay, no LARS
      adaptation;
    - schedule: ``W = round(optim.warmup_epochs * steps_per_epoch)`` warm-up steps (at most
      ``total_steps``) from ``peak * r`` with ``r`` from :func:`resolve_warmup_start_ratio`, then cosine to
      ``peak * optim.final_lr_ratio`` at ``total_steps``, for every group.
    """
    opt = cfg.optim
    warmup_epochs = opt.warmup_epochs
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be a number >= 0, got {warmup_epochs!r}")
    global_batch = cfg.data.batch_size * world_size
    lr_scale = scaled_lr(1.0, global_batch) if opt.scale_lr else 1.0
    start_ratio = resolve_warmup_start_ratio(opt.warmup_start_ratio, lr_scale)
    groups = param_groups(modules, opt.weight_decay, opt.exclude_bias_norm)
    groups.append(
        {
            "params": list(probe.parameters()),
            "weight_decay": 0.0,
            "lars_exclude": True,
            "lr": scaled_lr(cfg.online_eval.probe_lr, global_batch),
        }
    )
    extra = OmegaConf.to_container(opt.kwargs, resolve=True) if opt.get("kwargs") else {}
    optimizer = build_optimizer(
        opt.name, groups, lr=opt.lr * lr_scale, weight_decay=opt.weight_decay, momentum=opt.momentum, **extra
    )
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
    scheduler = build_scheduler(
        optimizer,
        total_steps,
        warmup_steps,
        final_lr_ratio=opt.final_lr_ratio,
        warmup_start_ratio=start_ratio,
    )
    return optimizer, scheduler
