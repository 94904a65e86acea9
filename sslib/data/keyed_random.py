"""Counter-based random numbers: uniforms that are a pure function of (seed, epoch, index, stream, draw).

A batched augmentation draws every sample's parameters at once, yet each sample's values must not
depend on which other samples share its batch, on the device, or on the number of ranks, so that a
resumed run makes the same crops. Here each value is a hash of its key: the 32-bit integer hash
``lowbias32`` (C. Wellons, "Prospecting for hash functions", 2018: ``x ^= x >> 16; x *= 0x7feb352d;
x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16``) chained over the key's words, computed with int64 tensor
ops (values kept below 2**32, products split in 16-bit halves so they never overflow), so CPU and CUDA
give the same bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFF_FFFF
_LOW16 = 0xFFFF
_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio: spreads consecutive draw numbers before hashing


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) and a constant ``c`` < 2**32, without overflow:
    ``x * c = x * c_lo + 2**16 * x * c_hi`` and only the low 16 bits of ``x * c_hi`` reach the result."""
    high, low = c >> 16, c & _LOW16
    return (x * low + ((x * high) & _LOW16) * 65536) & MASK32


def mix32(x: Tensor) -> Tensor:
    """``lowbias32`` of each int64 value in [0, 2**32): a bijection of 32-bit words with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, _MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = _mul32(x, _MULTIPLIERS[1])
    return x ^ (x >> 16)


def keyed_uniform(seed: int, epoch: int, index: Tensor, stream: int, n: int) -> Tensor:
    """(B, n) float64 uniforms in [0, 1) for the (B,) int ``index``: entry ``[b, j]`` is a function of
    ``(seed, epoch, index[b], stream, j)`` alone (32 random bits, ``h / 2**32``), on ``index``'s device."""
    key = torch.full_like(index, seed & MASK32, dtype=torch.int64)
    for word in (seed >> 32, epoch, stream):
        key = mix32(key ^ (word & MASK32))
    key = mix32(key ^ (index.long() & MASK32))
    draws = torch.arange(n, device=index.device, dtype=torch.int64)
    bits = mix32((key.unsqueeze(1) + _mul32(draws, _GOLDEN)) & MASK32)
    return bits.double() / 2.0**32
