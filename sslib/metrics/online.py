"""Online evaluation during pre-training: weighted kNN of the val split against a bank of train features,
and the accuracy of the detached linear probe, computed identically on every rank.

The data module gives each rank a contiguous shard of the bank and of the val split
(:func:`sslib.app.datamodule.shard`); :class:`OnlineMonitor` keeps that rank's L2-normalised features (the
bank in ``bank_dtype``), and at the end of validation gathers every rank's rows in rank order, which is
the dataset order, so each sample counts once and every rank gets the single-process result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from sslib.distributed import all_gather
from sslib.metrics.knn import knn_accuracy
from sslib.validation import check_choice, check_int_at_least, check_positive

BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHECKPOINT_KEY = "online_eval"  # the last online metrics in a training checkpoint (see SSLMethod)


def gather_rows(rows: Tensor) -> Tensor:
    """Every rank's ``rows`` concatenated in rank order.

    Ranks may hold different numbers of rows (they are padded to the largest for the collective, the
    padding dropped).

    Args:
        rows: This rank's rows, shape ``(n_r, ...)``.

    Returns:
        All ranks' rows, shape ``(sum n_r, ...)``.
    """
    counts = all_gather(torch.tensor([rows.shape[0]], device=rows.device)).tolist()
    if len(counts) == 1:
        return rows
    padded = rows.new_zeros((max(counts), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    parts = all_gather(padded).split(max(counts))
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])


class OnlineMonitor:
    """Collects one validation pass and computes ``{"knn_top1", "knn_top5", "probe_top1"}`` in percent.

    :meth:`add_bank` for the bank loader, :meth:`add_val` for the val loader; :meth:`compute` gathers
    all ranks and runs the weighted kNN (:mod:`sslib.metrics.knn`, cosine, ``k``, ``temperature``) of
    val against bank. Val features are kept in float32, labels exact.

    Args:
        num_classes: The number of classes C.
        k: The kNN's number of neighbours.
        temperature: The kNN's temperature.
        bank_dtype: The dtype the unit-norm bank is kept in (float16 halves its memory; similarities
            then carry ~1e-3 relative error).
    """

    def __init__(
        self,
        num_classes: int,
        k: int = 20,
        temperature: float = 0.07,
        bank_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_classes, self.k, self.temperature, self.bank_dtype = num_classes, k, temperature, bank_dtype
        self.reset()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], num_classes: int) -> OnlineMonitor:
        """The monitor of an ``online_eval`` config block.

        Args:
            cfg: The block: ``every_n_epochs``, ``knn_k``, ``knn_temperature``, ``bank_dtype``
                (``bank_fraction`` is checked by the data module, which draws the bank).
            num_classes: The number of classes C.

        Returns:
            The monitor.

        Raises:
            ConfigError: If a value is out of its range or ``bank_dtype`` is unknown.
        """
        check_int_at_least("online_eval.every_n_epochs", cfg["every_n_epochs"], 1)
        return cls(
            num_classes,
            check_int_at_least("online_eval.knn_k", cfg["knn_k"], 1),
            check_positive("online_eval.knn_temperature", cfg["knn_temperature"]),
            BANK_DTYPES[check_choice("online_eval.bank_dtype", cfg["bank_dtype"], tuple(BANK_DTYPES))],
        )

    def reset(self) -> None:
        """Drop the batches collected so far."""
        self._bank: list[tuple[Tensor, Tensor]] = []
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []

    def add_bank(self, features: Tensor, labels: Tensor) -> None:
        """Collect a batch of the bank loader.

        Args:
            features: Backbone features, shape ``(B, D)``.
            labels: Their classes, shape ``(B,)``.
        """
        self._bank.append((F.normalize(features.float(), dim=1).to(self.bank_dtype), labels.long()))

    def add_val(self, features: Tensor, labels: Tensor, probe_logits: Tensor) -> None:
        """Collect a batch of the val loader.

        Args:
            features: Backbone features, shape ``(B, D)``.
            labels: Their classes, shape ``(B,)``.
            probe_logits: The linear probe's logits, shape ``(B, C)``.
        """
        hits = (probe_logits.argmax(dim=1) == labels).to(torch.uint8)  # gloo gathers no bools
        self._val.append((F.normalize(features.float(), dim=1), labels.long(), hits))

    def gathered(self) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
        """All ranks' collected rows; clears the collected batches.

        Returns:
            ``((bank features, bank labels), (val features, val labels, probe hits))`` of all ranks, or
            ``None`` when this pass saw no bank or no val batch.
        """
        bank, val = self._bank, self._val
        self.reset()
        if not bank or not val:
            return None
        return tuple(gather_rows(torch.cat(c)) for c in zip(*bank, strict=True)), tuple(
            gather_rows(torch.cat(c)) for c in zip(*val, strict=True)
        )

    def compute(self) -> dict[str, float] | None:
        """kNN top-1/top-5 and probe top-1 (percent) of the collected pass.

        Returns:
            ``{"knn_top1", "knn_top5", "probe_top1"}``, or ``None`` if the pass was empty.
        """
        both = self.gathered()
        if both is None:
            return None
        (bank, bank_labels), (val, val_labels, hits) = both
        acc = knn_accuracy(
            bank, bank_labels, val, val_labels, self.num_classes, self.k, self.temperature, normalized=True
        )
        return {
            "knn_top1": acc["top1"],
            "knn_top5": acc["top5"],
            "probe_top1": 100.0 * hits.float().mean().item(),
        }
