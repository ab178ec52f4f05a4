"""The fast TFF loop (DATASET_ITERATOR) gives the same FedAvg model as TFF's default loop."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow_federated as tff

from datasets.loading import load_split
from datasets.partition import PartitionConfig, partition
from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from simulation.algorithms import FAST_LOOP, build_fedavg
from simulation.runner import client_dataset
from simulation.shards import local_orders
from simulation.tff_runtime import LocalTffRuntime

pytestmark = pytest.mark.slow


def one_round(loop, train, population, weights) -> list[np.ndarray]:
    beats = [population.client(c) for c in range(4)]
    orders = local_orders(np.array([len(b) for b in beats]), epochs=2, rng=np.random.default_rng(0))
    datasets = [client_dataset(train, b, o, batch_size=16) for b, o in zip(beats, orders)]

    def model_fn():
        return tff.learning.models.from_keras_model(
            build_beat_classifier(seed=0), loss=WeightedCrossEntropy(weights), input_spec=datasets[0].element_spec
        )

    process = build_fedavg(model_fn, client_learning_rate=0.2, loop_implementation=loop)
    state = process.next(process.initialize(), datasets).state
    return [np.asarray(w) for w in process.get_model_weights(state).trainable]


def test_fast_loop_matches_the_default_loop(synthetic_dir, tmp_path):
    train = load_split(synthetic_dir, "DS1")
    population = partition(train, PartitionConfig(clients=8, seed=0))
    weights = class_weights(train.labels)
    with LocalTffRuntime(log_path=tmp_path / "worker.log"):
        fast = one_round(FAST_LOOP, train, population, weights)
        default = one_round(tff.learning.LoopImplementation.DATASET_REDUCE, train, population, weights)
    for a, b in zip(fast, default):
        np.testing.assert_allclose(a, b, atol=1e-6)
