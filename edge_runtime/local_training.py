"""On-device training: E local epochs of SGD through the ``train`` signature, then the update.

The math is the simulation's client step (same loss, class weights, batch size, learning
rate and per-epoch shuffling), so a device's update is what TFF's client work computes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edge_runtime.codecs import ErrorFeedback
from edge_runtime.interpreter import TrainableModel


@dataclasses.dataclass(frozen=True)
class LocalTrainingConfig:
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 0.2
    momentum: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.learning_rate <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"need learning_rate > 0 and 0 <= momentum < 1, got {self.learning_rate} and {self.momentum}")


def train_locally(
    model: TrainableModel,
    global_weights: np.ndarray,
    *,
    beat: np.ndarray,
    log_rr: np.ndarray,
    label: np.ndarray,
    class_weights: np.ndarray,
    config: LocalTrainingConfig,
) -> tuple[np.ndarray, list[float]]:
    """Returns (update = local minus global weights, float32[P]; loss of every step)."""
    if beat.shape[0] == 0:
        raise ValueError("no labelled beats to train on")
    model.set_weights(global_weights)
    rng = np.random.default_rng(config.seed)
    weight = np.asarray(class_weights, np.float32)[label]
    losses = []
    for _ in range(config.epochs):
        order = rng.permutation(beat.shape[0])
        for start in range(0, order.size, config.batch_size):
            batch = order[start : start + config.batch_size]
            losses.append(model.train_step(beat[batch], log_rr[batch], label[batch], weight[batch], learning_rate=config.learning_rate, momentum=config.momentum))
    return model.get_weights() - global_weights, losses


def save_weights(path: Path, weights: np.ndarray, layout_hash: str) -> None:
    """Persist a weight-shaped vector (the error-feedback residual) across app restarts, tagged with its layout."""
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, weights=weights.astype(np.float32), layout_hash=np.array(layout_hash))
    partial.replace(path)


def load_weights(path: Path, layout_hash: str) -> np.ndarray:
    with np.load(path) as data:
        if str(data["layout_hash"]) != layout_hash:
            raise ValueError(f"{path}: weights of layout {data['layout_hash']}, the model has {layout_hash}")
        return data["weights"]


def load_feedback(path: Path, length: int, layout_hash: str) -> ErrorFeedback:
    """Error feedback with the residual a previous run left (what a biased codec has not sent yet)."""
    feedback = ErrorFeedback(length)
    if path.is_file():
        feedback.residual = load_weights(path, layout_hash)
    return feedback
