"""The MLP used as projector / predictor by SimCLR, BYOL, Barlow Twins, SwAV, ..."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from sslib.validation import check_int_at_least


class MLP(nn.Sequential):
    """(B, dims[0]) -> (B, dims[-1]) through ``len(dims) - 1`` Linear layers.

    Every hidden layer is ``Linear(bias=False) -> BatchNorm1d -> ReLU`` (a bias before BatchNorm is
    redundant); the last layer is a plain ``Linear`` (bias per ``last_bias``), followed by
    ``BatchNorm1d(affine=False)`` when ``last_norm`` (Barlow Twins). ``dims=[2048, 2048, 2048, 256]``
    is the usual projector: in -> 2048 -> 2048 -> 256.
    """

    def __init__(self, dims: Sequence[int], last_norm: bool = False, last_bias: bool = True) -> None:
        dims = list(dims)
        if len(dims) < 2:
            raise ValueError(f"MLP dims needs at least 2 entries (in and out), got {dims!r}")
        for i, d in enumerate(dims):
            check_int_at_least(f"MLP dims[{i}]", d, 1)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
            layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias))
        if last_norm:
            layers.append(nn.BatchNorm1d(dims[-1], affine=False))
        super().__init__(*layers)
