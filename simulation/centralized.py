"""`fedbeat centralized`: the same model trained on pooled DS1 beats, the reference FL is measured against.

Same architecture, loss, class weights, optimizer (SGD), batch size and example budget
(rounds x clients per round x mean client size x local epochs) as the federated run of
the same config, so the gap between the two is the price of federation, not of a
different recipe. Only the learning rate is its own (``centralized_learning_rate``):
FedAvg's client rate (0.2) is tuned for short local runs whose updates are averaged, and
42k sequential steps at that rate diverge to an all-N model on MIT-BIH.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from models.beat_classifier import WeightedCrossEntropy, build_beat_classifier, class_weights
from simulation.config import SimulationConfig
from simulation.beat_data import model_inputs
from simulation.runner import evaluate, model_sha256, prepare_data


def run_centralized(config: SimulationConfig, *, progress: bool = True) -> dict:
    data = prepare_data(config)
    weights = class_weights(data.train.labels, power=config.class_weight_power)
    budget = config.rounds * config.clients_per_round * float(np.mean(data.population.sizes())) * config.local_epochs
    steps = max(1, int(round(budget / config.batch_size)))
    tf.keras.utils.set_random_seed(config.seed)
    model = build_beat_classifier(seed=config.seed)
    model.compile(optimizer=tf.keras.optimizers.SGD(config.centralized_learning_rate), loss=WeightedCrossEntropy(weights))
    rng = np.random.default_rng([config.seed, 2])
    order = np.concatenate([rng.permutation(len(data.train)) for _ in range(int(np.ceil(steps * config.batch_size / len(data.train))))])
    order = order[: steps * config.batch_size]
    beat, log_rr = model_inputs(data.train, order)
    history = model.fit((beat, log_rr), data.train.labels[order].astype(np.int32), batch_size=config.batch_size, epochs=1, shuffle=False, verbose=1 if progress else 0)
    summary = {
        "config": dataclasses.asdict(config),
        "examples_seen": int(order.size),
        "train_loss": float(history.history["loss"][-1]),
        "evaluated_on": data.evaluated_on,
        "test": evaluate(model, data.test, weights),
        "model_sha256": model_sha256(model.get_weights()),
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "centralized_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
