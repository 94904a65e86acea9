"""The shared training loop: backbone, optimisation, schedules and online evaluation.

A method subclass only adds its heads (``ssl_modules``) and its loss (``ssl_step``).
"""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslib.app.builders import build_backbone, stem_output_sizes
from sslib.app.optimizer import clip_norm, configure
from sslib.errors import ConfigError
from sslib.metrics.monitors import RepresentationMonitor
from sslib.metrics.online import CHECKPOINT_KEY, OnlineMonitor
from sslib.modules.ema import ema_update
from sslib.nonblocking import scalars_to_device
from sslib.optim import cosine_ramp
from sslib.optim.clip import clip_per_parameter_
from sslib.validation import check_choice, check_int_at_least, check_unit_interval

# channels_last=auto on a CPU: oneDNN's channels_last convolutions train a ResNet faster than contiguous
# ones once the stem's output is this many pixels wide, slower below (benchmarks/memory_format.py)
CPU_CHANNELS_LAST_MIN_MAP = 32


def has_conv(module: nn.Module) -> bool:
    """Whether ``module`` has a 2-D convolution (the layers channels_last memory speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def check_channels_last(setting: object) -> None:
    """``channels_last`` is ``auto``, ``true`` or ``false``, else a one-line ``ConfigError``."""
    if setting != "auto" and not isinstance(setting, bool):
        raise ConfigError(f"channels_last must be auto, true or false, got {setting!r}")


def wants_channels_last(
    setting: object, device: torch.device, backbone: nn.Module, stem_sizes: list[int]
) -> bool:
    """Whether ``backbone`` trains in channels_last memory on ``device``, its stem giving maps of
    ``stem_sizes`` pixels (:func:`stem_output_sizes`): ``setting`` ``True``/``False`` decides for conv
    backbones (others have no use for it); ``"auto"`` takes it on CUDA, and on a CPU when every map is at
    least ``CPU_CHANNELS_LAST_MIN_MAP`` pixels (crops of 32 px with the CIFAR stem, 128 px without)."""
    check_channels_last(setting)
    if not has_conv(backbone):
        return False
    if setting == "auto":
        return device.type == "cuda" or min(stem_sizes) >= CPU_CHANNELS_LAST_MIN_MAP
    return bool(setting)


def to_channels_last(batch):
    """``batch`` with every 4-D tensor (B, C, H, W) in channels_last memory format, nested lists and
    tuples kept; other values (labels, indices) as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_channels_last(b) for b in batch)
    return batch


CURRENT, NEXT = "current", "next"


def ema_momentum_step(global_step: int, momentum_step: str) -> int:
    """The iteration whose momentum updates the teacher after an optimiser step, ``global_step`` being
    Lightning's count, already advanced past it: ``"current"``, the iteration just done (DINO's
    ``momentum_schedule[it]`` after the step, facebookresearch/dino@7c446df main_dino.py L343-348; BYOL);
    ``"next"``, the one about to start (the official MIRA code updates the teacher at the start of each
    iteration with that iteration's momentum, movinghoon/MIRA train.py L116-119, L397-399, L437)."""
    return global_step if momentum_step == NEXT else global_step - 1


STEP_METRICS = ("train/loss", "train/probe_loss", "train/probe_acc")  # what the progress bar shows


class SSLMethod(L.LightningModule):
    """Base LightningModule of every method.

    Owns the backbone, the optimiser and per-step lr schedule (linear warm-up + cosine, lr scaled by
    global batch / 256), a detached linear probe trained on the first global crop's features, and the
    online weighted kNN (k, T from ``cfg.online_eval``) of val features against the train split
    (:mod:`sslib.metrics.online`), whose last result the checkpoint keeps under ``"online_eval"``.
    Subclasses implement :meth:`ssl_step` and :meth:`ssl_modules`. A subclass with an EMA teacher sets
    ``self.teacher`` to a copy of some of ``ssl_modules()`` (same keys); it is updated after every step
    with the momentum of ``cfg.method.ema`` ({base_momentum, final_momentum}, cosine ramp per iteration,
    read at the iteration :func:`ema_momentum_step` names).

    For the device it runs on (:meth:`prepare_for`, called by Lightning's ``setup``): conv backbones and
    their batches use channels_last memory where ``cfg.channels_last`` says so
    (:func:`wants_channels_last`); ``cfg.compile_backbone`` compiles the backbone
    and the teacher's (``torch.compile``, in place, so the state dict keeps its keys).
    """

    def __init__(self, cfg: DictConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters(
            {"cfg": OmegaConf.to_container(cfg, resolve=True), "num_classes": num_classes}
        )
        self.backbone, self.feat_dim = build_backbone(cfg)
        self.num_classes = num_classes
        self.probe = nn.Linear(self.feat_dim, num_classes)
        self.teacher: nn.ModuleDict | None = None
        ema = cfg.method.get("ema")  # barlow and simclr have no teacher, whose momentum_step is then unused
        self.momentum_step = (
            check_choice("method.ema.momentum_step", ema.momentum_step, (CURRENT, NEXT)) if ema else CURRENT
        )
        self.online = OnlineMonitor.from_config(cfg.online_eval, num_classes)
        self.online_record: dict[str, float] | None = None  # last online metrics of training, + epoch
        # label-free monitors (sslib.metrics.monitors) on rows the steps already computed; a method sets
        # monitor_views to two global crops' embeddings (B, d) each step for alignment/uniformity
        samples = check_int_at_least("online_eval.monitor_samples", cfg.online_eval.monitor_samples, 0)
        self.representation = RepresentationMonitor(samples)
        self.rank_collapse_threshold = check_unit_interval(
            "online_eval.rank_collapse_threshold",
            cfg.online_eval.rank_collapse_threshold,
            closed_right=True,
        )
        self.monitor_views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.clip_grad = clip_norm(cfg.optim)
        self.compile_backbone = bool(cfg.compile_backbone)
        self.channels_last = False  # set by prepare_for
        self._prepared_for: torch.device | None = None

    # --- to be provided by methods ---------------------------------------------------------------

    def ssl_modules(self) -> nn.ModuleDict:
        """The trainable modules of the self-supervised objective (backbone included)."""
        raise NotImplementedError

    def ssl_step(
        self, crops: list[torch.Tensor], indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Mapping[str, float | torch.Tensor]]:
        """Loss of one batch of crops, the first global crop's backbone features (B, D), and metrics.

        ``indices`` (B,) are the samples' dataset indices, for methods with per-sample state.
        """
        raise NotImplementedError

    # --- progress ------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return max(1, int(self.trainer.estimated_stepping_batches))

    @property
    def steps_per_epoch(self) -> float:
        return self.total_steps / max(1, self.trainer.max_epochs or 1)

    # --- device ------------------------------------------------------------------------------

    def backbones(self) -> list[nn.Module]:
        """The student's backbone and, with an EMA teacher, the teacher's."""
        teacher = (
            [self.teacher["backbone"]] if self.teacher is not None and "backbone" in self.teacher else []
        )
        return [self.backbone, *teacher]

    def prepare_for(self, device: torch.device) -> None:
        """Tune the backbones for ``device`` once, before the strategy moves or wraps the module: a conv
        backbone goes to channels_last where :func:`wants_channels_last` says so (and
        :meth:`device_batch` converts the batches); with ``compile_backbone`` each backbone's forward is
        compiled (``nn.Module.compile``)."""
        if self._prepared_for is not None:
            return
        self._prepared_for = device
        setting = self.cfg.channels_last
        self.channels_last = wants_channels_last(setting, device, self.backbone, stem_output_sizes(self.cfg))
        for backbone in self.backbones():
            if self.channels_last:
                backbone.to(memory_format=torch.channels_last)
            if self.compile_backbone:
                backbone.compile()

    def setup(self, stage: str) -> None:
        self.prepare_for(self.trainer.strategy.root_device)

    def device_batch(self, batch):
        """``batch`` as the backbone takes it on its device: channels_last images where
        :meth:`prepare_for` chose it (a step hook, not Lightning's batch-transfer hook, which the data
        module would shadow)."""
        return to_channels_last(batch) if self.channels_last else batch

    # --- training ------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        batch = self.device_batch(batch)
        crops, labels = batch[0], batch[1]
        loss, feats, metrics = self.ssl_step(crops, batch[2] if len(batch) > 2 else None)
        self.representation.add(feats, self.monitor_views)
        self.monitor_views = None  # do not keep this step's graph alive into the next one
        probe_logits = self.probe(feats.detach())
        probe_loss = F.cross_entropy(probe_logits, labels)
        acc = (probe_logits.argmax(1) == labels).float().mean()
        # shown by the progress bar when it redraws (sslib.app.callbacks.StepMetricsBar), not copied every step
        self.log_dict(dict(zip(STEP_METRICS, (loss, probe_loss, acc), strict=True)), sync_dist=True)
        # the metrics' Python numbers (schedules, cluster counts) go to the device in one copy
        self.log_dict(scalars_to_device(metrics, self.device), sync_dist=False)
        return loss + probe_loss

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Lightning's step, then the EMA teacher's update: before any callback's ``on_train_batch_end``,
        so that a checkpoint written there (mid-epoch, or on a signal) holds this step's teacher."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.teacher is None:
            return
        ema = self.cfg.method.ema
        momentum = cosine_ramp(  # the step just taken is step global_step + 1 (Lightning counts it next)
            ema_momentum_step(self.global_step + 1, self.momentum_step),
            self.total_steps,
            ema.base_momentum,
            ema.final_momentum,
        )
        student = self.ssl_modules()
        ema_update(self.teacher, nn.ModuleDict({k: student[k] for k in self.teacher}), momentum)
        self.log_dict(scalars_to_device({"schedule/ema_momentum": momentum}, self.device))

    def on_before_optimizer_step(self, optimizer) -> None:
        """With ``optim.clip_grad``, cap each gradient tensor of :meth:`ssl_modules` at that norm (DINO's
        ``clip_gradients``, main_dino.py L330-332). Lightning calls this after the step's backward and,
        under a gradient scaler, after unscaling; an optimiser step pre-hook would run before Lightning's
        closure computes the gradients."""
        if self.clip_grad:
            clip_per_parameter_(self.ssl_modules().parameters(), self.clip_grad)

    def on_train_epoch_end(self) -> None:
        """Log ``monitor/rankme`` (backbone features), ``monitor/alignment`` and ``monitor/uniformity``
        (the two views' embeddings) of the epoch's last steps; warn when RankMe falls below
        ``online_eval.rank_collapse_threshold`` of its maximum."""
        metrics = self.representation.compute()
        if not metrics:
            return
        self.log_dict({f"monitor/{k}": v for k, v in metrics.items()})
        threshold = self.rank_collapse_threshold
        top = self.representation.max_rank(self.feat_dim)
        if metrics["rankme"] < threshold * top:
            rank_zero_warn(
                f"possible dimensional collapse at epoch {self.current_epoch}: RankMe {metrics['rankme']:.1f} "
                f"of at most {top} (< {threshold:.0%})"
            )

    def configure_optimizers(self):
        world = self.trainer.world_size if self._trainer is not None else 1
        optimizer, scheduler = configure(
            self.cfg, self.ssl_modules(), self.probe, world, self.total_steps, self.steps_per_epoch
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- online evaluation ---------------------------------------------------------------------

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels = self.device_batch(batch)
        feats = self.backbone(images)
        if dataloader_idx == 0:
            self.online.add_bank(feats, labels)
        else:
            self.online.add_val(feats, labels, self.probe(feats))

    def on_validation_epoch_end(self) -> None:
        """Log ``val/knn_top1``, ``val/knn_top5``, ``val/probe_top1`` (the same on every rank); during
        training also remember them, with the number of epochs trained, for the checkpoint."""
        metrics = self.online.compute()
        if metrics is None:
            return
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True)
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.online_record = {"epochs": self.current_epoch + 1, **metrics}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.online_record is not None:
            checkpoint[CHECKPOINT_KEY] = self.online_record

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.online_record = checkpoint.get(CHECKPOINT_KEY)
