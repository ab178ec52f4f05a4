"""Central DP-FedAvg on the coordinator: clip each update, sum, add Gaussian noise from the OS CSPRNG.

The noise must be unpredictable to everyone who sees the released models: a generator seeded
from configuration or round numbers lets any device regenerate and subtract it. Here every
noise draw comes from ``os.urandom`` (Box-Muller on 53-bit uniforms), so no seed exists.
"""
from __future__ import annotations

import os

import numpy as np

_UNIT = 2.0 ** -53


def _urandom_uniform(size: int) -> np.ndarray:
    """float64[size] uniform on (0, 1], from the operating system's CSPRNG."""
    bits = np.frombuffer(os.urandom(8 * size), dtype="<u8") >> np.uint64(11)
    return (bits.astype(np.float64) + 1.0) * _UNIT


def csprng_gaussian(std: float, size: int) -> np.ndarray:
    """float64[size] ~ N(0, std^2), every draw from ``os.urandom``."""
    pairs = (size + 1) // 2
    radius = np.sqrt(-2.0 * np.log(_urandom_uniform(pairs)))
    angle = 2.0 * np.pi * _urandom_uniform(pairs)
    return (std * np.concatenate([radius * np.cos(angle), radius * np.sin(angle)]))[:size]


def clipped(update: np.ndarray, clip: float) -> np.ndarray:
    """float64[P]: the update scaled down to L2 norm ``clip`` if longer (what one device may move the sum by)."""
    update = np.asarray(update, np.float64)
    return update * min(1.0, clip / max(float(np.linalg.norm(update)), 1e-12))


def noisy_mean(clipped_sum: np.ndarray, *, clip: float, noise_multiplier: float, denominator: int) -> np.ndarray:
    """(sum of clipped updates + N(0, (z clip)^2)) / denominator: what the round releases."""
    return (clipped_sum + csprng_gaussian(noise_multiplier * clip, clipped_sum.size)) / denominator
