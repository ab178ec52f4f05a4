"""The beat classifier's size, its edge-trainable layer set, and the class-weighted loss."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from models.beat_classifier import MAX_PARAMETERS, MAX_WEIGHT_RATIO, WeightedCrossEntropy, build_beat_classifier, class_weights

EDGE_TRAINABLE = {"InputLayer", "Conv1D", "MaxPooling1D", "GlobalAveragePooling1D", "Dense", "Concatenate"}


@pytest.mark.parametrize("width", [1, 2])  # 2: the ablation's wider model must fit the same budget
def test_fits_a_watch_and_uses_only_edge_trainable_layers(width: int):
    model = build_beat_classifier(width=width)
    assert model.count_params() <= MAX_PARAMETERS
    assert {type(layer).__name__ for layer in model.layers} <= EDGE_TRAINABLE
    assert model.output_shape == (None, 5)


def test_same_seed_same_initial_weights():
    a, b, c = build_beat_classifier(seed=1), build_beat_classifier(seed=1), build_beat_classifier(seed=2)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_class_weights_favour_rare_classes_and_skip_absent_ones():
    labels = np.array([0] * 900 + [1] * 25 + [2] * 75)
    weights = class_weights(labels)
    assert weights[1] > weights[2] > weights[0] > 0
    assert weights[3] == weights[4] == 0
    assert np.mean(weights[labels]) == pytest.approx(1.0)  # effective learning rate unchanged
    assert weights[1] / weights[0] == pytest.approx(np.sqrt(900 / 25))


def test_a_handful_of_beats_of_a_class_cannot_weigh_more_than_ten_n_beats():
    # DS1's 8 Q beats among 50k: 79x an N beat uncapped at power 0.5
    labels = np.array([0] * 45_000 + [1] * 900 + [2] * 3_800 + [4] * 8)
    weights = class_weights(labels)
    assert weights[4] / weights[0] == pytest.approx(MAX_WEIGHT_RATIO)
    assert weights[2] / weights[0] == pytest.approx(np.sqrt(45_000 / 3_800), rel=1e-5)  # below the cap: unchanged
    assert np.mean(weights[labels]) == pytest.approx(1.0)


def test_weighted_loss_is_the_weighted_mean_of_cross_entropy():
    logits = tf.constant([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]])
    labels = tf.constant([0, 1])
    weights = np.array([1.0, 3.0, 1.0, 1.0, 1.0], np.float32)
    plain = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy()
    assert float(WeightedCrossEntropy(weights)(labels, logits)) == pytest.approx((plain[0] + 3 * plain[1]) / 2, rel=1e-6)
