"""Host-to-device copies that do not wait for the device.

A copy to a GPU from pageable host memory synchronises with the GPU's queue (the CPU waits for every
kernel queued before it); from pinned memory with ``non_blocking=True`` it is queued like a kernel. The
training step and the on-device loader send their small host tensors this way.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` copied to ``device``; a CPU tensor goes to a GPU through pinned memory."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def scalars_to_device(values: Mapping[str, float | Tensor], device: torch.device) -> dict[str, Tensor]:
    """``values`` with every Python number made a 0-dim float32 tensor on ``device``, all in one copy
    (:func:`to_device`); tensors are kept as they are. Lightning's ``log`` would copy each number to the
    device on its own, waiting for the GPU each time."""
    numbers = [key for key, value in values.items() if not isinstance(value, Tensor)]
    out = {key: value for key, value in values.items() if isinstance(value, Tensor)}
    if numbers:
        stacked = to_device(torch.tensor([float(values[k]) for k in numbers], dtype=torch.float32), device)
        out.update(zip(numbers, stacked.unbind(), strict=True))
    return {key: out[key] for key in values}
