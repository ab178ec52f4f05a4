"""DP settings, checked when the config is built (no TensorFlow import)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    """noise_multiplier z (noise std = z x clip); clip "adaptive" or a fixed L2 norm.

    Adaptive clipping tracks the ``clip_quantile`` of the clients' update norms. TFF's
    default, the median, clips half the clients every round and on MIT-BIH removed the S
    signal entirely (S F1 0.38 -> 0); 0.9 kept most of it (0.33): benchmarks/privacy_study.py.
    """

    noise_multiplier: float
    clip: str | float = "adaptive"
    clip_quantile: float = 0.9
    target_delta: float = 1e-5
    secure_aggregation: bool = False

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"dp_noise_multiplier must be positive, got {self.noise_multiplier}")
        if self.clip != "adaptive" and not (isinstance(self.clip, (int, float)) and self.clip > 0):
            raise ValueError(f"dp_clip must be 'adaptive' or a positive L2 norm, got {self.clip!r}")
        if not 0 < self.clip_quantile < 1:
            raise ValueError(f"dp_clip_quantile must be in (0, 1), got {self.clip_quantile}")
        if not 0 < self.target_delta < 1:
            raise ValueError(f"dp_target_delta must be in (0, 1), got {self.target_delta}")
        if self.secure_aggregation and self.clip == "adaptive":
            raise ValueError(
                "secure aggregation with DP needs a fixed clip (--dp-clip NORM): adaptive clipping estimates the clip from "
                "per-client norm indicators, which the secure sum's fixed integer range cannot carry"
            )
