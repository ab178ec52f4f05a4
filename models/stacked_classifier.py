"""K copies of the beat classifier evaluated at once, each with its own weights.

The client-vectorised simulation (pfl-research style) trains many watches' local models in
one computation: every weight carries a leading watch axis ``K`` and every layer is a
batched matmul, so K watches x B beats run as one large op instead of K small ones. The
layers are those of ``models.beat_classifier.build_beat_classifier`` (Conv1D 'same' as one
grouped convolution over the K watches, ReLU, max-pool 2, global average pool, dense);
``tests/models/test_stacked_classifier.py`` proves the logits equal Keras's per watch.
"""
from __future__ import annotations

import tensorflow as tf

from models.edge_trainable import CONVOLUTIONS

StackedWeights = dict[str, tf.Tensor]
"""Layer weight name (``conv1/kernel``, ...) -> tensor with a leading watch axis [K, ...]."""


def _grouped_same_conv(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """x [B, 1, L, K*C] (watch-major channels), kernel [K, taps, C, out], bias [K, out] -> [B, 1, L, K*out].

    One grouped convolution (K groups): TF's conv kernels with each watch's own filter,
    several times faster forward and backward than im2col + batched matmul on CPU.
    """
    k, taps, channels, out = tf.shape(kernel)[0], kernel.shape[1], kernel.shape[2], kernel.shape[3]
    filters = tf.reshape(tf.transpose(kernel, [1, 2, 0, 3]), [1, taps, channels, k * out])
    return tf.nn.conv2d(x, filters, strides=1, padding="SAME") + tf.reshape(bias, [-1])


def _dense(x: tf.Tensor, weights: StackedWeights, name: str) -> tf.Tensor:
    """x [K, B, in] -> [K, B, out] with each watch's own kernel."""
    return tf.matmul(x, weights[f"{name}/kernel"]) + weights[f"{name}/bias"][:, None, :]


def stacked_logits(weights: StackedWeights, beat: tf.Tensor, log_rr: tf.Tensor) -> tf.Tensor:
    """beat float32[K, B, window, 1], log_rr float32[K, B, 8] -> logits float32[K, B, classes]."""
    k, b, window = tf.shape(beat)[0], tf.shape(beat)[1], beat.shape[2]
    x = tf.reshape(tf.transpose(beat[..., 0], [1, 2, 0]), [b, 1, window, k])
    for i, (name, _) in enumerate(CONVOLUTIONS):
        x = tf.nn.relu(_grouped_same_conv(x, weights[f"{name}/kernel"], weights[f"{name}/bias"]))
        if i < len(CONVOLUTIONS) - 1:
            x = tf.nn.max_pool2d(x, [1, 2], [1, 2], "VALID")
    channels = weights[f"{CONVOLUTIONS[-1][0]}/bias"].shape[-1]
    pooled = tf.transpose(tf.reshape(tf.reduce_mean(x, axis=[1, 2]), [b, k, channels]), [1, 0, 2])
    rr = tf.nn.relu(_dense(log_rr, weights, "rr_dense"))
    hidden = tf.nn.relu(_dense(tf.concat([pooled, rr], axis=-1), weights, "hidden"))
    return _dense(hidden, weights, "logits")
