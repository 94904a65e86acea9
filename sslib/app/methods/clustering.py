"""One loop for the clustering methods (MIRA, SwAV, DINO): they differ only in their recipe."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig
from torch import nn

from sslib.app.builders import build_labeler, build_projector
from sslib.app.methods.base import SSLMethod
from sslib.errors import ConfigError
from sslib.heads import PrototypeHead
from sslib.labelers import label_stats_tensors
from sslib.losses import swapped_prediction_loss
from sslib.modules.crops import check_crop_forward, embed_crops
from sslib.modules.ema import make_teacher
from sslib.modules.queue import EmbeddingQueue
from sslib.validation import check_int_at_least, check_positive


def _queue_length(length: int, batch_size: int) -> int:
    """``method.queue.length``, a whole number of batches of ``data.batch_size`` (both per device): SwAV
    rounds its length down to one (main_swav.py L212-213), which would use the queue a step earlier than
    the length says, so another length is a one-line error naming the nearest ones."""
    check_int_at_least("method.queue.length", length, 0)
    if length % batch_size:
        below = length - length % batch_size
        nearest = " or ".join(str(n) for n in (below, below + batch_size) if n > 0)
        raise ConfigError(
            f"method.queue.length={length} must be a multiple of data.batch_size={batch_size} "
            f"(SwAV's queue holds whole batches), e.g. {nearest}"
        )
    return length


def _freeze_steps(m: DictConfig) -> int | None:
    """``method.freeze_prototypes_steps`` (an int >= 0, or null to count ``freeze_prototypes_epochs``)."""
    steps = m.freeze_prototypes_steps
    if steps is None:
        return None
    return check_int_at_least("method.freeze_prototypes_steps", steps, 0)


class ClusteringMethod(SSLMethod):
    """Backbone -> projector MLP -> prototypes; targets from a pluggable labeler; swapped prediction.

    Recipe knobs (``cfg.method``): ``num_prototypes`` K, ``projector_dims`` (hidden..., out),
    ``projector_norm`` / ``projector_activation`` (hidden layers: batchnorm + relu, or DINO's none + gelu),
    ``projector_last_norm`` (batch-normalise the embeddings before the prototypes), ``projector_init``
    (``trunc_normal``: DINO's), ``norm_last_layer`` (prototype gains fixed at 1; DINO's ViT-S: trained),
    ``prototype_parametrization`` (``weight_norm``: DINO's and MIRA's; ``renormalize``: SwAV's plain
    Linear with rows renormalised before every step, see :class:`PrototypeHead`), ``crop_forward``
    (``resolution`` or ``per_crop``, see :func:`sslib.modules.crops.embed_crops`),
    ``student_temperature``, ``ema`` ({enabled, base_momentum, final_momentum, share_prototypes,
    momentum_step}), ``freeze_prototypes_epochs`` or ``freeze_prototypes_steps`` (SwAV counts
    iterations), ``queue`` ({length, start_epoch}); the labeler comes from ``cfg.labeler``.
    Teacher logits are those of the global crops, from the EMA teacher when enabled, else from the
    student itself (no grad). The prototype head is shared with the teacher when ``share_prototypes``
    (MIRA), or EMA-averaged with the rest of the teacher (DINO). The teacher takes no stochastic depth.
    """

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes)
        m = cfg.method
        self.n_global = n_global
        check_positive("method.student_temperature", m.student_temperature)
        self.crop_forward = check_crop_forward(m.crop_forward)
        self.projector = build_projector(self.feat_dim, m)
        self.prototypes = PrototypeHead(
            m.projector_dims[-1],
            m.num_prototypes,
            m.norm_last_layer,
            m.prototype_parametrization,
        )
        self.freeze_prototypes_steps = _freeze_steps(m)
        self.labeler, self.labeler_schedule = build_labeler(cfg)
        if m.ema.enabled:
            parts = {"backbone": self.backbone, "projector": self.projector}
            if not m.ema.share_prototypes:
                parts["prototypes"] = self.prototypes
            self.teacher = make_teacher(nn.ModuleDict(parts))
        self.queue = (
            EmbeddingQueue(n_global, _queue_length(m.queue.length, cfg.data.batch_size), m.projector_dims[-1])
            if m.queue.length
            else None
        )
        self._last_stats: dict[str, torch.Tensor] | None = None  # label_stats_tensors of the last batch

    def ssl_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict(
            {"backbone": self.backbone, "projector": self.projector, "prototypes": self.prototypes}
        )

    # --- one step ------------------------------------------------------------------------------

    def ssl_step(self, crops: list[torch.Tensor], indices: torch.Tensor | None = None):
        m = self.cfg.method
        feats, z, student = self._student_outputs(crops)
        teacher_logits, teacher_z = self._teacher_outputs(crops[: self.n_global], student, z)
        # finiteness: the loss is guarded instead, without a device read per step (DivergenceGuard)
        targets = self.labeler.label_views(self._with_queue(teacher_logits), check_finite=False)
        targets = [t[: len(crops[v])] for v, t in enumerate(targets)]
        if self.queue is not None and self.current_epoch >= m.queue.start_epoch:
            self.queue.push(teacher_z)
        loss = swapped_prediction_loss(targets, student, m.student_temperature)
        return loss, feats[: len(crops[0])], self._label_metrics(targets[0])

    def _student_outputs(
        self, crops: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Backbone features of all crops (sum of B_c, D), then projector embeddings and logits per crop;
        the first two global crops' embeddings are kept for the monitors (``monitor_views``)."""
        feats, z = embed_crops(self.backbone, self.projector, crops, self.crop_forward)
        sizes = [c.shape[0] for c in crops]
        views = list(z.split(sizes))
        self.monitor_views = (views[0], views[1]) if self.n_global > 1 else None  # alignment, uniformity
        return feats, views, list(self.prototypes(z).split(sizes))

    def _label_metrics(self, targets: torch.Tensor) -> dict[str, float | torch.Tensor]:
        """``labels/*`` statistics of ``targets`` (B, K) (kept for the collapse check) and ``schedule/*``;
        the statistics stay device tensors, read only when Lightning writes its logs."""
        stats = label_stats_tensors(targets)
        self._last_stats = stats
        metrics: dict[str, float | torch.Tensor] = {f"labels/{k}": v for k, v in stats.items()}
        metrics["labels/n_clusters"] = float(targets.shape[1])
        metrics.update({f"schedule/{k}": float(getattr(self.labeler, k)) for k in self.labeler_schedule})
        return metrics

    @torch.no_grad()
    def _teacher_outputs(self, global_crops: list[torch.Tensor], student_logits, student_z):
        """Teacher logits (B, K) and L2-normalised projector embeddings (B, d) of each global crop.

        Without EMA (SwAV) these are the student's own outputs, detached.
        """
        n = len(global_crops)
        if self.teacher is None:
            logits, z = [s.detach() for s in student_logits[:n]], [e.detach() for e in student_z[:n]]
        else:
            sizes = [c.shape[0] for c in global_crops]
            _, emb = embed_crops(
                self.teacher["backbone"], self.teacher["projector"], global_crops, self.crop_forward
            )
            prototypes = self.teacher["prototypes"] if "prototypes" in self.teacher else self.prototypes  # noqa: SIM401 (ModuleDict has no get)
            logits, z = list(prototypes(emb).split(sizes)), list(emb.split(sizes))
        return logits, [torch.nn.functional.normalize(e, dim=1) for e in z]

    def _with_queue(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        """Append the queued embeddings' current prototype scores to each view's logits, once the queue
        is full: SwAV uses it only when its last row is filled (facebookresearch/swav@06b1b7c
        main_swav.py L296), so the first ``length / B`` steps after it starts label the batch alone."""
        if (
            self.queue is None
            or self.current_epoch < self.cfg.method.queue.start_epoch
            or not self.queue.full()
        ):
            return logits
        with torch.no_grad():
            return [
                torch.cat([lg, self.prototypes(self.queue.stored(v)).to(lg.dtype)])
                for v, lg in enumerate(logits)
            ]

    # --- hooks ---------------------------------------------------------------------------------

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Set the scheduled labeler attributes for this iteration; renormalise SwAV's prototypes."""
        for attr, ramp in self.labeler_schedule.items():
            value = ramp.value(self.global_step, self.total_steps, self.steps_per_epoch, self.current_epoch)
            setattr(self.labeler, attr, value)
        self.prototypes.renormalize_()

    def on_after_backward(self) -> None:
        """Cancel the prototypes' gradients during the first iterations (SwAV's
        ``freeze_prototypes_niters``, main_swav.py L324-328; DINO's ``cancel_gradients_last_layer``)."""
        steps = self.freeze_prototypes_steps
        if self.global_step < (
            self.cfg.method.freeze_prototypes_epochs * self.steps_per_epoch if steps is None else steps
        ):
            for p in self.prototypes.parameters_to_freeze():
                p.grad = None

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        stats = self._last_stats
        if stats is None:
            return
        threshold = self.cfg.online_eval.collapse_threshold
        used, k = int(stats["clusters_used"]), self.cfg.method.num_prototypes
        reachable = min(k, self.cfg.data.batch_size * self.trainer.world_size)
        if used < threshold * reachable:
            rank_zero_warn(
                f"possible collapse at epoch {self.current_epoch}: {used} of {k} "
                f"clusters used by the last batch (< {threshold:.0%} of {reachable} reachable)"
            )
