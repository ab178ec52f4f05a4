"""The TF codecs (simulation) and the numpy codecs (device) are one spec: same payload, same vector."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from edge_runtime import codecs as device
from simulation import compression

LENGTH = 9749


@pytest.fixture
def update() -> np.ndarray:
    return np.random.default_rng(2).normal(0, 0.01, LENGTH).astype(np.float32)


def test_counter_generator_is_bit_identical():
    np.testing.assert_array_equal(compression.counter_uniform(tf.constant(12345, tf.int64), device.SIGN_STREAM, 1000).numpy(), device.counter_uniform(12345, device.SIGN_STREAM, 1000))


def test_tf_decodes_a_device_rotated_payload_to_the_same_vector(update):
    # Prepare: the device's body, parsed into the fields the TF decoder takes
    body = device.encode("rotated1bit", update, seed=77)
    blocks = -(-LENGTH // device.ROTATION_BLOCK)
    scale = np.frombuffer(body[: 4 * blocks], dtype="<f4")
    positive = np.unpackbits(np.frombuffer(body[4 * blocks :], dtype=np.uint8)).reshape(blocks, -1).astype(bool)
    # Execute
    tf_decoded = compression.rotated_decode(tf.constant(scale), tf.constant(positive), tf.constant(77, tf.int64), LENGTH).numpy()
    # Assert: bit-exact, and the TF encoder produces the same fields
    np.testing.assert_array_equal(tf_decoded, device.decode("rotated1bit", body, LENGTH, seed=77))
    tf_scale, tf_positive = compression.rotated_encode(tf.constant(update), tf.constant(77, tf.int64))
    np.testing.assert_array_equal(tf_positive.numpy(), positive)
    np.testing.assert_allclose(tf_scale.numpy(), scale, rtol=1e-6)


@pytest.mark.parametrize("codec", ["fp16", "uniform8", "uniform4", "topk"])
def test_tf_roundtrip_equals_device_decode_of_device_encode(update, codec):
    expected = device.decode(codec, device.encode(codec, update, seed=5), LENGTH, seed=5)
    got = compression.roundtrip(codec, tf.constant(update), tf.constant(5, tf.int64)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="unknown codec 'gzip'"):
        compression.CompressedMeanFactory("gzip")


@pytest.mark.parametrize("codec", [None, *sorted(device.CODECS)])
def test_stragglers_upload_what_their_codec_sends(update, codec):
    # The availability model's upload time uses the bytes a watch really sends for the run's codec
    from edge_runtime.identity import update_key
    from edge_runtime.payload import Payload, pack
    from simulation.runner import upload_bytes

    if codec is None:
        assert upload_bytes(None, LENGTH) == update.nbytes
        return
    sent = pack(Payload(codec, 9, "00" * 8, "00" * 8, 5, LENGTH, device.encode(codec, update, 5)), update_key("w"))
    assert upload_bytes(codec, LENGTH) == len(sent)
    assert upload_bytes("rotated1bit", LENGTH) < update.nbytes / 20
