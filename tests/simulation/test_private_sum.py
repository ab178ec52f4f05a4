"""Central DP noise on the coordinator: drawn from the OS CSPRNG, so nobody can regenerate and remove it."""
from __future__ import annotations

import numpy as np
import pytest

from simulation.coordinator.private_sum import clipped, csprng_gaussian, noisy_mean


def test_noise_has_the_promised_distribution():
    noise = csprng_gaussian(2.0, 200_001)
    assert noise.shape == (200_001,)
    assert abs(noise.mean()) < 0.02 and noise.std() == pytest.approx(2.0, rel=0.01)
    kurtosis = np.mean((noise / noise.std()) ** 4)
    assert kurtosis == pytest.approx(3.0, abs=0.1)  # Gaussian tails, not uniform (1.8) or heavier


def clipped_noisy_mean(updates: np.ndarray, *, clip: float, noise_multiplier: float, denominator: int) -> np.ndarray:
    """What the coordinator releases for these updates (it sums them one by one as they arrive)."""
    total = sum(clipped(u, clip) for u in updates)
    return noisy_mean(total, clip=clip, noise_multiplier=noise_multiplier, denominator=denominator)


def test_identical_inputs_get_independent_noise():
    updates = np.zeros((3, 10_000), np.float32)
    first = clipped_noisy_mean(updates, clip=1.0, noise_multiplier=1.0, denominator=3)
    second = clipped_noisy_mean(updates, clip=1.0, noise_multiplier=1.0, denominator=3)
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.05


def test_an_attacker_who_knows_the_configuration_cannot_remove_the_noise():
    # Prepare: the clipped sum the server must hide, and the seed an attacker would try (seed, round, stream)
    rng = np.random.default_rng(1)
    updates = rng.normal(0, 1e-3, (4, 5_000)).astype(np.float32)
    clip, z, k = 0.05, 1.0, 4
    released = clipped_noisy_mean(updates, clip=clip, noise_multiplier=z, denominator=k)
    norms = np.linalg.norm(updates.astype(np.float64), axis=1)
    clipped_sum = (updates * np.minimum(1.0, clip / norms)[:, None]).sum(axis=0)
    # Execute: subtract noise regenerated from every seed the configuration could have used
    residuals = [np.linalg.norm(released * k - np.random.default_rng([seed, 1, 7]).normal(0.0, z * clip, updates.shape[1]) - clipped_sum) for seed in range(100)]
    # Assert: the noise stays (norm ~ z clip sqrt(2 P)); the old seeded noise left a residual of 1e-16
    assert min(residuals) > 0.5 * z * clip * np.sqrt(updates.shape[1])
