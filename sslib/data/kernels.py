"""Faster CPU kernels for the two costliest view ops: a closed-form hue shift and PIL's Gaussian blur.

On a 224 x 224 float image (one thread), torchvision's hue shift converts to HSV and back through a
gather over six cases; :func:`adjust_hue` shifts hue with a closed form (about 2x faster, equal to
torchvision's to float rounding). :func:`pil_gaussian_blur` is the blur of ``PIL.ImageFilter.GaussianBlur``
(the blur of the MIRA, DINO, MoCo-v3 and solo-learn transforms) on float tensors: three passes of an
extended box filter per axis, a few shifted multiply-adds each.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from sslib.errors import ConfigError

# HSV -> RGB offsets of the red, green and blue channels, in sixths of a turn: 5, 3, 1, as the
# (start, end, step) of a torch.arange made on the image's device (no host-to-device copy).
_CHANNEL_OFFSETS = (5.0, 0.0, -2.0)
Number = TypeVar("Number", float, Tensor)  # a float, or a tensor of them element-wise
BOX_PASSES = 3  # PIL's GaussianBlur: 3 box passes per axis (ImageFilter.GaussianBlur, Pillow >= 4.3)


def adjust_hue(image: Tensor, hue_factor: float | Tensor) -> Tensor:
    """Rotate the hue of a float RGB (..., 3, H, W) image in [0, 1] by ``hue_factor`` turns.

    ``hue_factor`` is a number in [-0.5, 0.5] or a tensor of them broadcastable to (..., H, W), e.g.
    (B, 1, 1) for one factor per image of a batch (not checked: its values stay on their device).

    Same result as ``torchvision.transforms.v2.functional.adjust_hue`` (to float rounding): with
    ``v = max``, ``c = max - min`` and hue ``h`` in sixths, channel ``n`` is
    ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``k = (offset_n + h + 6 * hue_factor) mod 6``.
    """
    if not isinstance(hue_factor, Tensor) and not -0.5 <= hue_factor <= 0.5:
        raise ConfigError(f"hue_factor must be in [-0.5, 0.5], got {hue_factor}")
    r, g, b = image.unbind(-3)
    low, high = torch.aminmax(image, dim=-3)
    chroma = high - low
    # Hue in sixths of a turn; ties pick red, then green, as torchvision does (irrelevant when c = 0).
    sixths = torch.where(
        high == r,
        g - b,
        torch.where(high == g, (b - r).add_(chroma, alpha=2.0), (r - g).add_(chroma, alpha=4.0)),
    )
    sixths.div_(torch.where(chroma > 0, chroma, 1.0)).add_(6.0 * hue_factor)
    offsets = torch.arange(*_CHANNEL_OFFSETS, device=image.device, dtype=image.dtype).view(3, 1, 1)
    k = (offsets + sixths.unsqueeze(-3)).remainder_(6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return torch.addcmul(high.unsqueeze(-3), chroma.unsqueeze(-3), ramp, value=-1.0)


def box_radius(sigma: Number, passes: int = BOX_PASSES) -> Number:
    """Radius ``r = l + a`` of the extended box filter whose ``passes``-fold repetition has variance ``sigma**2``.

    Gwosdek et al., "Theoretical foundations of Gaussian convolution by extended box filtering" (2011),
    eqs. 7, 11 and 14, as PIL computes it: with ``s2 = sigma**2 / passes``,
    ``l = floor((sqrt(12 s2 + 1) - 1) / 2)`` and ``a = (2l + 1)(l(l + 1) - 3 s2) / (6 (s2 - (l + 1)**2))``;
    element-wise for a tensor of sigmas.
    """
    s2 = sigma * sigma / passes
    floor, sqrt = (torch.floor, torch.sqrt) if isinstance(sigma, Tensor) else (math.floor, math.sqrt)
    whole = floor((sqrt(12.0 * s2 + 1.0) - 1.0) / 2.0)
    frac = (2 * whole + 1) * (whole * (whole + 1) - 3 * s2) / (6 * (s2 - (whole + 1) ** 2))
    return whole + frac


def _box_pass(image: Tensor, radius: float, dim: int) -> Tensor:
    """One extended box filter of ``radius = l + a`` along ``dim`` (-1: width, -2: height) of (N, C, H, W).

    Output pixel ``x`` is ``(sum_{|i| <= l} p[x + i] + a (p[x - l - 1] + p[x + l + 1])) / (2 radius + 1)``,
    with the edge pixels repeated beyond the border (PIL's ``ImagingLineBoxBlur``).
    """
    whole = int(radius)
    frac = radius - whole
    reach = whole + 1 if frac > 0 else whole
    if reach == 0:
        return image
    pad = [reach, reach, 0, 0] if dim == -1 else [0, 0, reach, reach]
    padded = F.pad(image, pad, mode="replicate")
    length = image.shape[dim]
    out = padded.narrow(dim, reach - whole, length).clone()
    for shift in range(reach - whole + 1, reach + whole + 1):
        out.add_(padded.narrow(dim, shift, length))
    if frac > 0:
        out.add_(padded.narrow(dim, 0, length), alpha=frac).add_(
            padded.narrow(dim, 2 * reach, length), alpha=frac
        )
    return out.div_(2 * radius + 1)


def pil_gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """``PIL.ImageFilter.GaussianBlur(radius=sigma)`` of a float (..., C, H, W) image.

    PIL's ``radius`` is the Gaussian's standard deviation in pixels: PIL blurs each axis with
    :data:`BOX_PASSES` extended box filters of radius :func:`box_radius` (together of variance
    ``sigma**2``), width first, repeating the edge pixels. The same passes here, in float where PIL
    rounds to uint8 after each of its six passes: on uint8 input the result is PIL's to within 3/255
    (``tests/core/data/test_data.py``).
    """
    radius = box_radius(sigma)
    shape = image.shape
    out = image.reshape(-1, *shape[-3:])
    for dim in (-1, -2):
        for _ in range(BOX_PASSES):
            out = _box_pass(out, radius, dim)
    return out.reshape(shape)
