"""NVIDIA DALI training loader: the multi-crop views of ``MultiCropTransform``, decoded and augmented by DALI.

Images are decoded on the GPU (``"mixed"``) when CUDA is present, else on the CPU, and every view
op runs where its input lives. Each view follows ``Augment`` with its per-view probabilities: random
resized crop (``Augment.interpolation``: cubic or linear), colour jitter, grayscale, Gaussian blur
(:func:`blur`), solarize, horizontal flip and normalisation. DALI's colour ops differ in detail from
torchvision's: brightness/contrast are applied before saturation/hue (torchvision draws a random
order), contrast pivots on mid-grey instead of the image's mean grey, and hue is rotated in YIQ space
instead of HSV. The crops have the same sizes, dtypes and statistics (``tests/core/data/test_dali.py``), not the
same pixels.

Order: each epoch reshuffles the whole train split (same seed on every rank) and rank ``r`` of ``w``
reads shard ``r`` of it, so the ranks see disjoint samples. Unlike the torchvision loader, crops and
order are not a function of (seed, epoch, index): a resumed run sees other (equally random) batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import feed_ndarray
from torch import Tensor

from sslib.data.transforms import ASPECT_RATIO, Augment, CropGroup, view_specs

READER = "reader"
INTERPOLATIONS = {"bicubic": types.INTERP_CUBIC, "bilinear": types.INTERP_LINEAR}  # Augment.interpolation
HUE_DEGREES = 360.0  # torchvision's hue factor is a fraction of a turn, DALI's hue is in degrees
SOLARIZE_UINT8 = 128  # SOLARIZE_THRESHOLD = 0.5 on [0, 1] images: x / 255 >= 0.5  <=>  x >= 128


def _coin(p: float):
    """Per-sample boolean that is true with probability ``p``."""
    return fn.random.coin_flip(probability=p, dtype=types.BOOL)


def _uniform(low: float, high: float, apply):
    """Per-sample value uniform in [low, high] where ``apply``, else 0."""
    if low == high:
        return apply * low
    return apply * fn.random.uniform(range=(low, high))


def _factor(spread: float, apply):
    """Per-sample factor uniform in [max(0, 1 - spread), 1 + spread] where ``apply``, else 1."""
    return 1.0 + _uniform(max(0.0, 1.0 - spread) - 1.0, spread, apply)


def blur(view, aug: Augment, blur_p: float):
    """Blur each HWC image of ``view`` with probability ``blur_p``: a Gaussian of std ``U(*aug.blur_sigma)``.

    The sources' transforms blur with ``PIL.ImageFilter.GaussianBlur(radius)``, whose ``radius`` is the
    Gaussian's standard deviation in pixels of the crop; DALI's ``sigma`` is also a standard deviation
    in pixels, so ``sigma = radius``, drawn from the same range, applied to the crop as there. This is
    what the official MIRA DALI loader does (movinghoon/MIRA src/dali_loader.py:102-111, sigma
    ``0.1 + 1.9 U(0, 1)``); its fixed 23-pixel window is replaced by DALI's default of
    ``2 * ceil(3 * sigma) + 1``, which leaves out the tails beyond 3 sigma (0.3% of the mass per axis).
    PIL approximates the Gaussian with three box filters of the same variance and repeats the edge
    pixels; DALI samples it and reflects at the borders. Inside the image the two agree to 4/255 for
    sigma >= 0.5, and DALI blurs less below (see docs/data.md).

    Args:
        view (DataNode): A DALI node of HWC images.
        aug: The augmentation; its ``blur_sigma`` is the std's range.
        blur_p: The probability of blurring an image.

    Returns:
        view (DataNode): The DALI node of the (possibly) blurred images.
    """
    low, high = aug.blur_sigma
    if blur_p > 0 and _coin(blur_p):
        view = fn.gaussian_blur(view, sigma=low if low == high else fn.random.uniform(range=(low, high)))
    return view


def view_ops(images, crop: CropGroup, aug: Augment, blur_p: float, solarize_p: float, mean, std):
    """uint8 HWC images -> one normalised float32 (3, size, size) view per sample.

    Args:
        images (DataNode): A DALI node of decoded uint8 HWC images.
        crop: The view's crop size and scale range.
        aug: The augmentation.
        blur_p: The view's blur probability.
        solarize_p: The view's solarize probability.
        mean (Sequence[float]): The normalisation mean, RGB, in [0, 1] units.
        std (Sequence[float]): The normalisation standard deviation, RGB, in [0, 1] units.

    Returns:
        view (DataNode): The DALI node of the views.
    """
    view = fn.random_resized_crop(
        images,
        size=(crop.size, crop.size),
        random_area=crop.scale,
        random_aspect_ratio=ASPECT_RATIO,
        interp_type=INTERPOLATIONS[aug.interpolation],
    )
    jitter = _coin(aug.color_jitter_p)
    view = fn.brightness_contrast(
        view, brightness=_factor(aug.brightness, jitter), contrast=_factor(aug.contrast, jitter)
    )
    hue = _uniform(-aug.hue * HUE_DEGREES, aug.hue * HUE_DEGREES, jitter)
    colour = 1 - _coin(aug.grayscale_p)  # saturation 0 is the luma grayscale of torchvision
    view = fn.hsv(view, hue=hue, saturation=colour * _factor(aug.saturation, jitter))
    view = blur(view, aug, blur_p)
    if solarize_p > 0 and _coin(solarize_p):
        pixels = fn.cast(view, dtype=types.FLOAT)
        view = fn.cast(pixels + (pixels >= SOLARIZE_UINT8) * (255.0 - 2.0 * pixels), dtype=types.UINT8)
    return fn.crop_mirror_normalize(
        view,
        dtype=types.FLOAT,
        output_layout="CHW",
        mean=[255.0 * m for m in mean],
        std=[255.0 * s for s in std],
        mirror=fn.random.coin_flip(probability=aug.hflip_p),
    )


@pipeline_def(enable_conditionals=True)
def multicrop_pipeline(
    files: list[str],
    views: list[tuple[CropGroup, float, float]],
    augment: Augment,
    mean: Sequence[float],
    std: Sequence[float],
    shard_id: int,
    num_shards: int,
    shuffle_seed: int,
    decoder: str,
):
    """The DALI pipeline of multi-crop training batches (``pipeline_def`` also takes DALI's ``batch_size``,
    ``num_threads``, ``device_id`` and ``seed``).

    Its outputs are one float32 (B, 3, S, S) batch per ``views`` entry, then the (B, 1) int32 positions
    of the samples in ``files``.

    Args:
        files: The image files.
        views: ``(crop, blur_p, solarize_p)`` of each view, as :func:`view_specs` gives them.
        augment: The augmentation.
        mean: The normalisation mean, RGB, in [0, 1] units.
        std: The normalisation standard deviation, RGB, in [0, 1] units.
        shard_id: The shard this process reads (its rank).
        num_shards: The number of shards (the world size).
        shuffle_seed: Seeds the reshuffle after every epoch; the same on every rank.
        decoder: ``"mixed"`` (GPU) or ``"cpu"``.

    Returns:
        outputs (tuple[DataNode, ...]): The DALI nodes of the views, then of the positions.
    """
    encoded, index = fn.readers.file(
        files=files,
        labels=list(range(len(files))),  # the "label" is the sample's index; classes are looked up later
        shard_id=shard_id,
        num_shards=num_shards,
        shuffle_after_epoch=True,
        shuffle_after_epoch_seed=shuffle_seed,
        pad_last_batch=True,
        name=READER,
    )
    images = fn.decoders.image(encoded, device=decoder, output_type=types.RGB)
    crops = [
        view_ops(images, crop, augment, blur_p, solarize_p, mean, std) for crop, blur_p, solarize_p in views
    ]
    return (*crops, index)


def _to_torch(batch, device: torch.device) -> Tensor:
    """A dense DALI TensorList (CPU or GPU) copied into a new torch tensor on ``device``."""
    tensor = batch.as_tensor()
    dtype = torch.float32 if tensor.dtype == types.FLOAT else torch.int32
    out = torch.empty(tensor.shape(), dtype=dtype, device=device)
    stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    return feed_ndarray(tensor, out, cuda_stream=stream)


class DaliTrainLoader:
    """Training batches ``(crops, labels, indices)`` from :func:`multicrop_pipeline`, for Lightning.

    ``crops`` is a list of float32 (B, 3, S, S) tensors (global views first), ``labels`` and
    ``indices`` are int64 (B,), exactly as the torchvision training loader. ``len()`` is
    ``n // (batch_size * world)`` on every rank: each epoch drops the tail of the rank's shard,
    as ``drop_last`` does. Iterating again after leaving an epoch early yields only that epoch's
    remaining batches; the next iteration starts a whole new epoch.

    Args:
        samples: The ``(path, class)`` pairs of an ``ImageFolder``.
        global_crops: The global views.
        local_crops: The local views, or ``None``.
        augment: The augmentation.
        mean: The normalisation mean, RGB, in [0, 1] units.
        std: The normalisation standard deviation, RGB, in [0, 1] units.
        batch_size: The batch size of each rank.
        num_threads: DALI's CPU threads.
        seed: Seeds the shuffling and the augmentation, with ``epoch``.
        epoch: The first epoch (a resumed run's).
        rank: This process reads shard ``rank`` of ``world``.
        world: The number of processes.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        global_crops: CropGroup,
        local_crops: CropGroup | None,
        augment: Augment,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        num_threads: int = 1,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.n, self.batch_size, self.world = len(samples), batch_size, world
        self.targets = torch.tensor([target for _, target in samples], dtype=torch.int64)
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        shuffle_seed = (seed * 1_000_003 + epoch) % 2**31  # equal on all ranks: one permutation per epoch
        self.pipeline = multicrop_pipeline(
            files=[path for path, _ in samples],
            views=view_specs(global_crops, local_crops, augment),
            augment=augment,
            mean=mean,
            std=std,
            shard_id=rank,
            num_shards=world,
            shuffle_seed=shuffle_seed,
            decoder="cpu" if self.device is None else "mixed",
            batch_size=batch_size,
            num_threads=max(1, num_threads),
            device_id=None if self.device is None else self.device.index,
            seed=(shuffle_seed * 7919 + rank) % 2**31,
        )
        self.pipeline.build()
        meta = self.pipeline.reader_meta(READER)
        # Batches DALI makes per epoch of this shard (the shard padded to a multiple of batch_size).
        self.reader_batches = math.ceil(meta["epoch_size_padded"] / meta["number_of_shards"] / batch_size)
        self.position = 0  # batches read in the reader's current epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world)

    def _run(self) -> tuple:
        outputs = self.pipeline.run()
        self.position = (self.position + 1) % self.reader_batches
        return outputs

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor, Tensor]]:
        """The rest of the reader's current epoch: all ``len(self)`` batches of a new one, or, after an
        iteration left early, only the batches it did not read (so no sample comes twice in an epoch)."""
        if self.position >= len(self):  # the last epoch was read to its end: skip its tail (and padding)
            while self.position:
                self._run()
        device = self.device or torch.device("cpu")
        for _ in range(len(self) - self.position):
            *views, index = self._run()
            indices = _to_torch(index, torch.device("cpu")).view(-1).long()
            yield [_to_torch(v, device) for v in views], self.targets[indices], indices
