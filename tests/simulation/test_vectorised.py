"""The vectorised client path (shards of watches per TFF client) against the plain per-watch path."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from models.beat_classifier import build_beat_classifier
from simulation.config import SimulationConfig
from simulation.runner import run_simulation
from tests.simulation.test_runner import SMALL, fedbeat, worker_pids, write_config

pytestmark = pytest.mark.slow


def final_weights(out: Path) -> list[np.ndarray]:
    return tf.keras.models.load_model(out / "model.keras", compile=False).get_weights()


def simulate(tmp_path: Path, name: str, **fields) -> list[np.ndarray]:
    config = SimulationConfig(**{**SMALL, "rounds": 3, "dropout": 0.2, "out": str(tmp_path / name), **fields})
    run_simulation(config, progress=False)
    return final_weights(tmp_path / name)


@pytest.mark.parametrize("compression", [None, "fp16"])
def test_vectorised_path_trains_the_same_model_as_the_plain_path(tmp_path, compression):
    # Prepare / Execute: 3 rounds with dropouts, 5 reporters in shards of 2 watches. At the
    # default client lr 0.2 local SGD on these tiny watches amplifies float rounding ~10x per
    # round (6e-8 after one round, 6e-5 after three); at 0.05 it does not, so the paths can
    # be compared over several rounds.
    plain = simulate(tmp_path, "plain", client_path="plain", compression=compression, client_learning_rate=0.05)
    fast = simulate(tmp_path, "fast", client_path="vectorised", shard_size=2, compression=compression, client_learning_rate=0.05)
    # Assert
    initial = build_beat_classifier(seed=0).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(plain, initial)) > 0.01  # the runs trained
    # fp16 rounds each watch's update: where the two paths' float32 updates differ in the last
    # bit (the stacked model sums its gradients in another order), fp16 may round one coordinate
    # a step apart (~1.5e-5 at these update sizes), so it gets a few such steps of room.
    tolerance = 1e-5 if compression is None else 5e-5
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a, b, atol=tolerance)


def test_fedprox_pulls_towards_the_global_model(tmp_path):
    # FedProx's proximal term mu * (w - w0) keeps local models near the global one, so one
    # round with a strong mu moves the model less than FedAvg does.
    initial = build_beat_classifier(seed=0).get_weights()

    def moved(weights: list[np.ndarray]) -> float:
        return float(np.sqrt(sum(((w - w0) ** 2).sum() for w, w0 in zip(weights, initial))))

    fedavg = moved(simulate(tmp_path, "avg", rounds=1, algorithm="fedavg"))
    fedprox = moved(simulate(tmp_path, "prox", rounds=1, algorithm="fedprox", proximal_strength=2.0))
    assert fedprox < 0.8 * fedavg


def test_two_local_workers_give_the_same_model_as_one(tmp_path):
    # Prepare: 5 reporters in shards of 2 -> 3 TFF clients, split across two worker_binary processes
    config = write_config(tmp_path / "small.toml", shard_size=2)
    tag = uuid.uuid4().hex
    # Execute
    one = fedbeat("simulate", "--config", str(config), "--rounds", "3", "--out", str(tmp_path / "one"), "--json", tag=tag)
    two = fedbeat("simulate", "--config", str(config), "--rounds", "3", "--workers", "2", "--out", str(tmp_path / "two"), "--json", tag=tag)
    # Assert
    for result in (one, two):
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(two.stdout)["model_sha256"] == json.loads(one.stdout)["model_sha256"]
    assert not worker_pids(tag)  # both workers stopped
    assert (tmp_path / "two" / "tff_worker.log").is_file()


@pytest.mark.parametrize("proximal_strength", [0.0, 2.0])  # FedAvg and FedAdam share the client step (0); FedProx adds mu
def test_a_watchs_update_does_not_depend_on_its_shard_mates(synthetic_dir, proximal_strength):
    # Prepare: a 40-beat watch (2 epochs: 3 steps of 32) alone, and sharded with a 300-beat watch (19 steps)
    from datasets.loading import load_split
    from models.edge_trainable import weight_layout
    from simulation.shards import build_shard, local_orders
    from simulation.vectorised import _train_shard

    table = load_split(synthetic_dir, "DS1", progress=False)
    small, big = np.arange(40), np.arange(100, 400)
    orders = local_orders(np.array([40, 300]), epochs=2, rng=np.random.default_rng(0))
    model = build_beat_classifier(seed=0)
    names = [name for name, _ in weight_layout(model)]
    initial = [tf.constant(w) for w in model.get_weights()]

    def trained_small(beats, watch_orders) -> list[np.ndarray]:
        element = {k: tf.constant(v) for k, v in build_shard(table, beats, watch_orders, batch_size=32).items()}
        _, trained, _, _ = _train_shard(
            element, initial, names=names, loss_weights=tf.ones(5), learning_rate=0.2, proximal_strength=proximal_strength,
        )
        return [w[0].numpy() for w in trained]

    # Execute
    alone = trained_small([small], orders[:1])
    sharded = trained_small([small, big], orders)
    # Assert: identical up to float rounding (before the mask: mu 2 kept pulling the small watch for 16 padded steps)
    moved = max(np.abs(a - w).max() for a, w in zip(alone, model.get_weights()))
    assert moved > 1e-3
    for a, b in zip(alone, sharded):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_fedprox_on_the_plain_path_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="fedprox runs on the vectorised client path only"):
        SimulationConfig(algorithm="fedprox", client_path="plain")


def test_a_non_finite_or_exploding_watch_update_is_dropped_with_its_weight():
    from simulation.vectorised import accepted_updates

    flat = tf.constant([[0.3, 0.4], [30.0, 40.0], [np.nan, 1.0], [12.0, 16.0]])  # norms 0.5, 50, NaN, 20
    updates, weights = accepted_updates(flat, tf.constant([10.0, 20.0, 30.0, 40.0]), max_norm=20.0)
    np.testing.assert_array_equal(weights.numpy(), [10.0, 0.0, 0.0, 40.0])
    np.testing.assert_array_equal(updates.numpy(), np.float32([[0.3, 0.4], [0.0, 0.0], [0.0, 0.0], [12.0, 16.0]]))


def test_server_momentum_adds_the_previous_rounds_step(tmp_path):
    # FedAvgM (heavy ball): step_t = lr * (beta * step_{t-1} / lr + mean update_t). Round 1 is
    # FedAvg's; in round 2 both runs start from the same model with the same reporters, so their
    # models differ by exactly beta x round 1's step.
    initial = build_beat_classifier(seed=0).get_weights()
    common = {"server_learning_rate": 0.5}
    avg1, avgm1 = (simulate(tmp_path, f"{name}1", rounds=1, server_momentum=beta, **common) for name, beta in (("avg", 0.0), ("avgm", 0.9)))
    avg2, avgm2 = (simulate(tmp_path, f"{name}2", rounds=2, server_momentum=beta, **common) for name, beta in (("avg", 0.0), ("avgm", 0.9)))
    for w0, a1, m1, a2, m2 in zip(initial, avg1, avgm1, avg2, avgm2):
        np.testing.assert_allclose(m1, a1, atol=1e-6)
        np.testing.assert_allclose(m2 - a2, 0.9 * (a1 - w0), atol=1e-5)
    assert max(np.abs(a1 - w0).max() for a1, w0 in zip(avg1, initial)) > 0.01  # round 1 moved the model


def test_server_momentum_is_refused_where_it_means_nothing():
    with pytest.raises(ValueError, match="FedAdam keeps its own moments"):
        SimulationConfig(algorithm="fedadam", server_momentum=0.5)
    with pytest.raises(ValueError, match=r"server_momentum must be in \[0, 1\)"):
        SimulationConfig(server_momentum=1.0)
