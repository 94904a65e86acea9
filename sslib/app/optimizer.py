"""A run's optimiser and per-step lr (and weight-decay) schedule from its config (``cfg.optim``), without a Trainer."""

from __future__ import annotations

import math

from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer

from sslib.app.builders import config_keys, section_keys
from sslib.app.config import to_dict
from sslib.errors import ConfigError
from sslib.optim import build_optimizer
from sslib.optim.params import param_groups
from sslib.optim.schedules import WarmupCosine, build_scheduler, resolve_warmup_start_ratio, scaled_lr
from sslib.validation import check_bool


def _number_at_least_zero(key: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def clip_norm(opt: DictConfig) -> float:
    """``optim.clip_grad`` as a number >= 0 (0: no clipping)."""
    return _number_at_least_zero("optim.clip_grad", opt.clip_grad)


def final_wd_ratio(opt: DictConfig) -> float | None:
    """``optim.final_weight_decay / optim.weight_decay`` (None: constant weight decay, the key null)."""
    final = opt.final_weight_decay
    if final is None:
        return None
    final = _number_at_least_zero("optim.final_weight_decay", final)
    if opt.weight_decay == 0:
        if final > 0:
            raise ConfigError(
                f"optim.final_weight_decay={final} needs optim.weight_decay > 0 (the schedule scales it)"
            )
        return None
    return final / opt.weight_decay


def configure(
    cfg: DictConfig,
    modules: nn.Module,
    probe: nn.Module,
    world_size: int,
    total_steps: int,
    steps_per_epoch: float,
) -> tuple[Optimizer, WarmupCosine]:
    """Optimiser over ``modules`` and ``probe``, and its scheduler (step it once per iteration).

    With global batch ``N = cfg.data.batch_size * world_size`` and ``s = N / 256`` (1 without
    ``optim.scale_lr``):

    - ``modules``: peak lr ``optim.lr * s``; weights get ``optim.weight_decay`` and LARS adaptation,
      biases and norms (with ``optim.exclude_bias_norm``) and a ViT's position embeddings and class
      token (with ``optim.exclude_tokens``) neither (:func:`param_groups`);
    - ``probe``: its own group, peak lr ``online_eval.probe_lr * N / 256``, no weight decay, no LARS
      adaptation;
    - schedule: ``W = round(optim.warmup_epochs * steps_per_epoch)`` warm-up steps (at most
      ``total_steps``) from ``peak * r`` with ``r`` from :func:`resolve_warmup_start_ratio` (reaching the peak
      at step ``W - 1`` with ``optim.warmup_ends_at_peak``, at ``W`` without), then cosine to
      ``peak * optim.final_lr_ratio`` at ``total_steps``, for every group; with
      ``optim.final_weight_decay`` the weight decay follows a cosine from ``optim.weight_decay`` to it;
    - ``optim.clip_grad`` is checked here (:func:`clip_norm`); the training loop clips each gradient
      tensor of ``modules`` to it after the backward and before the step (DINO's clipping, see
      :meth:`sslib.app.methods.base.SSLMethod.on_before_optimizer_step`; the probe is not clipped).

    ``momentum`` may be absent (``adamw`` has none); every other key is in each ``conf/optim`` file.
    A bad value is a one-line ``ConfigError`` naming its key (``optim.momentum``, ``optim.kwargs.eta``).
    """
    opt = cfg.optim
    warmup_epochs = opt.warmup_epochs
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, (int, float)) or warmup_epochs < 0:
        raise ConfigError(f"optim.warmup_epochs must be a number >= 0, got {warmup_epochs!r}")
    global_batch = cfg.data.batch_size * world_size
    lr_scale = scaled_lr(1.0, global_batch) if opt.scale_lr else 1.0
    wd_ratio = final_wd_ratio(opt)
    clip_norm(opt)
    extra = to_dict(opt.kwargs)
    # the core's errors name its arguments (momentum, eta): named by their keys here
    with config_keys({**section_keys("optim.kwargs", extra), **section_keys("optim", opt)}):
        start_ratio = resolve_warmup_start_ratio(opt.warmup_start_ratio, lr_scale)
        groups = param_groups(modules, opt.weight_decay, opt.exclude_bias_norm, opt.exclude_tokens)
        groups.append(
            {
                "params": list(probe.parameters()),
                "weight_decay": 0.0,
                "lars_exclude": True,
                "lr": scaled_lr(cfg.online_eval.probe_lr, global_batch),
            }
        )
        if "momentum" in opt:
            extra["momentum"] = opt.momentum
        optimizer = build_optimizer(
            opt.name, groups, lr=opt.lr * lr_scale, weight_decay=opt.weight_decay, **extra
        )
        warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
        scheduler = build_scheduler(
            optimizer,
            total_steps,
            warmup_steps,
            final_lr_ratio=opt.final_lr_ratio,
            warmup_start_ratio=start_ratio,
            final_wd_ratio=wd_ratio,
            warmup_ends_at_peak=check_bool("optim.warmup_ends_at_peak", opt.warmup_ends_at_peak),
        )
    keep_group_settings(optimizer)
    return optimizer, scheduler


def keep_group_settings(optimizer: Optimizer) -> None:
    """Make ``optimizer.load_state_dict`` keep the settings of its parameter groups (momentum, LARS's
    ``eta``, ...) and take only the per-parameter state (momentum buffers) from the saved dict, so a run
    resumed from a checkpoint trained with other settings trains with its own. (The lr and weight decay
    are then set by the schedule's ``load_state_dict``, :class:`sslib.optim.schedules.WarmupCosine`.)"""
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]

    def restore(loaded: Optimizer) -> None:
        for group, own in zip(loaded.param_groups, settings, strict=True):
            group.update(own)

    optimizer.register_load_state_dict_post_hook(restore)
