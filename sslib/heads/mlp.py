"""The MLP used as projector / predictor by SimCLR, BYOL, Barlow Twins, SwAV, DINO, MIRA, ..."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from sslib.errors import ConfigError
from sslib.validation import check_int_at_least

NORMS = ("batchnorm", "none")
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": lambda: nn.ReLU(inplace=True), "gelu": nn.GELU}
INITS = ("default", "trunc_normal")


class MLP(nn.Sequential):
    """(B, dims[0]) -> (B, dims[-1]) through ``len(dims) - 1`` Linear layers.

    With ``norm="batchnorm"`` every hidden layer is ``Linear(bias=False) -> BatchNorm1d -> act`` (a bias
    before BatchNorm is redundant); with ``norm="none"`` it is ``Linear(bias=True) -> act`` (DINO's head,
    SimCLR in solo-learn). The last layer is a plain ``Linear`` (bias per ``last_bias``), followed by
    ``BatchNorm1d(affine=False)`` when ``last_norm``.

    Args:
        dims: The widths, input first: ``[2048, 2048, 2048, 256]`` is the usual projector,
            in -> 2048 -> 2048 -> 256. At least 2 entries, each >= 1.
        last_norm: Whether a ``BatchNorm1d(affine=False)`` follows the last layer.
        last_bias: Whether the last Linear layer has a bias.
        norm: ``"batchnorm"`` or ``"none"``, the hidden layers' normalisation.
        activation: ``"relu"`` or ``"gelu"`` (DINO).
        init: ``"default"`` keeps PyTorch's initialisation; ``"trunc_normal"`` draws the Linear weights
            from N(0, 0.02^2) truncated to [-2, 2] with zero biases, as DINO's head
            (dino vision_transformer.py L281-285).

    Raises:
        ConfigError: If ``dims`` has fewer than 2 entries or one below 1, or ``norm``, ``activation``
            or ``init`` is unknown.
    """

    def __init__(
        self,
        dims: Sequence[int],
        last_norm: bool = False,
        last_bias: bool = True,
        norm: str = "batchnorm",
        activation: str = "relu",
        init: str = "default",
    ) -> None:
        dims = list(dims)
        if len(dims) < 2:
            raise ConfigError(f"dims needs at least 2 entries (in and out), got {dims!r}")
        for i, d in enumerate(dims):
            check_int_at_least(f"dims[{i}]", d, 1)
        if norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
            if norm == "batchnorm":
                layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out)]
            else:
                layers.append(nn.Linear(d_in, d_out))
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(dims[-2], dims[-1], bias=last_bias))
        if last_norm:
            layers.append(nn.BatchNorm1d(dims[-1], affine=False))
        super().__init__(*layers)
        if init == "trunc_normal":
            for layer in self:
                if isinstance(layer, nn.Linear):
                    nn.init.trunc_normal_(layer.weight, std=0.02)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
