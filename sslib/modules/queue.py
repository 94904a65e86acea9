"""SwAV's queue of past embeddings, which enlarges the batch seen by the labeler."""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingQueue(nn.Module):
    """FIFO of the last ``length`` embeddings (d,) per global view, kept in buffers (checkpointed).

    With small batches, SwAV labels the batch together with the queued embeddings scored by the
    current prototypes, so the equipartition constraint is spread over ``B + length`` samples.

    Args:
        n_views: The number of global views, each with its own queue.
        length: The number of embeddings kept per view.
        dim: The embedding width d.
    """

    embeddings: torch.Tensor
    filled: torch.Tensor

    def __init__(self, n_views: int, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(n_views, length, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def stored(self, view: int) -> torch.Tensor:
        """The queued embeddings of ``view``, newest first.

        Args:
            view: The index of the global view.

        Returns:
            The filled rows, shape ``(n_filled, d)``.
        """
        return self.embeddings[view, : int(self.filled)]

    def full(self) -> bool:
        """Whether every row holds an embedding (reads the count from the device)."""
        return int(self.filled) == self.embeddings.shape[1]

    @torch.no_grad()
    def push(self, batch: list[torch.Tensor]) -> None:
        """Prepend each view's batch, dropping the oldest rows.

        Args:
            batch: The embeddings of each view, each of shape ``(B, d)``.
        """
        length = self.embeddings.shape[1]
        for v, z in enumerate(batch):
            z = z.detach().to(self.embeddings.dtype)[:length]
            self.embeddings[v] = torch.cat([z, self.embeddings[v, : length - z.shape[0]]])
        self.filled.fill_(min(length, int(self.filled) + batch[0].shape[0]))
