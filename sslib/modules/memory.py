"""DeepCluster-v2's memory bank: the latest embedding of every training sample."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslib.distributed import all_gather


class MemoryBank:
    """L2-normalised embeddings (N, d) of the N training samples, each from the last step that saw it.

    Stored in ``dtype``: float32 (the prototypes' dtype) also under mixed precision.

    ``filled`` (N,) marks the rows written so far. :meth:`write` all-gathers the batch of every rank,
    so all ranks hold the same bank: rank 0's checkpoint is complete and k-means can split the rows
    over ranks. The bank is plain tensors saved through :meth:`state_dict` rather than module buffers:
    N is only known once the data is, and DDP would broadcast buffers at every step.

    Args:
        size: The number of training samples N.
        dim: The embedding width d.
        device: Where the bank lives.
        dtype: The embeddings' dtype.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.embeddings = torch.zeros(size, dim, device=device, dtype=dtype)
        self.filled = torch.zeros(size, dtype=torch.bool, device=device)

    @torch.no_grad()
    def write(self, indices: torch.Tensor, z: torch.Tensor) -> None:
        """Store the rows ``z``, normalised in the bank's dtype, at ``indices``, those of every rank.

        Args:
            indices: The samples' indices in the dataset, shape ``(B,)``.
            z: Their embeddings, shape ``(B, d)``.
        """
        rows = all_gather(indices.to(self.filled.device))
        z = all_gather(z.detach().to(self.embeddings.dtype))
        self.embeddings[rows] = F.normalize(z, dim=1).to(self.embeddings.device)
        self.filled[rows] = True

    def to(self, device: torch.device | str) -> MemoryBank:
        """Move this bank's tensors to ``device``, in place.

        Args:
            device: The target device.

        Returns:
            This bank.
        """
        self.embeddings, self.filled = self.embeddings.to(device), self.filled.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{embeddings: (N, d), filled: (N,)}``, for a checkpoint."""
        return {"embeddings": self.embeddings, "filled": self.filled}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> MemoryBank:
        """The bank saved by :meth:`state_dict`.

        Args:
            state: ``{embeddings: (N, d), filled: (N,)}``, as :meth:`state_dict` returns it.

        Returns:
            The bank, holding those tensors.
        """
        bank = cls(0, 0)
        bank.embeddings, bank.filled = state["embeddings"], state["filled"]
        return bank
