"""Each new global model on the held-out people, through the trainable TFLite file on
tflite-runtime: the process that does it every round never holds TensorFlow (about 0.65 GB
resident), only the held-out beats and one interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets.loading import load_split
from edge_runtime.interpreter import TrainableModel
from edge_runtime.rhythm import without_s_in_fibrillation
from simulation.beat_data import data_directory, fibrillation_beats, model_inputs
from simulation.config import SimulationConfig
from simulation.coordinator.config import CoordinatorConfig
from simulation.metrics import classification_report

BATCH = 1024  # bounds the interpreter's activations whatever the number of held-out beats


class HeldOutEvaluation:
    """DS2 (or the synthetic held-out people) loaded once; ``evaluate`` per new model."""

    def __init__(self, config: CoordinatorConfig, tflite: Path, loss_weights: list[float]):
        test = load_split(data_directory(SimulationConfig(dataset=config.dataset, data_dir=config.data_dir, seed=config.seed)), "DS2", progress=False)
        self.beat, self.log_rr = model_inputs(test)
        self.fibrillation = fibrillation_beats(test)
        self.labels = test.labels.astype(np.int64)
        self.loss_weights = np.asarray(loss_weights, np.float64)
        self.model = TrainableModel(tflite)

    def evaluate(self, weights: np.ndarray) -> dict:
        """Class-weighted cross-entropy (as ``models.beat_classifier.WeightedCrossEntropy``: the
        mean over beats), accuracy and macro-F1 of the calls a wearer sees (``beat_data.calls``)."""
        self.model.set_weights(weights)
        probabilities = np.concatenate([
            self.model.probabilities(self.beat[i : i + BATCH], self.log_rr[i : i + BATCH]) for i in range(0, len(self.labels), BATCH)
        ]).astype(np.float64)
        true_class = np.maximum(probabilities[np.arange(len(self.labels)), self.labels], np.finfo(np.float32).tiny)
        loss = float(np.mean(-np.log(true_class) * self.loss_weights[self.labels]))
        report = classification_report(self.labels, without_s_in_fibrillation(probabilities.argmax(axis=1), self.fibrillation))
        return {"loss": loss, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
