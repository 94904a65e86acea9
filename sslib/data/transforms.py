"""Multi-crop augmentation (asymmetric global views, as in BYOL/DINO) and the evaluation transform.

Every setting is plain data (ints, floats, lists of floats), so a Hydra/YAML config can set it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.v2 import functional as F

from sslib.data.kernels import adjust_hue, pil_gaussian_blur
from sslib.errors import ConfigError
from sslib.validation import check_int_at_least, check_unit_interval

INTERPOLATIONS = {"bicubic": F.InterpolationMode.BICUBIC, "bilinear": F.InterpolationMode.BILINEAR}
SOLARIZE_THRESHOLD = 0.5  # on float images in [0, 1]
ASPECT_RATIO = [3 / 4, 4 / 3]  # of random resized crops (torchvision's default)


@dataclass(frozen=True)
class CropGroup:
    """``n`` random resized crops of side ``size``; each covers a (lo, hi) ``scale`` fraction of the image.

    Args:
        n: The number of crops, >= 0.
        size: The crops' side in pixels, >= 1.
        scale: ``(lo, hi)``, the range of the fraction of the image a crop covers, 0 < lo <= hi <= 1.

    Raises:
        ConfigError: If a value is out of its range.
    """

    n: int
    size: int
    scale: tuple[float, float] = (0.08, 1.0)

    def __post_init__(self) -> None:
        check_int_at_least("n", self.n, 0)
        check_int_at_least("size", self.size, 1)
        scale = tuple(float(s) for s in self.scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ConfigError(f"scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.scale!r}")
        object.__setattr__(self, "scale", scale)


@dataclass(frozen=True)
class Augment:
    """Photometric augmentation shared by all views, with per-view blur and solarize probabilities.

    The defaults are the ImageNet recipe of BYOL/DINO/MIRA; the presets of the config group
    ``data/augment`` are :func:`sslib.app.builders.augment_preset`, e.g. ``augment_preset("cifar")``.

    Args:
        brightness: Colour jitter's brightness spread: factors in 1 +- brightness, >= 0.
        contrast: Colour jitter's contrast spread, >= 0.
        saturation: Colour jitter's saturation spread, >= 0.
        hue: Colour jitter's hue spread, in [0, 0.5].
        color_jitter_p: The probability of colour jitter.
        grayscale_p: The probability of grayscale.
        hflip_p: The probability of a horizontal flip.
        blur_p: One blur probability per global view (a single value, or a list of one, applies to every
            global view; with fewer global views the first values are used).
        solarize_p: One solarize probability per global view, as ``blur_p``.
        local_blur_p: The blur probability of every local crop.
        local_solarize_p: The solarize probability of every local crop.
        interpolation: ``"bicubic"`` or ``"bilinear"``, which resizes the random crops.
        blur_sigma: ``(lo, hi)``: a blurred view gets PIL's Gaussian blur of radius (the standard
            deviation, in pixels of the crop) ``sigma ~ U(blur_sigma)``, 0 < lo <= hi.

    Raises:
        ConfigError: If a value is out of its range or ``interpolation`` is unknown.
    """

    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    hflip_p: float = 0.5
    blur_p: tuple[float, ...] = (1.0, 0.1)
    solarize_p: tuple[float, ...] = (0.0, 0.2)
    local_blur_p: float = 0.5
    local_solarize_p: float = 0.0
    interpolation: str = "bicubic"
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"hue must be in [0, 0.5], got {self.hue!r}")
        for name in ("color_jitter_p", "grayscale_p", "hflip_p", "local_blur_p", "local_solarize_p"):
            check_unit_interval(name, getattr(self, name), closed_right=True)
        for name in ("blur_p", "solarize_p"):
            value = getattr(self, name)
            probs = (value,) if isinstance(value, (int, float)) else tuple(value)
            if not probs:
                raise ConfigError(f"{name} needs at least one probability")
            for i, p in enumerate(probs):
                check_unit_interval(f"{name}[{i}]", p, closed_right=True)
            object.__setattr__(self, name, tuple(float(p) for p in probs))
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        sigma = _numbers(self.blur_sigma)
        if sigma is None or len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
            raise ConfigError(f"blur_sigma must be [lo, hi] with 0 < lo <= hi, got {self.blur_sigma!r}")
        object.__setattr__(self, "blur_sigma", sigma)

    def global_probs(self, n_global: int) -> list[tuple[float, float]]:
        """``(blur_p, solarize_p)`` of each of ``n_global`` global views.

        Args:
            n_global: The number of global views.

        Returns:
            One ``(blur_p, solarize_p)`` per global view.

        Raises:
            ConfigError: If ``blur_p`` or ``solarize_p`` holds more than one value but fewer than
                ``n_global``.
        """
        return list(
            zip(
                _per_view("blur_p", self.blur_p, n_global),
                _per_view("solarize_p", self.solarize_p, n_global),
                strict=True,
            )
        )


def _numbers(value: Any) -> tuple[float, ...] | None:
    """``value`` (a list or tuple of numbers) as a tuple of floats; ``None`` if it is not one."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return tuple(float(v) for v in value)


def _per_view(name: str, probs: tuple[float, ...], n_global: int) -> tuple[float, ...]:
    """``probs`` for ``n_global`` views: one value for all, else the first ``n_global`` values."""
    if len(probs) == 1:
        return probs * n_global
    if len(probs) < n_global:
        raise ConfigError(
            f"{name} has {len(probs)} values for {n_global} global views; give 1 value or at least {n_global}"
        )
    return probs[:n_global]


def view_specs(
    global_crops: CropGroup, local_crops: CropGroup | None, augment: Augment
) -> list[tuple[CropGroup, float, float]]:
    """``(crop group, blur_p, solarize_p)`` of every view, global views first (as ``MultiCropTransform``).

    Args:
        global_crops: The global views.
        local_crops: The local views, or ``None``.
        augment: The augmentation, whose probabilities each view takes.

    Returns:
        One ``(crop group, blur_p, solarize_p)`` per view.
    """
    specs = [(global_crops, *probs) for probs in augment.global_probs(global_crops.n)]
    if local_crops is None:
        return specs
    return specs + [(local_crops, augment.local_blur_p, augment.local_solarize_p)] * local_crops.n


def _mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """``mean``/``std`` as lists after checking they are 3 numbers each (RGB) with ``std > 0``."""
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"mean and std must be 3 numbers each with std > 0, got mean={mean}, std={std}")
    return mean, std


def _happens(p: float) -> bool:
    """True with probability ``p`` (torch RNG, as ``v2.RandomApply``; no draw when p is 0 or 1)."""
    return p > 0 and (p >= 1 or torch.rand(1).item() < p)


def _uniform(low: float, high: float) -> float:
    return torch.empty(1).uniform_(low, high).item()


def _as_uint8_tensor(image: Any) -> Tensor:
    """A PIL image or uint8 (3, H, W) tensor (or ``tv_tensors.Image``) as a plain uint8 tensor."""
    if isinstance(image, Image.Image):
        return F.pil_to_tensor(image if image.mode == "RGB" else image.convert("RGB"))
    return image.as_subclass(Tensor)


class ViewTransform:
    """uint8 (3, H, W) tensor -> one normalised float32 (3, crop.size, crop.size) view.

    The ops of torchvision v2's ``RandomResizedCrop`` (antialiased, ``aug.interpolation``),
    ``RandomHorizontalFlip``, ``ColorJitter`` (factors in 1 +- brightness/contrast/saturation and
    +-hue, random order), ``RandomGrayscale``, PIL's ``GaussianBlur`` (radius ``U(*aug.blur_sigma)``)
    and ``RandomSolarize`` then ``Normalize``, called as kernels: crop and flip on uint8, the rest on
    float in [0, 1], hue and blur by :mod:`sslib.data.kernels`. Calling the kernels directly skips the
    v2 wrappers' per-call overhead, which dominates on 32x32 images.

    Args:
        crop: The view's crop size and scale range.
        aug: The augmentation.
        blur_p: The view's blur probability.
        solarize_p: The view's solarize probability.
        mean: The normalisation mean, 3 numbers (RGB).
        std: The normalisation standard deviation, 3 numbers > 0 (RGB).

    Raises:
        ConfigError: If ``mean`` or ``std`` is not 3 numbers or a std is not > 0.
    """

    def __init__(
        self,
        crop: CropGroup,
        aug: Augment,
        blur_p: float,
        solarize_p: float,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.crop, self.aug, self.blur_p, self.solarize_p = crop, aug, blur_p, solarize_p
        self.mean, self.std = _mean_std(mean, std)
        self.interpolation = INTERPOLATIONS[aug.interpolation]
        spreads = (aug.brightness, aug.contrast, aug.saturation)
        ranges = [(max(0.0, 1.0 - v), 1.0 + v) for v in spreads] + [(-aug.hue, aug.hue)]
        kernels = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, adjust_hue)
        # (kernel, factor range) by v2.ColorJitter's index; a zero spread leaves its op out.
        self.jitter_ops = [(k, r) if r[0] != r[1] else None for k, r in zip(kernels, ranges, strict=True)]

    @property
    def probs(self) -> dict[str, float]:
        """The probability of each random op."""
        aug = self.aug
        return {
            "hflip": aug.hflip_p,
            "color_jitter": aug.color_jitter_p,
            "grayscale": aug.grayscale_p,
            "blur": self.blur_p,
            "solarize": self.solarize_p,
        }

    def _jitter(self, image: Tensor) -> Tensor:
        order = torch.randperm(4).tolist()
        factors = [None if op is None else _uniform(*op[1]) for op in self.jitter_ops]
        for i in order:
            if self.jitter_ops[i] is not None:
                image = self.jitter_ops[i][0](image, factors[i])
        return image

    def __call__(self, image: Tensor) -> Tensor:
        size = self.crop.size
        top, left, height, width = RandomResizedCrop.get_params(image, list(self.crop.scale), ASPECT_RATIO)
        view = F.resized_crop(
            image, top, left, height, width, [size, size], interpolation=self.interpolation, antialias=True
        )
        if _happens(self.aug.hflip_p):
            view = F.horizontal_flip(view)
        view = F.to_dtype(view, torch.float32, scale=True)
        if _happens(self.aug.color_jitter_p):
            view = self._jitter(view)
        if _happens(self.aug.grayscale_p):
            view = F.rgb_to_grayscale(view, num_output_channels=3)
        if _happens(self.blur_p):
            view = pil_gaussian_blur(view, _uniform(*self.aug.blur_sigma))
        if _happens(self.solarize_p):
            view = F.solarize(view, SOLARIZE_THRESHOLD)
        return F.normalize(view, self.mean, self.std)


class MultiCropTransform:
    """One image -> ``global_crops.n`` global views then ``local_crops.n`` local views.

    Each view is a normalised float32 (3, size, size) tensor with its group's size; global view ``i``
    uses ``augment``'s ``i``-th blur/solarize probability, every local view the local ones.

    Args:
        global_crops: The global views, ``n >= 1``.
        local_crops: The local views, or ``None``.
        augment: The augmentation.
        mean: The normalisation mean, 3 numbers (RGB).
        std: The normalisation standard deviation, 3 numbers > 0 (RGB).

    Raises:
        ConfigError: If there is no global crop, ``mean`` or ``std`` is not 3 numbers, a std is not > 0,
            or ``augment``'s per-view probabilities do not fit the global views.
    """

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
        self.global_views = [
            ViewTransform(global_crops, augment, blur, solarize, mean, std)
            for blur, solarize in augment.global_probs(global_crops.n)
        ]
        self.n_local = 0 if local_crops is None else local_crops.n
        self.local_view = (
            None
            if local_crops is None or self.n_local == 0
            else ViewTransform(
                local_crops, augment, augment.local_blur_p, augment.local_solarize_p, mean, std
            )
        )

    @property
    def n_global(self) -> int:
        """Global views per image."""
        return len(self.global_views)

    @property
    def n_crops(self) -> int:
        """Global plus local views per image."""
        return self.n_global + self.n_local

    def __call__(self, image: Any) -> list[Tensor]:
        """PIL image or uint8 (3, H, W) tensor -> ``n_crops`` float32 (3, size, size) views."""
        image = _as_uint8_tensor(image)
        local = [] if self.local_view is None else [self.local_view(image) for _ in range(self.n_local)]
        return [view(image) for view in self.global_views] + local


def eval_transform(
    size: int, mean: Sequence[float], std: Sequence[float], resize: int | None = None
) -> v2.Compose:
    """PIL image or uint8 (3, H, W) tensor -> normalised float32 (3, size, size) tensor.

    Args:
        size: The output side, >= 1.
        mean: The normalisation mean, 3 numbers (RGB).
        std: The normalisation standard deviation, 3 numbers > 0 (RGB).
        resize: The short side is resized to ``resize`` then center-cropped to ``size`` (ImageNet-like
            data, e.g. 256 -> 224); ``None``: the images must already be ``size`` x ``size`` (32x32 data).

    Returns:
        The transform.

    Raises:
        ConfigError: If ``size`` is below 1, ``mean`` or ``std`` is not 3 numbers, or a std is not > 0.
    """
    check_int_at_least("eval size", size, 1)
    geometry = [] if resize is None else [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    normalize = v2.Normalize(*_mean_std(mean, std))
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), normalize])
