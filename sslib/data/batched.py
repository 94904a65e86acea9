"""Batched view ops: the ops of :class:`sslib.data.transforms.ViewTransform` on a whole batch at once,
each sample with its own parameters.

Shapes: ``B`` samples, uint8 (B, 3, H, W) source images, float (B, 3, S, S) views in [0, 1]. Geometry
and blur are separable linear maps, so each is a pair of per-sample matrices applied with batched
matrix products: a view is ``R_y X R_x^T`` (:func:`resample_matrix`), a blur ``M X M^T``
(:func:`blur_matrix`). The colour ops are torchvision's formulas with per-sample factors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sslib.data.kernels import BOX_PASSES, adjust_hue, box_radius

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop.get_params tries 10 boxes before its fallback
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)
CUBIC_A = -0.5  # the antialiased bicubic kernel of PIL and torch.nn.functional.interpolate(antialias=True)
SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}  # kernel half-width in pixels of the source at scale 1


def crop_boxes(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """(B, 4) int64 ``(top, left, h, w)`` of random resized crops from (B, 2 * CROP_ATTEMPTS + 2) uniforms.

    torchvision's ``RandomResizedCrop.get_params``: attempt ``i`` takes area ``H W U(scale)`` and aspect
    ``exp(U(log ratio))``, ``w = round(sqrt(area aspect))``, ``h = round(sqrt(area / aspect))``; the first
    attempt with ``0 < w <= W`` and ``0 < h <= H`` wins, else the central crop of the image's aspect
    clamped to ``ratio``; ``top ~ U{0..H-h}``, ``left ~ U{0..W-w}``.
    """
    attempts = u[:, : 2 * CROP_ATTEMPTS].view(-1, CROP_ATTEMPTS, 2)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * attempts[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * attempts[..., 1])
    w, h = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.int().argmax(1, keepdim=True)  # the first valid attempt (0 when none is)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback = (round(width / ratio[0]), width)
    elif image_ratio > ratio[1]:
        fallback = (height, round(height * ratio[1]))
    else:
        fallback = (height, width)
    found = valid.any(1)
    h = torch.where(found, h, float(fallback[0]))
    w = torch.where(found, w, float(fallback[1]))
    top = torch.where(found, torch.floor(u[:, -2] * (height - h + 1)), (height - h) // 2)
    left = torch.where(found, torch.floor(u[:, -1] * (width - w + 1)), (width - w) // 2)
    return torch.stack([top, left, h, w], 1).long()


def _kernel(t: Tensor, interpolation: str) -> Tensor:
    """The interpolation kernel at offsets ``t``: the triangle, or Keys' cubic with ``a = CUBIC_A``."""
    t = t.abs()
    if interpolation == "bilinear":
        return (1 - t).clamp(min=0)
    a = CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = a * (((t - 5) * t + 8) * t - 4)
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def resample_matrix(start: Tensor, length: Tensor, size: int, out: int, interpolation: str) -> Tensor:
    """(B, out, size) float32 rows resampling pixels ``[start, start + length)`` of an axis of ``size``
    pixels to ``out`` pixels, as PIL and torch's antialiased resize do (the crop first, then the resize).

    Output pixel ``o`` has centre ``c = start + (o + 0.5) s`` with ``s = length / out``; its weight on
    source pixel ``x`` of the crop is ``k((x + 0.5 - c) / max(s, 1))``, normalised to sum to 1, with
    ``k`` the kernel of ``interpolation`` (widened by ``s`` when downsampling: the antialiasing).
    """
    start, length = start.float().unsqueeze(1), length.float().unsqueeze(1)
    step = length / out
    centre = start + (torch.arange(out, device=start.device, dtype=torch.float32) + 0.5) * step
    x = torch.arange(size, device=start.device, dtype=torch.float32) + 0.5
    weights = _kernel((x - centre.unsqueeze(2)) / step.clamp(min=1).unsqueeze(2), interpolation)
    inside = (x >= start.unsqueeze(2)) & (x < (start + length).unsqueeze(2))
    weights = weights * inside
    return weights / weights.sum(2, keepdim=True)


def resized_crop(images: Tensor, boxes: Tensor, size: int, interpolation: str, flip: Tensor) -> Tensor:
    """uint8 (B, 3, H, W) images -> float32 (B, 3, size, size) crops ``boxes`` (:func:`crop_boxes`)
    resized to ``size``, mirrored left-right where ``flip`` (B,) is true, in [0, 1] and rounded to
    steps of 1/255 as torchvision's resize of uint8 images rounds.

    ``view = round(R_y X R_x^T) / 255`` with ``R_y``, ``R_x`` from :func:`resample_matrix` (the rows of
    ``R_x`` reversed for a flipped view).
    """
    top, left, h, w = boxes.unbind(1)
    rows = resample_matrix(top, h, images.shape[-2], size, interpolation)
    cols = resample_matrix(left, w, images.shape[-1], size, interpolation)
    cols = torch.where(flip.view(-1, 1, 1), cols.flip(1), cols)
    n, channels, height, width = images.shape
    wide = torch.bmm(images.float().view(n, channels * height, width), cols.transpose(1, 2))
    wide = wide.clamp_(0, 255).round_().view(n, channels, height, size)  # rounded as torchvision does
    return (rows.unsqueeze(1) @ wide).clamp_(0, 255).round_().div_(255)


def _per_sample(factor: Tensor) -> Tensor:
    return factor.view(-1, 1, 1, 1).to(torch.float32)


def grayscale(x: Tensor) -> Tensor:
    """(B, 1, S, S) luma ``0.2989 R + 0.587 G + 0.114 B`` of (B, 3, S, S) images."""
    r, g, b = x.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def blend(x: Tensor, other: Tensor | float, factor: Tensor) -> Tensor:
    """torchvision's ``_blend``: ``clamp(f x + (1 - f) other, 0, 1)`` with one factor ``f`` per sample."""
    f = _per_sample(factor)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``adjust_brightness``: a blend with black."""
    return blend(x, 0.0, factor)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``adjust_contrast``: a blend with the image's mean luma."""
    return blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), factor)


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """``adjust_saturation``: a blend with the image's luma."""
    return blend(x, grayscale(x), factor)


def hue(x: Tensor, factor: Tensor) -> Tensor:
    """``adjust_hue`` by ``factor`` turns per sample (:func:`sslib.data.kernels.adjust_hue`)."""
    return adjust_hue(x, factor.view(-1, 1, 1).to(x.dtype))


JITTER_OPS = (brightness, contrast, saturation, hue)  # in the order of v2.ColorJitter's factor indices


def box_reach(sigma: float) -> int:
    """Pixels an extended box filter for ``sigma`` reaches on each side: ``ceil(box_radius(sigma))``."""
    return math.ceil(box_radius(sigma))


def blur_matrix(sigma: Tensor, size: int, reach: int) -> Tensor:
    """(B, size, size) float32 ``M`` with ``M x`` = PIL's ``GaussianBlur(radius=sigma)`` of a (size,) line.

    One extended box pass of radius ``r = l + a`` (:func:`~sslib.data.kernels.box_radius`) weighs the
    offsets ``|i| <= l`` by 1 and ``|i| = l + 1`` by ``a``, over ``2 r + 1``, repeating the edge pixels
    (index clamped to the line); ``M`` is :data:`~sslib.data.kernels.BOX_PASSES` such passes, ``A^3``.
    ``reach`` bounds ``l + 1`` over the batch (:func:`box_reach` of the largest sigma).
    """
    radius = box_radius(sigma.double()).unsqueeze(1)  # (B, 1)
    whole = torch.floor(radius)
    offsets = torch.arange(-reach, reach + 1, device=sigma.device, dtype=torch.float64)
    weights = (offsets.abs() <= whole).double() + (radius - whole) * (offsets.abs() == whole + 1)
    weights = weights / (2 * radius + 1)  # (B, 2 reach + 1)
    positions = torch.arange(size, device=sigma.device)
    taps = (positions.unsqueeze(1) + offsets.long()).clamp(0, size - 1)  # (size, 2 reach + 1)
    one_hot = F.one_hot(taps, size).double()  # (size, 2 reach + 1, size)
    passes = torch.einsum("bk,okx->box", weights, one_hot)
    return torch.linalg.matrix_power(passes, BOX_PASSES).float()


def blur(x: Tensor, sigma: Tensor, reach: int) -> Tensor:
    """(B, 3, S, S) images blurred per sample: ``M X M^T`` (:func:`blur_matrix`; PIL blurs both axes alike)."""
    m = blur_matrix(sigma, x.shape[-1], reach).unsqueeze(1)
    return m @ x @ m.transpose(-1, -2)


def solarize(x: Tensor, apply: Tensor, threshold: float) -> Tensor:
    """``1 - x`` where ``x >= threshold`` in the samples where ``apply`` (B,) is true."""
    return torch.where(apply.view(-1, 1, 1, 1) & (x >= threshold), 1 - x, x)
