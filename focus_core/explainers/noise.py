"""Seeded noise per sample that does not depend on the batch a sample arrives in.

SmoothGrad, LIME and the random control need random numbers, yet a batch must give the same maps as its samples
one by one. So every sample gets its own :class:`torch.Generator`, seeded from the explainer's ``seed`` and a
fingerprint of the sample's content: the same sample with the same seed draws the same noise in any batch,
in any process, on the same kind of device (CPU and CUDA generators draw different numbers).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["sample_fingerprints", "sample_seeds", "sample_generators", "per_sample_normal", "per_sample_uniform"]

_MIX = 2654435761  # Knuth's multiplicative hash constant
_MOD = 2039  # small prime: position weights < 2**11 keep the integer sums exact for inputs below 2**20 values


def sample_fingerprints(inputs: torch.Tensor) -> list[tuple[int, int]]:
    """Return an exact integer fingerprint of each sample's content, computed on its device.

    The float32 bit patterns of a sample are summed twice, once plain and once weighted by a pseudo-random
    weight per position, in int64 (exact, so independent of the reduction order and of the batch).

    Parameters
    ----------
    inputs : torch.Tensor
        ``(B, ...)`` float tensor.

    Returns
    -------
    list[tuple[int, int]]
        One pair of integers per sample.
    """
    bits = inputs.detach().to(torch.float32).contiguous().view(torch.int32).reshape(inputs.shape[0], -1)
    bits = bits.to(torch.int64)
    positions = torch.arange(bits.shape[1], device=bits.device, dtype=torch.int64)
    weights = (positions * _MIX) % _MOD + 1
    sums = torch.stack([bits.sum(1), (bits * weights).sum(1)], dim=1).cpu().tolist()
    return [(int(a), int(b)) for a, b in sums]


def sample_seeds(inputs: torch.Tensor, seed: int) -> list[int]:
    """Return one 63-bit seed per sample, derived from ``seed``, the sample's fingerprint and its shape.

    For methods whose library draws from torch's global generator (LIME through captum): seed that generator
    with the sample's seed and the draws do not depend on the batch the sample arrives in.

    Parameters
    ----------
    inputs : torch.Tensor
        ``(B, ...)`` float tensor.
    seed : int
        The explainer's seed.

    Returns
    -------
    list[int]
        ``B`` non-negative integers below ``2**63``.
    """
    seeds = []
    for plain, weighted in sample_fingerprints(inputs):
        key = f"{seed}:{plain}:{weighted}:{tuple(inputs.shape[1:])}".encode()
        seeds.append(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)
    return seeds


def sample_generators(inputs: torch.Tensor, seed: int) -> list[torch.Generator]:
    """Return one generator per sample, seeded with :func:`sample_seeds`.

    Parameters
    ----------
    inputs : torch.Tensor
        ``(B, ...)`` float tensor; the generators live on its device.
    seed : int
        The explainer's seed.

    Returns
    -------
    list[torch.Generator]
        ``B`` generators.
    """
    generators = []
    for sample_seed in sample_seeds(inputs, seed):
        generator = torch.Generator(device=inputs.device)
        generator.manual_seed(sample_seed)
        generators.append(generator)
    return generators


def per_sample_normal(inputs: torch.Tensor, seed: int, n: int) -> torch.Tensor:
    """Return standard normal noise ``(n, B, *inputs.shape[1:])``, drawn per sample (see module doc)."""
    shape = (n, *inputs.shape[1:])
    draws = [torch.randn(shape, generator=g, device=inputs.device, dtype=inputs.dtype)
             for g in sample_generators(inputs, seed)]
    return torch.stack(draws, dim=1)


def per_sample_uniform(inputs: torch.Tensor, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Return noise uniform in ``[-1, 1)`` of shape ``(B, *shape)``, drawn per sample (see module doc)."""
    draws = [torch.rand(shape, generator=g, device=inputs.device, dtype=inputs.dtype)
             for g in sample_generators(inputs, seed)]
    return torch.stack(draws) * 2 - 1
