"""The two TFLite models as numpy functions, on stock tflite-runtime (no TensorFlow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tflite_runtime.interpreter import Interpreter


class TrainableModel:
    """``model_train.tflite``: float inference, one SGD/momentum step, flat weights in and out.

    beat: float32[B, window, 2] beats (edge_runtime.beats.BEAT_CHANNEL_NAMES); log_rr: float32[B, 8]; label: int[B];
    weight: float32[B] per-beat loss weights (the manifest's class weights).
    """

    def __init__(self, path: Path | str):
        self._interpreter = Interpreter(model_path=str(path))
        self._infer = self._interpreter.get_signature_runner("infer")
        self._train = self._interpreter.get_signature_runner("train")
        self._get = self._interpreter.get_signature_runner("get_weights")
        self._set = self._interpreter.get_signature_runner("set_weights")

    def probabilities(self, beat: np.ndarray, log_rr: np.ndarray) -> np.ndarray:
        return self._infer(beat=beat.astype(np.float32), log_rr=log_rr.astype(np.float32))["probabilities"]

    def train_step(self, beat: np.ndarray, log_rr: np.ndarray, label: np.ndarray, weight: np.ndarray, *, learning_rate: float, momentum: float = 0.0) -> float:
        out = self._train(
            beat=beat.astype(np.float32), log_rr=log_rr.astype(np.float32), label=label.astype(np.int32),
            weight=weight.astype(np.float32), learning_rate=np.float32(learning_rate), momentum=np.float32(momentum),
        )
        return float(out["loss"])

    def get_weights(self) -> np.ndarray:
        """float32[P], the manifest's weight layout."""
        return np.array(self._get()["weights"], dtype=np.float32)

    def set_weights(self, weights: np.ndarray) -> None:
        """Load a flat weight vector and reset momentum."""
        self._set(weights=np.ascontiguousarray(weights, dtype=np.float32))


class Int8Classifier:
    """``model_int8.tflite``: quantizes inputs with the model's own scales, dequantizes outputs."""

    def __init__(self, path: Path | str):
        self._interpreter = Interpreter(model_path=str(path))
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        self._beat = next(d for d in inputs if len(d["shape"]) == 3)
        self._rr = next(d for d in inputs if len(d["shape"]) == 2)
        self._out = self._interpreter.get_output_details()[0]

    @staticmethod
    def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
        scale, zero = detail["quantization"]
        return np.clip(np.rint(x / scale + zero), -128, 127).astype(np.int8)

    def classes(self, beat: np.ndarray, log_rr: np.ndarray) -> np.ndarray:
        """int64[B] class indices."""
        return self.logits(beat, log_rr).argmax(axis=1).astype(np.int64)

    def logits(self, beat: np.ndarray, log_rr: np.ndarray) -> np.ndarray:
        """float32[B, 5] dequantized logits, one beat at a time (the int8 model has batch 1)."""
        scale, zero = self._out["quantization"]
        out = np.empty((beat.shape[0], self._out["shape"][-1]), dtype=np.float32)
        for i in range(beat.shape[0]):
            self._interpreter.set_tensor(self._beat["index"], self._quantize(beat[i : i + 1], self._beat))
            self._interpreter.set_tensor(self._rr["index"], self._quantize(log_rr[i : i + 1], self._rr))
            self._interpreter.invoke()
            out[i] = (self._interpreter.get_tensor(self._out["index"])[0].astype(np.float32) - zero) * scale
        return out
