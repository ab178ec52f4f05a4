"""Deal beats into simulated smartwatch clients.

A client is one watch: by default one person's watch holding a few 30 s ECG strips, the
length a watch ECG app records. Clients are index lists into one shared ``BeatTable``
(CSR layout: ``indices`` and ``offsets``), so a population of 10,000 watches costs a few
hundred kB of indices rather than 10,000 copies of the beats.

MIT-BIH gives 22 training patients with 30 minutes each (~60 disjoint strips), so a
population of thousands of watches re-samples each patient's recording: a watch's strips
start at random times, and two watches of one patient may overlap in time. Watches are
therefore not independent people; a patient's watches never leave that patient.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from datasets.beat_table import BeatTable
from datasets.splits import person_of

SCHEMES = ("patient", "quantity", "dirichlet")


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """How to deal a training table into clients.

    scheme: "patient" (each watch one patient, ``strips_per_client`` strips), "quantity"
    (same, but the strip count is log-normal with ``quantity_sigma``: a few heavy users,
    many light ones), or "dirichlet" (label skew: each class's beats are split across all
    clients by Dirichlet(``alpha``) proportions, mixing patients; Hsu et al. 2019).
    """

    scheme: str = "patient"
    clients: int = 2000
    strips_per_client: int = 3
    strip_s: float = 30.0
    quantity_sigma: float = 1.0
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.clients < 1:
            raise ValueError(f"clients must be >= 1, got {self.clients}")
        if self.strips_per_client < 1:
            raise ValueError(f"strips_per_client must be >= 1, got {self.strips_per_client}")
        if self.strip_s <= 0:
            raise ValueError(f"strip_s must be positive, got {self.strip_s}")
        if self.quantity_sigma < 0:
            raise ValueError(f"quantity_sigma must be >= 0, got {self.quantity_sigma}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")


@dataclasses.dataclass(frozen=True)
class ClientPopulation:
    """Clients as slices of one index array into a shared BeatTable.

    Client c holds beats ``table[indices[offsets[c]:offsets[c + 1]]]``; indices are int32
    (4 bytes per held beat against 376 for a copied window and RR features).
    """

    indices: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def client(self, c: int) -> np.ndarray:
        """Beat indices of client c (a view, not a copy)."""
        return self.indices[self.offsets[c] : self.offsets[c + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_lists(cls, clients: list[np.ndarray]) -> "ClientPopulation":
        sizes = np.array([c.size for c in clients], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        indices = np.concatenate(clients).astype(np.int32) if clients else np.zeros(0, np.int32)
        return cls(indices=indices, offsets=offsets)


def partition(table: BeatTable, config: PartitionConfig) -> ClientPopulation:
    """Deal ``table`` (training beats only) into ``config.clients`` non-empty clients."""
    rng = np.random.default_rng(config.seed)
    if config.scheme == "dirichlet":
        return _dirichlet_label_skew(table, config, rng)
    return _patient_watches(table, config, rng)


def _patient_watches(table: BeatTable, config: PartitionConfig, rng: np.random.Generator) -> ClientPopulation:
    patients = np.unique(table.patient)
    per_patient = np.full(patients.size, config.clients // patients.size)
    per_patient[rng.permutation(patients.size)[: config.clients % patients.size]] += 1
    if config.scheme == "quantity":
        mu = np.log(config.strips_per_client) - config.quantity_sigma**2 / 2  # keeps the mean
        strips = np.maximum(1, np.rint(rng.lognormal(mu, config.quantity_sigma, config.clients))).astype(int)
    else:
        strips = np.full(config.clients, config.strips_per_client)
    clients: list[np.ndarray] = []
    for patient, watches in zip(patients, per_patient):
        beats = np.flatnonzero(table.patient == patient)
        beats = beats[np.argsort(table.time_s[beats], kind="stable")]
        times = table.time_s[beats]
        latest_start = max(float(times[-1]) - config.strip_s, float(times[0]))
        for _ in range(watches):
            starts = rng.uniform(float(times[0]), latest_start, strips[len(clients)])
            lo = np.searchsorted(times, starts)
            hi = np.searchsorted(times, starts + config.strip_s)
            chosen = np.unique(np.concatenate([beats[a:b] for a, b in zip(lo, hi)]))
            clients.append(chosen if chosen.size else beats[lo[:1].clip(max=beats.size - 1)])
    return ClientPopulation.from_lists(clients)


def _dirichlet_label_skew(table: BeatTable, config: PartitionConfig, rng: np.random.Generator) -> ClientPopulation:
    if len(table) < config.clients:
        raise ValueError(f"cannot deal {len(table)} beats into {config.clients} non-empty clients")
    owner = np.empty(len(table), dtype=np.int64)
    for label in np.unique(table.labels):
        beats = rng.permutation(np.flatnonzero(table.labels == label))
        shares = rng.dirichlet(np.full(config.clients, config.alpha))
        owner[beats] = rng.choice(config.clients, size=beats.size, p=shares)
    sizes = np.bincount(owner, minlength=config.clients)
    for empty in np.flatnonzero(sizes == 0):  # give each empty watch one beat of the largest
        donor = int(np.argmax(sizes))
        owner[rng.choice(np.flatnonzero(owner == donor))] = empty
        sizes[donor] -= 1
        sizes[empty] += 1
    order = np.argsort(owner, kind="stable")
    return ClientPopulation(indices=order.astype(np.int32), offsets=np.concatenate([[0], np.cumsum(sizes)]))


def population_summary(population: ClientPopulation, table: BeatTable, test_patients: tuple[str, ...]) -> dict:
    """The partition's audit: who is where, how big clients are, and test-patient leakage (by person, not record name)."""
    client_of_beat = np.repeat(np.arange(len(population)), population.sizes())
    patient_of_beat = table.patient[population.indices]
    pairs = np.unique(np.stack([client_of_beat, patient_of_beat]), axis=1)
    patients_per_client = np.bincount(pairs[0], minlength=len(population))
    used_patients = {table.patients[p] for p in np.unique(patient_of_beat)}
    sizes = population.sizes()
    return {
        "clients": len(population),
        "patients": len(used_patients),
        "max_patients_per_client": int(patients_per_client.max()),
        "test_patients_in_train": len({person_of(p) for p in used_patients} & {person_of(p) for p in test_patients}),
        "examples_per_client": {"min": int(sizes.min()), "median": int(np.median(sizes)), "max": int(sizes.max())},
    }
