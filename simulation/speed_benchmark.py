"""`fedbeat bench sim`: simulated-round throughput against centralized Keras, in one process.

Machines are noisy, so everything is a ratio measured in one run: examples/s of a federated
round (every reporter's local epochs) over examples/s of Keras ``fit`` on one round's examples
with the same batch size, and resident memory (this process + its TFF worker) at round 5
against the last round. Keras is the median of several timed passes after the rounds (not
the best one: a lucky pass should not fail a check). Resident memory moves by a few per cent from round to round with the
shards' sizes, so growth is also reported between the peaks of the first and last windows
of rounds (``rss_envelope_growth``): a leak raises that envelope, a fluctuation does not.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from simulation.config import SimulationConfig
from simulation.kernels import platform_summary
from simulation.resources import rss_mb
from simulation.beat_data import model_inputs
from simulation.runner import build_process, prepare_data, round_data
from simulation.shards import local_orders
from simulation.tff_runtime import LocalTffRuntime


@dataclasses.dataclass(frozen=True)
class SpeedBenchmarkConfig:
    """quick: CI-sized. Full: 1,000 clients x ~40 examples, 200 rounds (memory), plus sweeps."""

    clients_per_round: int = 1000
    rounds: int = 200
    sweep: tuple[int, ...] = (100, 300, 1000, 3000)
    sweep_rounds: int = 3
    vanilla_rounds: int = 2
    vanilla_sweep: tuple[int, ...] = (100, 300, 1000)
    """TFF's plain per-watch path (``build_weighted_fed_avg``), for the paired speed-up."""
    keras_passes: int = 5

    @classmethod
    def quick(cls) -> "SpeedBenchmarkConfig":
        return cls(clients_per_round=200, rounds=12, sweep=(), vanilla_sweep=())

    def __post_init__(self) -> None:
        if self.rounds < 6:
            raise ValueError(f"rounds must be >= 6 (memory is compared from round 5), got {self.rounds}")
        if self.keras_passes < 1:
            raise ValueError(f"keras_passes must be >= 1, got {self.keras_passes}")


def _simulation_config(clients_per_round: int, client_path: str) -> SimulationConfig:
    # One 30 s strip per watch: ~40 beats, the examples per client.
    return SimulationConfig(
        clients=max(2 * clients_per_round, 200), clients_per_round=clients_per_round, strips_per_client=1,
        client_path=client_path, out="/dev/null",
    )


def _rounds(config: SimulationConfig, rounds: int, *, progress: bool) -> list[dict]:
    """Per round: seconds, examples trained, resident MiB. Reporters drawn at random, no dropout."""
    data = prepare_data(config)
    weights = class_weights(data.train.labels, power=config.class_weight_power)
    rng = np.random.default_rng(0)
    log = []
    with LocalTffRuntime() as runtime:
        process = build_process(config, weights, data.train)
        state = process.initialize()
        for round_index in tqdm(range(1, rounds + 1), desc=f"{config.client_path} x{config.clients_per_round}", disable=not progress, leave=False):
            reporters = rng.choice(len(data.population), config.clients_per_round, replace=False)
            examples = config.local_epochs * int(sum(len(data.population.client(c)) for c in reporters))
            started = time.perf_counter()
            state = process.next(state, round_data(config, data.train, data.population, reporters, round_index)).state
            log.append({"seconds": time.perf_counter() - started, "examples": examples, "rss_mb": rss_mb(runtime.worker_pids)})
    return log


def _examples_per_s(log: list[dict], warmup: int = 1) -> float:
    """Mean throughput after the warm-up round: what a run of these rounds delivers."""
    timed = log[warmup:]
    return sum(r["examples"] for r in timed) / sum(r["seconds"] for r in timed)


def keras_examples_per_s(config: SimulationConfig, passes: int) -> float:
    """Centralized Keras ``fit`` on one round's examples (same batches): the median of ``passes`` timed passes."""
    data = prepare_data(config)
    reporters = np.random.default_rng(0).choice(len(data.population), config.clients_per_round, replace=False)
    beats = [data.population.client(c) for c in reporters]
    orders = local_orders(np.array([len(b) for b in beats]), epochs=config.local_epochs, rng=np.random.default_rng(1))
    index = np.concatenate([b[o] for b, o in zip(beats, orders)])
    model = build_beat_classifier(seed=config.seed)
    model.compile(tf.keras.optimizers.SGD(config.centralized_learning_rate), WeightedCrossEntropy(class_weights(data.train.labels)))
    inputs, labels = model_inputs(data.train, index), data.train.labels[index].astype(np.int32)
    model.fit(inputs, labels, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)  # warm-up: tracing is not throughput
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        model.fit(inputs, labels, batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0)
        seconds.append(time.perf_counter() - started)
    return len(index) / float(np.median(seconds))


def rss_envelope_growth(rss: list[float]) -> float:
    """Peak of the last window of rounds over the peak of the first window from round 5 (10 rounds, or fewer in short runs)."""
    window = max(1, min(10, (len(rss) - 4) // 2))
    return max(rss[-window:]) / max(rss[4:4 + window]) - 1


def benchmark_simulation(bench: SpeedBenchmarkConfig, *, progress: bool = True) -> dict:
    config = _simulation_config(bench.clients_per_round, "vectorised")
    log = _rounds(config, bench.rounds, progress=progress)
    keras = keras_examples_per_s(config, bench.keras_passes)
    sim = _examples_per_s(log)
    result = {
        **platform_summary(),
        "clients_per_round": bench.clients_per_round,
        "examples_per_client": round(log[-1]["examples"] / config.local_epochs / bench.clients_per_round, 1),
        "local_epochs": config.local_epochs,
        "rounds": bench.rounds,
        "sim_examples_per_s": round(sim, 1),
        "keras_examples_per_s": round(keras, 1),
        "ratio": round(sim / keras, 3),
        "round_seconds_median": round(float(np.median([r["seconds"] for r in log[1:]])), 3),
        "rss_mb_round5": round(log[4]["rss_mb"], 1),
        "rss_mb_last": round(log[-1]["rss_mb"], 1),
        "rss_growth": round(log[-1]["rss_mb"] / log[4]["rss_mb"] - 1, 4),
        "rss_envelope_growth": round(rss_envelope_growth([r["rss_mb"] for r in log]), 4),
        "rss_mb_per_round": [round(r["rss_mb"], 1) for r in log],
    }
    logs: dict[tuple[int, str], list[dict]] = {}

    def timed(clients: int, client_path: str, rounds: int) -> list[dict]:
        if (clients, client_path) not in logs:
            logs[clients, client_path] = _rounds(_simulation_config(clients, client_path), rounds + 1, progress=progress)
        return logs[clients, client_path]

    if bench.vanilla_sweep:
        vanilla = _examples_per_s(timed(bench.clients_per_round, "plain", bench.vanilla_rounds))
        result.update(vanilla_examples_per_s=round(vanilla, 1), vanilla_ratio=round(vanilla / keras, 3), speedup_vs_vanilla=round(sim / vanilla, 2))
    sweep = []
    for clients in sorted(set(bench.sweep) | set(bench.vanilla_sweep)):
        row: dict = {"clients_per_round": clients}
        for path, key, rounds, wanted in (
            ("vectorised", "vectorised_round_s", bench.sweep_rounds, bench.sweep),
            ("plain", "vanilla_round_s", bench.vanilla_rounds, bench.vanilla_sweep),
        ):
            if clients in wanted:
                row[key] = round(float(np.median([r["seconds"] for r in timed(clients, path, rounds)[1:]])), 3)
        sweep.append(row)
    if sweep:
        result["sweep"] = sweep
    return result
