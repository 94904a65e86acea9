"""DeepCluster-v2 (Caron et al., NeurIPS 2020, the SwAV paper): k-means on a memory bank as the pseudo-labeler."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from sslib.app.methods.clustering import ClusteringMethod
from sslib.distributed import all_reduce, rank, world_size
from sslib.errors import ConfigError
from sslib.labelers.kmeans import spherical_kmeans
from sslib.losses import cluster_prediction_loss
from sslib.modules.memory import MemoryBank
from sslib.validation import check_int_at_least

CHECKPOINT_KEY = "deepcluster_memory"


class DeepClusterV2(ClusteringMethod):
    """Backbone -> projector -> prototypes set to k-means centroids; every crop predicts its sample's cluster.

    As SwAV's ``main_deepclusterv2.py``: before the first epoch, a no-grad pass over one epoch of training
    batches fills a :class:`MemoryBank` with the L2-normalised projector embeddings of the first global crop
    (``init_memory``), and every training step overwrites its samples' rows. At each epoch start, spherical
    k-means (``method.kmeans_iters`` rounds, K = ``method.num_prototypes``) on the bank gives centroids that
    become the prototypes (never trained), and the labeler's argmax on the bank's logits gives each sample's
    cluster (``cluster_memory``). The loss is :func:`cluster_prediction_loss` at ``method.student_temperature``.
    No teacher, no queue; the bank is saved in checkpoints.
    """

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        if self.teacher is not None or self.queue is not None:
            raise ConfigError(
                "deepclusterv2 has no EMA teacher or queue: keep method.ema.enabled=false, method.queue.length=0"
            )
        self.kmeans_iters = check_int_at_least("method.kmeans_iters", cfg.method.kmeans_iters, 0)
        self.prototypes.requires_grad_(False)  # SwAV: freeze_prototypes_niters=1e10, i.e. never trained
        self.memory: MemoryBank | None = None
        self.clusters: torch.Tensor | None = None  # (N,) each sample's cluster, -1 when not in the bank

    def ssl_step(self, crops: list[torch.Tensor], indices: torch.Tensor | None = None):
        if indices is None:
            raise ConfigError("deepclusterv2 needs the samples' dataset indices: ssl_step(crops, indices)")
        if self.clusters is None:
            raise RuntimeError("deepclusterv2 clusters its memory bank at each epoch start, before any step")
        feats, z, student = self._student_outputs(crops)
        self._bank().write(indices, z[0])
        clusters = self.clusters[indices]
        loss = cluster_prediction_loss(student, clusters, self.cfg.method.student_temperature)
        targets = F.one_hot(clusters[clusters >= 0], self.cfg.method.num_prototypes).float()
        return loss, feats[: len(crops[0])], self._label_metrics(targets)

    # --- memory bank and clustering ----------------------------------------------------------------

    def _bank(self) -> MemoryBank:
        if self.memory is None:
            raise RuntimeError(
                "deepclusterv2's memory bank is made at train start or loaded from a checkpoint"
            )
        return self.memory

    def on_train_start(self) -> None:
        if self.memory is None:  # a resumed run has the bank of its checkpoint
            datamodule = getattr(self.trainer, "datamodule")  # noqa: B009 (set in fit; Trainer does not declare it)
            size = len(datamodule.train_set)
            dim, dtype = self.cfg.method.projector_dims[-1], self.prototypes.prototypes().dtype
            self.memory = MemoryBank(size, dim, self.device, dtype)
            self._fill_memory(datamodule.train_dataloader())
        self.memory.to(self.device)

    @torch.no_grad()
    def _fill_memory(self, loader: Iterable) -> None:
        """SwAV's ``init_memory``: embed the first global crop of one epoch of training batches.

        ``loader`` is a fresh training loader of the data module (torchvision or DALI: the same first
        epoch of batches), so the trainer's own iterator is left alone.
        """
        batches = self.trainer.num_training_batches
        memory = self._bank()
        for crops, _, indices in itertools.islice(loader, None if math.isinf(batches) else int(batches)):
            with self.trainer.precision_plugin.forward_context():
                z = self.projector(self.backbone(crops[0].to(self.device)))
            memory.write(indices.to(self.device), z)

    @torch.no_grad()
    def on_train_epoch_start(self) -> None:
        """SwAV's ``cluster_memory``: k-means on the bank, centroids -> prototypes, every sample's cluster.

        The initial centroids are K filled rows drawn with seed ``seed + epoch`` (the same on every rank).
        Each rank clusters and labels every world-th filled row; k-means all-reduces its sums and the
        clusters are all-reduced (max over -1 elsewhere), so every rank knows every sample's cluster.
        """
        memory = self._bank()
        k, bank = self.cfg.method.num_prototypes, memory.embeddings
        rows = memory.filled.nonzero().squeeze(1)
        if len(rows) < k:
            raise ConfigError(
                f"k-means needs num_prototypes={k} filled memory rows, got {len(rows)}; "
                "reduce method.num_prototypes"
            )
        generator = torch.Generator().manual_seed(self.cfg.seed + self.current_epoch)
        start = rows[torch.randperm(len(rows), generator=generator)[:k].to(rows.device)]
        mine = rows[rank() :: world_size()]
        self.prototypes.set_prototypes(spherical_kmeans(bank[mine], bank[start], self.kmeans_iters))
        clusters = torch.full(memory.filled.shape, -1, dtype=torch.long, device=bank.device)
        clusters[mine] = self.labeler(self.prototypes(bank[mine])).argmax(dim=1)
        self.clusters = all_reduce(clusters, op="max")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.memory is not None:
            checkpoint[CHECKPOINT_KEY] = self.memory.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if CHECKPOINT_KEY in checkpoint:
            self.memory = MemoryBank.from_state_dict(checkpoint[CHECKPOINT_KEY])
