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


def clipped_noisy_mean(updates: np.ndarray, *, clip: float, noise_multiplier: float, denominator: int) -> np.ndarray:
    """updates float32[n, P] -> (sum of updates clipped to L2 norm ``clip`` + N(0, (z clip)^2)) / denominator."""
    norms = np.linalg.norm(updates.astype(np.float64), axis=1)
    clipped = updates * np.minimum(1.0, clip / np.maximum(norms, 1e-12))[:, None]
    return (clipped.sum(axis=0) + csprng_gaussian(noise_multiplier * clip, updates.shape[1])) / denominator
