"""The TensorFlow half of the coordinator, imported only in its short-lived TensorFlow processes (model_worker.py)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from edge_runtime.manifest import layout_hash
from models.beat_classifier import build_beat_classifier, class_weights
from models.edge_trainable import convert_trainable, weight_layout
from simulation.beat_data import model_inputs, public_reference
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.model_worker import ModelSetup, trainable_tflite_path


class ModelSide:
    """The seeded model and the public calibration beats."""

    def __init__(self, config: CoordinatorConfig):
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.config = config
        self.model = build_beat_classifier(seed=config.seed)
        self.shapes = [w.shape for w in self.model.get_weights()]
        # Class weights and int8 calibration from public (synthetic) beats: the server has no device's data.
        reference = public_reference()
        self.loss_weights = class_weights(reference.labels)
        self.calibration = model_inputs(reference, slice(0, 2000))

    def setup(self) -> ModelSetup:
        weights = self.model.get_weights()
        return ModelSetup(
            initial_weights=np.concatenate([w.ravel() for w in weights]).astype(np.float32),
            manifest={
                "layout_hash": layout_hash(weight_layout(self.model)), "class_weights": [float(w) for w in self.loss_weights],
                "parameters": int(sum(w.size for w in weights)),
            },
            tflite=self._trainable_tflite(),
        )

    def _trainable_tflite(self) -> bytes:
        """The trainable TFLite file of the architecture (the same for every round), converted once per state directory."""
        path = trainable_tflite_path(self.config)
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as saved_model:
                partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                partial.write_bytes(convert_trainable(self.model, saved_model))
                os.replace(partial, path)
        return path.read_bytes()

    def _with(self, flat: np.ndarray) -> tf.keras.Model:
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.model.set_weights([part.reshape(shape) for part, shape in zip(np.split(flat, np.cumsum(sizes)[:-1]), self.shapes)])
        return self.model

    def export(self, version: str, weights: np.ndarray, final: Path) -> None:
        from models.export import export_for_devices

        beat, log_rr = self.calibration
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{version}.") as partial:
            export_for_devices(self._with(weights), Path(partial) / "export", beats=beat, log_rr=log_rr, class_weights=self.loss_weights)
            os.replace(Path(partial) / "export", final)


_side: ModelSide | None = None


def start(config: CoordinatorConfig) -> None:
    global _side
    _side = ModelSide(config)


def call(name: str, *args):
    return getattr(_side, name)(*args)
