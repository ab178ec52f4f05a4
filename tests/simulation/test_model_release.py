"""The released model: the last round's, or the moving average of the rounds' models."""
import numpy as np
import pytest
import tensorflow_federated as tff

from simulation.model_release import ReleasedModel


def weights(value: float) -> tff.learning.models.ModelWeights:
    return tff.learning.models.ModelWeights([np.full((2, 3), value, np.float32), np.full(3, -value, np.float32)], [np.full(1, 2 * value, np.float32)])


def test_decay_zero_releases_exactly_the_last_rounds_model():
    release = ReleasedModel(0.0, weights(0.0))
    latest = tff.learning.models.ModelWeights([np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32), np.ones(3, np.float32)], [np.zeros(1, np.float32)])
    release.update(weights(5.0))
    release.update(latest)
    for got, want in zip(release.released().trainable, latest.trainable):
        assert got.dtype == np.float32 and np.array_equal(got, want)  # bit for bit: the model_sha256 of runs before averaging


def test_the_average_follows_the_recursion_on_every_weight():
    release = ReleasedModel(0.5, weights(0.0))
    for value in (4.0, 8.0):
        release.update(weights(value))
    # 0.5 * (0.5 * 0 + 0.5 * 4) + 0.5 * 8 = 5
    released = release.released()
    assert np.allclose(released.trainable[0], 5.0) and np.allclose(released.trainable[1], -5.0) and np.allclose(released.non_trainable[0], 10.0)


def test_restored_leaves_continue_the_same_average():
    uninterrupted, resumed = ReleasedModel(0.9, weights(0.0)), ReleasedModel(0.9, weights(0.0))
    for value in (1.0, 2.0):
        uninterrupted.update(weights(value))
        resumed.update(weights(value))
    restarted = ReleasedModel(0.9, weights(0.0))
    restarted.restore(resumed.leaves())
    for model in (uninterrupted, restarted):
        model.update(weights(3.0))
    assert all(np.array_equal(a, b) for a, b in zip(uninterrupted.leaves(), restarted.leaves()))


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ValueError, match="release decay"):
        ReleasedModel(decay, weights(0.0))
