"""The beat classifier: a small 1D CNN over the beat window plus the RR features.

Built only from layers whose training the edge runtime can express with TFLite builtin ops
(Conv1D as im2col + matmul, ReLU, max-pool, global average pool, dense, softmax cross
entropy): no batch norm and no dropout inside the trained graph. ~9.8k parameters.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from edge_runtime.aami import NUM_CLASSES
from edge_runtime.beats import RR_FEATURE_NAMES, BeatSpec

MAX_PARAMETERS = 50_000


def build_beat_classifier(spec: BeatSpec = BeatSpec(), *, seed: int = 0, width: int = 1) -> tf.keras.Model:
    """Keras model: inputs (beat float32[B, *spec.beat_shape], log_rr float32[B, 8]) -> logits [B, 5].

    ``width`` multiplies the convolutions' filters and the hidden units (2: ~37k parameters),
    for the ablation of model size; every trained and exported model uses 1."""
    init = tf.keras.initializers.GlorotUniform
    beat = tf.keras.Input(spec.beat_shape, name="beat")
    log_rr = tf.keras.Input((len(RR_FEATURE_NAMES),), name="log_rr")
    x = tf.keras.layers.Conv1D(16 * width, 7, padding="same", activation="relu", kernel_initializer=init(seed), name="conv1")(beat)
    x = tf.keras.layers.MaxPool1D(2)(x)
    x = tf.keras.layers.Conv1D(32 * width, 5, padding="same", activation="relu", kernel_initializer=init(seed + 1), name="conv2")(x)
    x = tf.keras.layers.MaxPool1D(2)(x)
    x = tf.keras.layers.Conv1D(32 * width, 5, padding="same", activation="relu", kernel_initializer=init(seed + 2), name="conv3")(x)
    x = tf.keras.layers.GlobalAveragePooling1D()(x)
    r = tf.keras.layers.Dense(16, activation="relu", kernel_initializer=init(seed + 3), name="rr_dense")(log_rr)
    h = tf.keras.layers.Dense(32 * width, activation="relu", kernel_initializer=init(seed + 4), name="hidden")(tf.keras.layers.Concatenate()([x, r]))
    logits = tf.keras.layers.Dense(NUM_CLASSES, kernel_initializer=init(seed + 5), name="logits")(h)
    return tf.keras.Model(inputs=(beat, log_rr), outputs=logits, name="beat_classifier")


MAX_WEIGHT_RATIO = 10.0
"""No class weighs more than 10x the most frequent one. Uncapped, the 8 Q beats of DS1 weigh
65x an N beat at power 0.5: a FedAvg run on 16 DS1 people diverged (weights to 1e22, every
later update NaN) at round ~75 of 100."""


def class_weights(labels: np.ndarray, *, power: float = 0.5) -> np.ndarray:
    """Per-class loss weights (1 / frequency) ** power, capped at ``MAX_WEIGHT_RATIO`` x the
    smallest, scaled so the mean weight per beat is 1.

    N is ~90 % of beats; unweighted training all but ignores S. Full inverse frequency
    (power 1) over-weights rare classes and destabilises SGD on small clients, so the square
    root is the default. Scaling to a mean of 1 per beat keeps the effective learning rate
    that of the unweighted loss. Absent classes get weight 0.
    """
    counts = np.bincount(np.asarray(labels, np.int64), minlength=NUM_CLASSES).astype(np.float64)
    weights = np.where(counts > 0, (counts.sum() / np.maximum(counts, 1)) ** power, 0.0)
    weights = np.minimum(weights, MAX_WEIGHT_RATIO * weights[counts > 0].min())
    return (weights * counts.sum() / (weights * counts).sum()).astype(np.float32)


class WeightedCrossEntropy(tf.keras.losses.Loss):
    """Softmax cross entropy with a fixed weight per true class, averaged over the batch."""

    def __init__(self, weights: np.ndarray, name: str = "weighted_cross_entropy"):
        super().__init__(name=name)
        self.weights = np.asarray(weights, np.float32)

    def call(self, y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return per_example * tf.gather(tf.constant(self.weights), labels)

    def get_config(self) -> dict:
        return {"weights": self.weights.tolist(), "name": self.name}
