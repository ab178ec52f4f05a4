"""Privacy accounting for the subsampled Gaussian mechanism, without TensorFlow.

Shared by the TFF simulation (privacy.py) and the coordinator, whose serving process must not
import TensorFlow: RDP of the Poisson-subsampled Gaussian mechanism at sampling rate q,
composed over the rounds whose noisy aggregate was released.
"""
from __future__ import annotations

import dp_accounting

ACCOUNTANT = "RDP, Poisson-subsampled Gaussian (dp-accounting)"


def dp_epsilon(*, noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """epsilon after ``rounds`` releases of the subsampled Gaussian mechanism (0 for no rounds)."""
    if rounds == 0:
        return 0.0
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), rounds
    )
    return float(dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(delta))


def noise_for_epsilon(target_epsilon: float, *, sampling_rate: float, rounds: int, delta: float) -> float:
    """The smallest noise multiplier whose epsilon after ``rounds`` is at most ``target_epsilon``."""
    if target_epsilon <= 0:
        raise ValueError(f"dp_target_epsilon must be positive, got {target_epsilon}")
    low, high = 0.05, 1.0
    while dp_epsilon(noise_multiplier=high, sampling_rate=sampling_rate, rounds=rounds, delta=delta) > target_epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier up to 1e4 reaches epsilon {target_epsilon} in {rounds} rounds at q={sampling_rate:.3g}")
    for _ in range(40):
        mid = (low + high) / 2
        if dp_epsilon(noise_multiplier=mid, sampling_rate=sampling_rate, rounds=rounds, delta=delta) > target_epsilon:
            low = mid
        else:
            high = mid
    return high
