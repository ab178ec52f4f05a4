"""Simulation configuration: one frozen dataclass, from TOML, overridden by CLI flags."""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from datasets.partition import PartitionConfig
from edge_runtime.codecs import CODECS
from edge_runtime.payload import MAX_UPDATE_NORM
from simulation.availability import AvailabilityConfig
from simulation.privacy_config import PrivacyConfig
from simulation.worker_address import parse_worker_address

ALGORITHMS = ("fedavg", "fedprox", "fedadam")


class ConfigError(ValueError):
    """A configuration the user gave (file or flags) that cannot run; the message names the field."""

DATASETS = ("synthetic", "mitdb")
VALIDATION_POPULATIONS = ("ds1", "all")
CLIENT_PATHS = ("vectorised", "plain")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Everything a run depends on; two runs with equal configs give equal models."""

    dataset: str = "synthetic"
    data_dir: str | None = None
    extra_data_dirs: tuple[str, ...] = ()
    validation_fold: int | None = None
    validation_folds: int = 5
    validation_population: str = "ds1"
    """Whom the validation folds deal: the DS1 people ("ds1", 4-5 per fold), or every training-side
    person, DS1 and each extra database's ("all", about 16 per fold with svdb)."""
    synthetic_subjects: int = 24
    synthetic_minutes: float = 10.0
    clients: int = 200
    clients_per_round: int = 20
    rounds: int = 30
    local_epochs: int = 3
    batch_size: int = 32
    client_learning_rate: float = 0.2
    max_update_norm: float = MAX_UPDATE_NORM
    server_learning_rate: float | None = None
    server_momentum: float = 0.0
    release_decay: float = 0.0
    """0: release the last round's global model; else an exponential moving average of the rounds' models (simulation/model_release.py)."""
    centralized_learning_rate: float = 0.02
    proximal_strength: float = 0.01
    class_weight_power: float = 0.5
    algorithm: str = "fedavg"
    client_path: str = "vectorised"
    shard_size: int = 100
    workers: int = 1
    worker_addresses: tuple[str, ...] = ()
    dp_noise_multiplier: float | None = None
    dp_target_epsilon: float | None = None
    dp_clip: str | float = "adaptive"
    dp_clip_quantile: float = 0.9
    dp_target_delta: float = 1e-5
    secure_aggregation: bool = False
    compression: str | None = None
    partition: str = "patient"
    alpha: float = 0.5
    strips_per_client: int = 3
    dropout: float = 0.08
    overselect: float = 1.3
    min_reports_fraction: float = 0.5
    deadline_s: float = 6.0
    eval_every: int = 5
    seed: int = 0
    out: str = "runs/latest"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.client_path not in CLIENT_PATHS:
            raise ValueError(f"client_path must be one of {', '.join(CLIENT_PATHS)}, got {self.client_path!r}")
        if self.algorithm == "fedprox" and self.client_path == "plain":
            raise ValueError(
                "fedprox runs on the vectorised client path only: TFF 0.87's FedProx (the plain path) adds mu * (w0 - w), "
                "the opposite of the paper's proximal term; drop --client-path plain"
            )
        object.__setattr__(self, "worker_addresses", tuple(parse_worker_address(a) for a in self.worker_addresses))
        object.__setattr__(self, "extra_data_dirs", tuple(self.extra_data_dirs))
        if self.validation_population not in VALIDATION_POPULATIONS:
            raise ValueError(f"validation_population must be one of {', '.join(VALIDATION_POPULATIONS)}, got {self.validation_population!r}")
        if self.validation_folds < 2:
            raise ValueError(f"validation_folds must be >= 2, got {self.validation_folds}")
        if self.validation_fold is not None and not 0 <= self.validation_fold < self.validation_folds:
            raise ValueError(f"validation_fold must be in 0..{self.validation_folds - 1}, got {self.validation_fold}")
        if self.worker_addresses and self.workers != 1:
            raise ValueError("give either workers (local worker processes) or worker_addresses (running workers), not both")
        for name in ("rounds", "local_epochs", "batch_size", "eval_every", "synthetic_subjects", "shard_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.class_weight_power < 0:
            raise ValueError(f"class_weight_power must be >= 0 (0 = unweighted), got {self.class_weight_power}")
        for name in ("client_learning_rate", "centralized_learning_rate", "max_update_norm"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {self.server_momentum}")
        if not 0 <= self.release_decay < 1:
            raise ValueError(f"release_decay must be in [0, 1), got {self.release_decay}")
        if self.server_momentum and self.algorithm == "fedadam":
            raise ValueError("server_momentum is FedAvgM's heavy ball on SGD; FedAdam keeps its own moments (drop --server-momentum)")
        if self.server_learning_rate is not None and self.server_learning_rate <= 0:
            raise ValueError(f"server_learning_rate must be positive, got {self.server_learning_rate}")
        if self.compression is not None and self.compression not in CODECS:
            raise ValueError(f"compression must be one of {', '.join(CODECS)}, got {self.compression!r}")
        if self.clients_per_round > self.clients:
            raise ValueError(f"clients_per_round ({self.clients_per_round}) must not exceed clients ({self.clients})")
        if isinstance(self.dp_clip, str) and self.dp_clip != "adaptive":
            try:
                object.__setattr__(self, "dp_clip", float(self.dp_clip))
            except ValueError:
                raise ValueError(f"dp_clip must be 'adaptive' or a positive L2 norm, got {self.dp_clip!r}") from None
        if self.dp_noise_multiplier is not None and self.dp_target_epsilon is not None:
            raise ValueError("give dp_noise_multiplier or dp_target_epsilon, not both")
        if self.secure_aggregation and (self.workers > 1 or self.worker_addresses):
            raise ValueError("secure aggregation runs on one TFF worker (the simulated protocol is compiled for a single context)")
        if self.differential_privacy:
            if self.partition != "patient":
                raise ValueError(f"differential privacy needs partition 'patient' (one watch per patient, the privacy unit), got {self.partition!r}")
            self.privacy_config(1.0 if self.dp_noise_multiplier is None else self.dp_noise_multiplier)  # validates the DP fields
        self.partition_config()  # validates the partition fields
        self.availability_config()  # validates the availability fields

    def partition_config(self) -> PartitionConfig:
        return PartitionConfig(
            scheme=self.partition, clients=self.clients, strips_per_client=self.strips_per_client, alpha=self.alpha, seed=self.seed
        )

    def availability_config(self) -> AvailabilityConfig:
        return AvailabilityConfig(
            clients_per_round=self.clients_per_round, overselect=self.overselect,
            min_reports_fraction=self.min_reports_fraction, dropout=self.dropout, deadline_s=self.deadline_s,
        )

    def sampling_rate(self, population: int) -> float:
        """q = K / population: each client's chance to be in a round, the rate the accountant uses."""
        return self.clients_per_round / population

    def sampled_availability(self, population: int) -> AvailabilityConfig:
        """What a run samples: under DP, Poisson at ``sampling_rate`` (what the accountant assumes)."""
        config = self.availability_config()
        if not self.differential_privacy:
            return config
        return dataclasses.replace(config, poisson_rate=self.sampling_rate(population))

    @property
    def differential_privacy(self) -> bool:
        return self.dp_noise_multiplier is not None or self.dp_target_epsilon is not None

    @property
    def effective_shard_size(self) -> int:
        """DP clips and secure aggregation sums per TFF client, so each must be one watch."""
        return 1 if self.differential_privacy or self.secure_aggregation else self.shard_size

    def privacy_config(self, noise_multiplier: float) -> PrivacyConfig:
        return PrivacyConfig(
            noise_multiplier=noise_multiplier, clip=self.dp_clip, clip_quantile=self.dp_clip_quantile, target_delta=self.dp_target_delta,
            secure_aggregation=self.secure_aggregation,
        )

    @property
    def effective_server_learning_rate(self) -> float:
        """FedAvg/FedProx apply the mean update as is (1.0); FedAdam needs a small step."""
        if self.server_learning_rate is not None:
            return self.server_learning_rate
        return 0.01 if self.algorithm == "fedadam" else 1.0


def load_config(toml_path: Path | None, overrides: dict) -> SimulationConfig:
    """Defaults < TOML file < CLI flags (None means 'not given')."""
    values: dict = {}
    if toml_path is not None:
        try:
            values.update(tomllib.loads(Path(toml_path).read_text()))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"{toml_path}: cannot read config ({error})") from error
    known = {f.name for f in dataclasses.fields(SimulationConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{toml_path}: unknown config keys {', '.join(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SimulationConfig(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{toml_path or 'flags'}: {error}") from error
