"""K watches' classifiers in one grouped computation give each watch's Keras logits."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from models.beat_classifier import build_beat_classifier
from models.edge_trainable import weight_layout
from models.stacked_classifier import stacked_logits


def test_stacked_logits_equal_each_watchs_keras_model():
    # Prepare: three watches with different weights and different beats
    models = [build_beat_classifier(seed=s) for s in (0, 10, 20)]
    names = [name for name, _ in weight_layout(models[0])]
    stacked = {name: tf.constant(np.stack(ws)) for name, *ws in zip(names, *(m.get_weights() for m in models))}
    rng = np.random.default_rng(0)
    beat = rng.normal(size=(3, 7, 88, 2)).astype(np.float32)
    log_rr = rng.normal(size=(3, 7, 8)).astype(np.float32)
    # Execute
    logits = stacked_logits(stacked, tf.constant(beat), tf.constant(log_rr)).numpy()
    # Assert
    for k, model in enumerate(models):
        np.testing.assert_allclose(logits[k], model((beat[k], log_rr[k])).numpy(), atol=2e-5)
    assert np.abs(logits[0] - logits[1]).max() > 1e-2  # the watches really have their own weights


def test_stacked_gradients_equal_keras_gradients():
    models = [build_beat_classifier(seed=s) for s in (1, 2)]
    names = [name for name, _ in weight_layout(models[0])]
    stacked = [tf.constant(np.stack(ws)) for ws in zip(*(m.get_weights() for m in models))]
    rng = np.random.default_rng(1)
    beat = rng.normal(size=(2, 5, 88, 2)).astype(np.float32)
    log_rr = rng.normal(size=(2, 5, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=(2, 5))
    with tf.GradientTape() as tape:
        tape.watch(stacked)
        logits = stacked_logits(dict(zip(names, stacked)), tf.constant(beat), tf.constant(log_rr))
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    grads = tape.gradient(loss, stacked)
    for k, model in enumerate(models):
        with tf.GradientTape() as tape:
            keras_loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels[k], logits=model((beat[k], log_rr[k]))))
        for stacked_grad, keras_grad in zip(grads, tape.gradient(keras_loss, model.trainable_weights)):
            np.testing.assert_allclose(stacked_grad.numpy()[k], keras_grad.numpy(), atol=1e-4)
