"""Multi-crop of a whole batch in a few tensor ops: the batched counterpart of ``MultiCropTransform``.

Every view of every sample draws its parameters from :func:`~sslib.data.keyed_random.keyed_uniform`
keyed by ``(seed, epoch, index, view)``, so a sample's crops do not depend on its batch, its rank or
the device, and follow the distributions of :class:`~sslib.data.transforms.ViewTransform`: the same
random resized crop (torchvision's ``get_params``), flip, colour jitter (factors and random order),
grayscale, PIL blur and solarize probabilities of ``Augment`` with the per-view blur/solarize values.

The parameters are drawn on the CPU and copied to the images' device from pinned memory without
waiting: what the batch's ops need on the host (how many samples take each jitter op, which ones are
blurred) is known there, so making a batch on a GPU never reads anything back from it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sslib.data import batched
from sslib.data.keyed_random import keyed_uniform
from sslib.data.transforms import (
    ASPECT_RATIO,
    SOLARIZE_THRESHOLD,
    Augment,
    CropGroup,
    _mean_std,
    view_specs,
)
from sslib.errors import ConfigError
from sslib.nonblocking import to_device

# Columns of a view's (B, DRAWS) uniforms.
_CROP = slice(0, 2 * batched.CROP_ATTEMPTS + 2)
_FLIP, _JITTER, _GRAY, _BLUR, _SIGMA, _SOLARIZE = range(_CROP.stop, _CROP.stop + 6)
_FACTORS = slice(_SOLARIZE + 1, _SOLARIZE + 5)
_ORDER = slice(_FACTORS.stop, _FACTORS.stop + 4)
DRAWS = _ORDER.stop
NO_OP = len(batched.JITTER_OPS)  # the jitter "op" of a sample that is not jittered


@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one view of a batch of B samples.

    ``boxes`` (B, 4) int64 ``(top, left, h, w)``; ``flip``, ``jitter``, ``gray``, ``blur``, ``solarize``
    (B,) bool; ``factors`` (B, 4) float64 brightness, contrast, saturation, hue factors; ``order`` (B, 4)
    int64, the jitter ops' indices in the order applied; ``sigma`` (B,) float64 blur radii. Derived from
    them: ``steps`` (B, 4) int64, the jitter op each sample takes at each step (:data:`NO_OP` for none),
    ``counts`` (a host list, per step the number of samples taking each op, then ``NO_OP``) and
    ``blurred`` (K,) int64, the blurred samples.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor
    sigma: Tensor
    solarize: Tensor
    steps: Tensor
    counts: list[list[int]]
    blurred: Tensor

    def to(self, device: torch.device) -> ViewParams:
        """These parameters on ``device`` (:func:`to_device`); ``counts`` stays on the host."""
        moved: dict[str, Any] = {
            field.name: to_device(value, device)
            for field in dataclasses.fields(self)
            if isinstance(value := getattr(self, field.name), Tensor)
        }
        return dataclasses.replace(self, **moved)


def _happens(u: Tensor, p: float) -> Tensor:
    """``u < p`` (never for p = 0, always for p = 1, as ``transforms._happens``)."""
    return u < p


class BatchViewTransform:
    """uint8 (B, 3, H, W) images -> one normalised float32 (B, 3, size, size) view per sample.

    Stream ``stream`` (the view's position among the crops) keys its random draws; ``blur_p`` and
    ``solarize_p`` are this view's probabilities, as in ``ViewTransform``.
    """

    def __init__(
        self,
        crop: CropGroup,
        aug: Augment,
        blur_p: float,
        solarize_p: float,
        mean: Sequence[float],
        std: Sequence[float],
        stream: int,
    ) -> None:
        self.crop, self.aug, self.blur_p, self.solarize_p, self.stream = crop, aug, blur_p, solarize_p, stream
        self.mean, self.std = _mean_std(mean, std)
        spreads = (aug.brightness, aug.contrast, aug.saturation)
        self.ranges = [(max(0.0, 1.0 - v), 1.0 + v) for v in spreads] + [(-aug.hue, aug.hue)]
        self.blur_reach = batched.box_reach(aug.blur_sigma[1])
        self._constants: dict[torch.device, dict[str, Tensor]] = {}

    def constants(self, device: torch.device) -> dict[str, Tensor]:
        """Normalisation ``mean``/``std`` (1, 3, 1, 1), factor ranges ``low``/``high`` (4,) and the jitter
        ops ``enabled`` (4,) on ``device``, copied there once (a copy to a GPU waits for its queue)."""
        if device not in self._constants:
            as_tensor = functools.partial(torch.tensor, device=device)
            self._constants[device] = {
                "mean": as_tensor(self.mean).view(1, 3, 1, 1),
                "std": as_tensor(self.std).view(1, 3, 1, 1),
                "low": as_tensor([r[0] for r in self.ranges], dtype=torch.float64),
                "high": as_tensor([r[1] for r in self.ranges], dtype=torch.float64),
                "enabled": as_tensor([r[0] != r[1] for r in self.ranges]),
            }
        return self._constants[device]

    def params(self, seed: int, epoch: int, index: Tensor, height: int, width: int) -> ViewParams:
        """The parameters of the samples ``index`` (B,) of epoch ``epoch``, on ``index``'s device (the CPU
        for the loader: ``counts`` is then read without waiting for a GPU)."""
        u = keyed_uniform(seed, epoch, index, self.stream, DRAWS)
        aug = self.aug
        constants = self.constants(u.device)
        lo, hi = constants["low"], constants["high"]
        sigma_lo, sigma_hi = aug.blur_sigma
        jitter, order = _happens(u[:, _JITTER], aug.color_jitter_p), u[:, _ORDER].argsort(1)
        blur = _happens(u[:, _BLUR], self.blur_p)
        steps = torch.where(jitter.unsqueeze(1) & constants["enabled"][order], order, NO_OP)  # (B, 4)
        return ViewParams(
            boxes=batched.crop_boxes(
                u[:, _CROP], height, width, self.crop.scale, (ASPECT_RATIO[0], ASPECT_RATIO[1])
            ),
            flip=_happens(u[:, _FLIP], aug.hflip_p),
            jitter=jitter,
            factors=lo + (hi - lo) * u[:, _FACTORS],
            order=order,
            gray=_happens(u[:, _GRAY], aug.grayscale_p),
            blur=blur,
            sigma=sigma_lo + (sigma_hi - sigma_lo) * u[:, _SIGMA],
            solarize=_happens(u[:, _SOLARIZE], self.solarize_p),
            steps=steps,
            counts=torch.nn.functional.one_hot(steps, NO_OP + 1).sum(0).tolist(),  # (4 steps, ops + 1)
            blurred=blur.nonzero().squeeze(1),
        )

    def _jitter(self, x: Tensor, p: ViewParams) -> Tensor:
        """Colour jitter of the jittered samples, each op in the sample's ``order``.

        At step ``t`` the batch is arranged by the op each sample takes then (:data:`NO_OP` for samples
        not jittered and for ops of zero spread, which ``ViewTransform`` leaves out), so every op runs
        once per step on a contiguous slice, whose bounds ``p.counts`` gives on the host.
        """
        steps, counts = p.steps, p.counts
        arranged = torch.arange(len(x), device=x.device)  # x[i] is sample arranged[i]
        for t in range(steps.shape[1]):
            if counts[t][NO_OP] == len(x):
                continue
            order = steps[:, t].argsort(stable=True)  # the samples, by their op at step t
            x = x[arranged.argsort()[order]]
            arranged, factors = order, p.factors[order]
            start = 0
            for op, n in enumerate(counts[t][:NO_OP]):
                if n:
                    rows = slice(start, start + n)
                    x[rows] = batched.JITTER_OPS[op](x[rows], factors[rows, op])
                start += n
        return x[arranged.argsort()]

    def __call__(self, images: Tensor, p: ViewParams) -> Tensor:
        """Crop, flip, jitter, grayscale, blur, solarize and normalise, in ``ViewTransform``'s order."""
        aug = self.aug
        x = batched.resized_crop(images, p.boxes, self.crop.size, aug.interpolation, p.flip)
        if aug.color_jitter_p > 0:
            x = self._jitter(x, p)
        if aug.grayscale_p > 0:
            x = torch.where(p.gray.view(-1, 1, 1, 1), batched.grayscale(x).expand_as(x), x)
        if self.blur_p > 0:
            chosen = p.blurred
            x = x.index_copy(0, chosen, batched.blur(x[chosen], p.sigma[chosen], self.blur_reach))
        if self.solarize_p > 0:
            x = batched.solarize(x, p.solarize, SOLARIZE_THRESHOLD)
        constants = self.constants(x.device)
        return (x - constants["mean"]) / constants["std"]


class BatchMultiCrop:
    """uint8 (B, 3, H, W) images of samples ``index`` -> the ``n_crops`` float32 (B, 3, size, size)
    views of ``MultiCropTransform``, global views first (streams ``0 .. n_crops - 1``)."""

    def __init__(
        self,
        global_crops: CropGroup,
        local_crops: CropGroup | None,
        augment: Augment,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if global_crops.n < 1:
            raise ConfigError(f"need at least one global crop, got n={global_crops.n}")
        self.views = [
            BatchViewTransform(crop, augment, blur_p, solarize_p, mean, std, stream)
            for stream, (crop, blur_p, solarize_p) in enumerate(
                view_specs(global_crops, local_crops, augment)
            )
        ]

    def __call__(self, images: Tensor, seed: int, epoch: int, index: Tensor) -> list[Tensor]:
        """The views of ``images`` (on their device), the samples ``index`` (B,) of epoch ``epoch``; the
        parameters are drawn on the CPU (module docstring)."""
        height, width = images.shape[-2:]
        index = index.cpu()
        return [
            view(images, view.params(seed, epoch, index, height, width).to(images.device))
            for view in self.views
        ]
