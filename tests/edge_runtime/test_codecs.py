"""Update codecs: sizes, error, unbiasedness, error feedback."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.codecs import CODECS, CodecError, ErrorFeedback, decode, encode, topk_count, walsh_hadamard

LENGTH = 9749  # the beat classifier's parameter count


@pytest.fixture
def update() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.01, LENGTH).astype(np.float32)


def nmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum((x - y) ** 2) / np.sum(x**2))


@pytest.mark.parametrize(
    "codec, max_bytes, max_nmse",
    [("fp16", 2 * LENGTH, 1e-6), ("uniform8", LENGTH + 8, 1e-3), ("uniform4", LENGTH // 2 + 9, 0.07), ("rotated1bit", -(-LENGTH // 512) * (512 // 8 + 4), 0.6)],
)
def test_size_and_error(update, codec, max_bytes, max_nmse):
    body = encode(codec, update, seed=5)
    assert len(body) <= max_bytes
    assert nmse(update, decode(codec, body, LENGTH, seed=5)) < max_nmse


def test_rotated_one_bit_is_unbiased_over_seeds(update):
    # Each decode is noisy (nmse up to 0.6) but the server averages many: the mean must be the update
    mean = np.mean([decode("rotated1bit", encode("rotated1bit", update, seed=s), LENGTH, seed=s) for s in range(300)], axis=0)
    assert nmse(update, mean) < 0.01


def test_walsh_hadamard_is_orthonormal_and_self_inverse():
    x = np.random.default_rng(1).normal(size=(3, 512))
    y = walsh_hadamard(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1))
    np.testing.assert_allclose(walsh_hadamard(y), x, atol=1e-12)


@pytest.mark.parametrize("codec", ["uniform8", "uniform4"])
def test_stochastic_quantization_is_unbiased(update, codec):
    mean = np.mean([decode(codec, encode(codec, update, seed=s), LENGTH, seed=s) for s in range(400)], axis=0)
    step = (update.max() - update.min()) / (2 ** int(codec[-1]) - 1)
    assert np.abs(mean - update).max() < 0.25 * step


def test_same_seed_same_bytes_for_stochastic_codecs(update):
    assert encode("uniform4", update, seed=3) == encode("uniform4", update, seed=3)
    assert encode("uniform4", update, seed=3) != encode("uniform4", update, seed=4)


def test_topk_error_feedback_sends_everything_eventually(update):
    # The same update every round: with feedback the average of what was sent approaches it;
    # without, top-k sends the same coordinates forever and most of the update never arrives
    rounds = 200  # top-k sends 1 % of coordinates a round
    feedback = ErrorFeedback(LENGTH)
    with_feedback, without = np.zeros(LENGTH), np.zeros(LENGTH)
    for seed in range(rounds):
        body = feedback.encode("topk", update, seed)
        assert len(body) == 6 * topk_count(LENGTH)
        with_feedback += decode("topk", body, LENGTH, seed) / rounds
        without += decode("topk", encode("topk", update, seed), LENGTH, seed) / rounds
    assert nmse(update, with_feedback) < 0.1
    assert nmse(update, without) > 0.5
    assert np.linalg.norm(feedback.residual) < 60 * np.linalg.norm(update)  # bounded: it levels off near 45x at k = 1 %


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_wrong_body_size_is_a_codec_error(update, codec):
    body = encode(codec, update, seed=0)
    with pytest.raises(CodecError, match="body is"):
        decode(codec, body[:-1], LENGTH, seed=0)


def test_unknown_codec():
    with pytest.raises(CodecError, match="unknown codec 'zip'"):
        encode("zip", np.zeros(3), seed=0)
