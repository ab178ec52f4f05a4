"""`fedbeat serve` configuration: one frozen dataclass loaded from TOML."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from edge_runtime.codecs import CODECS
from edge_runtime.payload import MAX_UPDATE_NORM
from simulation.availability import AvailabilityConfig
from simulation.config import DATASETS, ConfigError
from simulation.coordinator.enrollment import read_devices
from simulation.loopback import is_loopback_host
from simulation.privacy_config import PrivacyConfig

SERVERS = ("asyncio", "threads")


@dataclasses.dataclass(frozen=True)
class CoordinatorConfig:
    """Network, security, round policy and the device training recipe.

    devices_file: enrolled devices (``fedbeat enroll``: device id and update key per line, no
    tokens); ``revoked`` device ids are refused like unknown ones. TLS (tls_cert/tls_key, PEM)
    is required unless ``insecure`` is set, which is only allowed on a loopback address.
    max_examples caps the example count a device claims; at close each weight is further
    capped at the round's median, so one device cannot outweigh a typical one.
    dp_noise_multiplier: central DP-FedAvg on the server: each enrolled device takes part in a
    round by a secret coin of probability q = K / devices (Poisson sampling, what the
    accountant assumes), each update is clipped to ``dp_clip`` and weighted equally, Gaussian
    noise of std z x clip is drawn from the OS CSPRNG and added to the sum, divided by K.
    server: "asyncio" (grpc.aio, every call on one event loop) or "threads" (grpc's thread pool
    of ``server_threads``; calls beyond them wait, up to max_concurrent_rpcs in all); measured
    against each other in benchmarks/results/coordinator_load_*.json.
    checkpoint_every: accepted updates between checkpoints of the round's running sum (each
    accepted payload is kept in the store only until the next one).
    max_retry_after_s: a device with nothing to do before the round's deadline is told to check in
    again then, but no later than this (a round that fills early starts the next one sooner).
    pace_steering_s: and a uniformly drawn delay of up to this is added, so that the devices of
    a round do not all come back the same instant for the next (pace steering, Bonawitz et al.
    2019: a round's opening is not a thundering herd).
    secure_aggregation: the server learns only the sum of a round's updates (secure_rounds.py):
    after training, each device advertises keys, shares its secrets with ``secure_neighbours``
    others (threshold: more than half of them), uploads its update masked and reveals the shares
    needed to unmask the sum; each step has ``secure_phase_s``. Updates are clipped to
    max_update_norm (dp_clip under DP), each coordinate to [-secure_clip, secure_clip], and
    weigh 1 each.
    status_port: the read-only status page (status_page.py), off unless set (0 picks a free
    port); it binds status_host, loopback unless configured otherwise.
    """

    address: str = "127.0.0.1:50051"
    state_dir: str = "runs/coordinator"
    devices_file: str = ""
    revoked: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    max_concurrent_rpcs: int = 64
    server: str = "asyncio"
    server_threads: int = 32
    rounds: int = 10
    clients_per_round: int = 8
    overselect: float = 1.3
    min_reports_fraction: float = 0.5
    deadline_s: float = 60.0
    codec: str = "rotated1bit"
    max_payload_bytes: int = 256 * 1024
    max_update_norm: float = MAX_UPDATE_NORM
    max_examples: int = 10_000
    server_learning_rate: float = 1.0
    local_epochs: int = 3
    batch_size: int = 32
    client_learning_rate: float = 0.2
    dataset: str = "synthetic"
    data_dir: str | None = None
    seed: int = 0
    export_tflite: bool = True
    dp_noise_multiplier: float | None = None
    dp_clip: float = 1.0
    dp_target_delta: float = 1e-5
    status_port: int | None = None
    status_host: str = "127.0.0.1"
    checkpoint_every: int = 64
    max_retry_after_s: float = 5.0
    pace_steering_s: float = 2.0
    secure_aggregation: bool = False
    secure_neighbours: int = 32
    secure_phase_s: float = 20.0
    secure_clip: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "revoked", tuple(self.revoked))
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.server not in SERVERS:
            raise ValueError(f"server must be one of {', '.join(SERVERS)}, got {self.server!r}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        for name in ("rounds", "clients_per_round", "local_epochs", "batch_size", "max_payload_bytes", "max_examples", "max_concurrent_rpcs", "checkpoint_every", "server_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.secure_neighbours < 2 or self.secure_neighbours % 2:
            raise ValueError(f"secure_neighbours must be an even number >= 2, got {self.secure_neighbours}")
        for name in ("deadline_s", "max_update_norm", "server_learning_rate", "client_learning_rate", "max_retry_after_s", "secure_phase_s", "secure_clip"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.pace_steering_s <= self.deadline_s:
            raise ValueError(f"pace_steering_s must be in [0, deadline_s], got {self.pace_steering_s}")
        if self.status_port is not None and not 0 <= self.status_port <= 65535:
            raise ValueError(f"status_port must be 0-65535, got {self.status_port}")
        if self.dp_noise_multiplier is not None:
            PrivacyConfig(noise_multiplier=self.dp_noise_multiplier, clip=self.dp_clip, target_delta=self.dp_target_delta)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.tls_cert is None and not self.insecure:
            raise ValueError("TLS is required: set tls_cert and tls_key (or insecure = true for a loopback-only test)")
        if self.insecure and self.tls_cert is None and not is_loopback_host(self.address.rsplit(":", 1)[0].strip("[]")):
            raise ValueError(f"insecure (plaintext) serving is only allowed on a loopback address, not {self.address}")
        if not self.devices_file:
            raise ValueError("no enrolled devices: set devices_file (written by `fedbeat enroll`)")
        self.availability()

    def availability(self) -> AvailabilityConfig:
        """The simulation's over-selection and minimum-report policy, reused as is."""
        return AvailabilityConfig(
            clients_per_round=self.clients_per_round, overselect=self.overselect, min_reports_fraction=self.min_reports_fraction,
            dropout=0.0, deadline_s=self.deadline_s,
        )

    def enrolled_devices(self) -> dict[str, bytes]:
        """device id -> update key of every enrolled, unrevoked device."""
        revoked = set(self.revoked)
        return {device: key for device, key in read_devices(Path(self.devices_file)).items() if device not in revoked}


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    try:
        values = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config ({error})") from error
    known = {f.name for f in dataclasses.fields(CoordinatorConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown config keys {', '.join(unknown)}")
    try:
        return CoordinatorConfig(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
