"""Which selected watches report in time: dropout, stragglers, deadline, over-selection.

Production cross-device FL loses 6-10 % of selected devices per round and over-selects
~130 % to compensate (Bonawitz et al. 2019). Each round the server invites
ceil(overselect * K) clients; each may drop out (probability ``dropout``), the rest finish
after latency + local compute + upload, which depend on the device class; the server
keeps the first K that finish before the deadline and abandons the round (no update
applied) when fewer than ``min_reports`` arrive. All randomness derives from (seed,
round), so a resumed run replays exactly the same rounds.

Under differential privacy (``poisson_rate`` set) the round is what the accountant assumes:
each client is invited independently with probability q, every invited client that neither
drops out nor misses the deadline contributes (no cap at K: keeping the first K would let one
patient's presence push out another's), and the round is abandoned only when nobody reports
(the noisy sum is released whatever the count, so how many took part is not revealed by it).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """A device class: median training speed, upload bandwidth and connection latency."""

    name: str
    examples_per_s: float
    upload_mbps: float
    latency_s: float
    share: float


DEVICE_PROFILES: tuple[DeviceProfile, ...] = (
    # Phone: a mid-range phone relaying for the watch over LTE/Wi-Fi.
    DeviceProfile("phone", examples_per_s=4000.0, upload_mbps=5.0, latency_s=0.5, share=0.5),
    # Watch: training on the watch itself, Bluetooth-relayed upload.
    DeviceProfile("watch", examples_per_s=400.0, upload_mbps=0.25, latency_s=1.5, share=0.35),
    # Pi-class hub: a Raspberry Pi 4 at home on Wi-Fi.
    DeviceProfile("pi", examples_per_s=1500.0, upload_mbps=2.0, latency_s=0.8, share=0.15),
)


@dataclasses.dataclass(frozen=True)
class AvailabilityConfig:
    clients_per_round: int = 20
    overselect: float = 1.3
    min_reports_fraction: float = 0.5
    dropout: float = 0.08
    deadline_s: float = 6.0
    speed_sigma: float = 0.6
    poisson_rate: float | None = None

    def __post_init__(self) -> None:
        if self.poisson_rate is not None and not 0.0 < self.poisson_rate <= 1.0:
            raise ValueError(f"poisson_rate must be in (0, 1], got {self.poisson_rate}")
        if self.clients_per_round < 1:
            raise ValueError(f"clients_per_round must be >= 1, got {self.clients_per_round}")
        if self.overselect < 1.0:
            raise ValueError(f"overselect must be >= 1.0, got {self.overselect}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.min_reports_fraction <= 1.0:
            raise ValueError(f"min_reports_fraction must be in (0, 1], got {self.min_reports_fraction}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be positive, got {self.deadline_s}")

    @property
    def invited(self) -> int:
        return math.ceil(self.clients_per_round * self.overselect)

    @property
    def min_reports(self) -> int:
        return max(1, math.ceil(self.clients_per_round * self.min_reports_fraction))


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """Outcome of one round's invitations. ``reporters`` are client ids, first finisher first."""

    invited: np.ndarray
    reporters: np.ndarray
    dropped: int
    late: int
    surplus: int
    abandoned: bool

    def counts(self) -> dict:
        return {
            "invited": int(self.invited.size), "reported": int(self.reporters.size), "dropped": self.dropped,
            "late": self.late, "surplus": self.surplus, "abandoned": self.abandoned,
        }


class AvailabilityModel:
    """Assigns each client a device once, then plans rounds from (seed, round) alone."""

    def __init__(self, config: AvailabilityConfig, *, client_sizes: np.ndarray, seed: int):
        if config.poisson_rate is None and config.invited > client_sizes.size:
            raise ValueError(f"cannot invite {config.invited} clients per round from a population of {client_sizes.size}")
        self.config = config
        self.client_sizes = np.asarray(client_sizes)
        self.seed = seed
        rng = np.random.default_rng([seed, 0xDE71CE])
        shares = np.array([p.share for p in DEVICE_PROFILES])
        self.device = rng.choice(len(DEVICE_PROFILES), size=client_sizes.size, p=shares / shares.sum())
        self.speed_factor = rng.lognormal(0.0, config.speed_sigma, client_sizes.size)

    def finish_time_s(self, clients: np.ndarray, *, epochs: int, payload_bytes: int, rng: np.random.Generator) -> np.ndarray:
        """Seconds from invitation to upload complete for each client."""
        profiles = [DEVICE_PROFILES[d] for d in self.device[clients]]
        speed = np.array([p.examples_per_s for p in profiles]) * self.speed_factor[clients]
        bandwidth = np.array([p.upload_mbps for p in profiles]) * 1e6 / 8 * self.speed_factor[clients]
        latency = np.array([p.latency_s for p in profiles]) * rng.lognormal(0.0, 0.5, clients.size)
        return latency + self.client_sizes[clients] * epochs / speed + payload_bytes / bandwidth

    def plan_round(self, round_index: int, *, epochs: int, payload_bytes: int) -> RoundPlan:
        rng = np.random.default_rng([self.seed, round_index])
        poisson = self.config.poisson_rate is not None
        if poisson:
            invited = np.flatnonzero(rng.random(self.client_sizes.size) < self.config.poisson_rate)
        else:
            invited = rng.choice(self.client_sizes.size, size=self.config.invited, replace=False)
        alive = rng.random(invited.size) >= self.config.dropout
        finish = self.finish_time_s(invited, epochs=epochs, payload_bytes=payload_bytes, rng=rng)
        on_time = alive & (finish <= self.config.deadline_s)
        order = np.argsort(finish[on_time], kind="stable")
        arrived = invited[on_time][order]
        reporters = arrived if poisson else arrived[: self.config.clients_per_round]
        return RoundPlan(
            invited=invited,
            reporters=reporters,
            dropped=int((~alive).sum()),
            late=int((alive & ~on_time).sum()),
            surplus=int(arrived.size - reporters.size),
            abandoned=bool(reporters.size == 0 if poisson else reporters.size < self.config.min_reports),
        )
