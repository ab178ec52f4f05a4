"""K copies of the beat classifier evaluated at once, each with its own weights.

The client-vectorised simulation (pfl-research style) trains many watches' local models in
one computation: every weight carries a leading watch axis ``K``, so K watches x B beats run
as one large op instead of K small ones. The layers are those of
``models.beat_classifier.build_beat_classifier`` (Conv1D 'same', ReLU, max-pool 2, global
average pool, dense); ``tests/models/test_stacked_classifier.py`` proves the logits and
gradients equal Keras's per watch.

Every op here has its gradient in every TensorFlow CPU kernel set. TF's default (Eigen)
kernels, which run wherever oneDNN is off (CPUs without AVX-512 VNNI/AMX, ARM, or
``TF_ENABLE_ONEDNN_OPTS=0``), have no gradient for grouped convolutions, so:

- the first convolution (one input channel per watch) is a depthwise convolution with a
  channel multiplier, whose gradients exist everywhere;
- the others are one grouped convolution forward with a custom gradient: the input
  gradient is the grouped convolution of the output gradient with the flipped, transposed
  filters, the filter gradient one batched matmul per tap over the watch axis.

Measured on a 2-core EPYC, K = 100 watches x 32 beats, the three convolutions forward and
backward: 106 ms on default kernels (im2col + batched matmul: 319 ms) and 59 ms with oneDNN
(TF's own grouped gradient, oneDNN only: 46 ms).
"""
from __future__ import annotations

import tensorflow as tf

from models.edge_trainable import CONVOLUTIONS

StackedWeights = dict[str, tf.Tensor]
"""Layer weight name (``conv1/kernel``, ...) -> tensor with a leading watch axis [K, ...]."""


def _grouped_filters(kernel: tf.Tensor) -> tf.Tensor:
    """kernel [K, taps, C, out] -> conv2d filters [1, taps, C, K*out] (K groups, watch-major)."""
    k, taps, channels, out = tf.shape(kernel)[0], kernel.shape[1], kernel.shape[2], kernel.shape[3]
    return tf.reshape(tf.transpose(kernel, [1, 2, 0, 3]), [1, taps, channels, k * out])


def _filter_gradient(x: tf.Tensor, dy: tf.Tensor, *, taps: int, channels: int, out: int) -> tf.Tensor:
    """x [B, 1, L, K*C], dy [B, 1, L, K*out] -> d kernel [K, taps, C, out] for a 'same' convolution.

    d kernel[k, t] = sum over beats and positions of x[.., l + t - pad, k] outer dy[.., l, k]:
    one batched matmul (batch = watch) per tap on the zero-padded, watch-major input.
    """
    b, length = tf.shape(x)[0], x.shape[2]
    k = tf.shape(dy)[3] // out
    pad = (taps - 1) // 2
    by_watch = tf.transpose(tf.reshape(x, [b, length, k, channels]), [2, 0, 1, 3])
    by_watch = tf.pad(by_watch, [[0, 0], [0, 0], [pad, taps - 1 - pad], [0, 0]])
    dy_by_watch = tf.transpose(tf.reshape(dy, [b * length, k, out]), [1, 0, 2])
    return tf.stack([
        tf.matmul(tf.reshape(by_watch[:, :, t:t + length], [k, b * length, channels]), dy_by_watch, transpose_a=True)
        for t in range(taps)
    ], axis=1)


@tf.custom_gradient
def _grouped_same_conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """x [B, 1, L, K*C] (watch-major channels), kernel [K, taps, C, out] -> [B, 1, L, K*out]."""
    taps, channels, out = kernel.shape[1], kernel.shape[2], kernel.shape[3]
    y = tf.nn.conv2d(x, _grouped_filters(kernel), strides=1, padding="SAME")

    def gradient(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        flipped = tf.transpose(tf.reverse(kernel, [1]), [0, 1, 3, 2])  # [K, taps, out, C]
        dx = tf.nn.conv2d(dy, _grouped_filters(flipped), strides=1, padding="SAME")
        return dx, _filter_gradient(x, dy, taps=taps, channels=channels, out=out)

    return y, gradient


def _same_conv(x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """x [B, 1, L, K*C], kernel [K, taps, C, out], bias [K, out] -> [B, 1, L, K*out], each watch its own filter."""
    if kernel.shape[2] == 1:  # one channel per watch: a depthwise convolution with channel multiplier ``out``
        y = tf.nn.depthwise_conv2d(x, tf.transpose(kernel[:, :, 0, :], [1, 0, 2])[None], [1, 1, 1, 1], "SAME")
    else:
        y = _grouped_same_conv(x, kernel)
    return y + tf.reshape(bias, [-1])


def _dense(x: tf.Tensor, weights: StackedWeights, name: str) -> tf.Tensor:
    """x [K, B, in] -> [K, B, out] with each watch's own kernel."""
    return tf.matmul(x, weights[f"{name}/kernel"]) + weights[f"{name}/bias"][:, None, :]


def stacked_logits(weights: StackedWeights, beat: tf.Tensor, log_rr: tf.Tensor) -> tf.Tensor:
    """beat float32[K, B, window, C], log_rr float32[K, B, 8] -> logits float32[K, B, classes]."""
    k, b, window, channels = tf.shape(beat)[0], tf.shape(beat)[1], beat.shape[2], beat.shape[3]
    x = tf.reshape(tf.transpose(beat, [1, 2, 0, 3]), [b, 1, window, k * channels])  # watch-major channels
    for i, (name, _) in enumerate(CONVOLUTIONS):
        x = tf.nn.relu(_same_conv(x, weights[f"{name}/kernel"], weights[f"{name}/bias"]))
        if i < len(CONVOLUTIONS) - 1:
            x = tf.nn.max_pool2d(x, [1, 2], [1, 2], "VALID")
    channels = weights[f"{CONVOLUTIONS[-1][0]}/bias"].shape[-1]
    pooled = tf.transpose(tf.reshape(tf.reduce_mean(x, axis=[1, 2]), [b, k, channels]), [1, 0, 2])
    rr = tf.nn.relu(_dense(log_rr, weights, "rr_dense"))
    hidden = tf.nn.relu(_dense(tf.concat([pooled, rr], axis=-1), weights, "hidden"))
    return _dense(hidden, weights, "logits")
