"""Update compression inside TFF: the codecs of ``edge_runtime/codecs.py`` re-implemented in TF.

The device encodes with numpy; TFF clients cannot run numpy, so the same spec (same
counter-based randomness, same block rotation, same quantization grid) is written here in
TF and applied as an aggregation stage: each client's update goes through
decode(encode(.)) before the weighted mean, which is exactly what the server would sum.
``tests/simulation/test_compression.py`` proves that both implementations decode a
payload to the same vector. Top-k runs without error feedback here (TFF clients are
stateless in this simulation); the device keeps its residual.
"""
from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from edge_runtime.codecs import CODECS, DITHER_STREAM, ROTATION_BLOCK, SIGN_STREAM, UNIFORM_BITS, topk_count

_U64 = tf.uint64


def counter_uniform(seed: tf.Tensor, stream: int, n: int) -> tf.Tensor:
    """TF twin of edge_runtime.codecs.counter_uniform: float64[n] in [0, 1)."""
    base = tf.cast(seed, _U64) * tf.constant(0x9E3779B97F4A7C15, _U64) + tf.constant((stream * 0xD1B54A32D192ED03) % 2**64, _U64)
    x = tf.cast(tf.range(n, dtype=tf.int64), _U64) + base
    z = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(30, _U64))) * tf.constant(0xBF58476D1CE4E5B9, _U64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(27, _U64))) * tf.constant(0x94D049BB133111EB, _U64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, _U64)))
    return tf.cast(tf.bitwise.right_shift(z, tf.constant(11, _U64)), tf.float64) * 2.0**-53


def walsh_hadamard(x: tf.Tensor) -> tf.Tensor:
    """Orthonormal fast Walsh-Hadamard transform of float64[blocks, n], n a power of 2."""
    n = x.shape[-1]
    h = 1
    while h < n:
        y = tf.reshape(x, [-1, n // (2 * h), 2, h])
        x = tf.reshape(tf.concat([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=-1), [-1, n])
        h *= 2
    return x / tf.sqrt(tf.constant(float(n), tf.float64))


def rotation_signs(seed: tf.Tensor, blocks: int) -> tf.Tensor:
    uniform = counter_uniform(seed, SIGN_STREAM, blocks * ROTATION_BLOCK)
    return tf.reshape(tf.where(uniform < 0.5, tf.constant(-1.0, tf.float64), tf.constant(1.0, tf.float64)), [blocks, ROTATION_BLOCK])


def rotated_encode(x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(scale float32[blocks], positive bool[blocks, 512]): what the 1-bit body carries."""
    n = x.shape[0]
    blocks = -(-n // ROTATION_BLOCK)
    padded = tf.reshape(tf.pad(tf.cast(x, tf.float64), [[0, blocks * ROTATION_BLOCK - n]]), [blocks, ROTATION_BLOCK])
    rotated = walsh_hadamard(padded * rotation_signs(seed, blocks))
    l1 = tf.reduce_sum(tf.abs(rotated), axis=1)
    scale = tf.math.divide_no_nan(tf.reduce_sum(padded**2, axis=1), l1)
    return tf.cast(scale, tf.float32), rotated >= 0


def rotated_decode(scale: tf.Tensor, positive: tf.Tensor, seed: tf.Tensor, n: int) -> tf.Tensor:
    blocks = positive.shape[0]
    rotated = tf.where(positive, tf.constant(1.0, tf.float64), tf.constant(-1.0, tf.float64)) * tf.cast(scale, tf.float64)[:, None]
    return tf.cast(tf.reshape(walsh_hadamard(rotated) * rotation_signs(seed, blocks), [-1])[:n], tf.float32)


def uniform_roundtrip(x: tf.Tensor, seed: tf.Tensor, bits: int) -> tf.Tensor:
    levels = float(2**bits - 1)
    low, high = tf.cast(tf.reduce_min(x), tf.float32), tf.cast(tf.reduce_max(x), tf.float32)
    span = tf.where(high > low, high - low, 1.0)
    low64, span64 = tf.cast(low, tf.float64), tf.cast(span, tf.float64)
    scaled = (tf.cast(x, tf.float64) - low64) / span64 * levels
    q = tf.minimum(tf.floor(scaled + counter_uniform(seed, DITHER_STREAM, x.shape[0])), levels)
    return tf.cast(low64 + q * span64 / levels, tf.float32)


def topk_roundtrip(x: tf.Tensor) -> tf.Tensor:
    _, index = tf.math.top_k(tf.abs(x), k=topk_count(x.shape[0]))
    values = tf.cast(tf.cast(tf.gather(x, index), tf.float16), tf.float32)
    return tf.scatter_nd(index[:, None], values, [x.shape[0]])


def roundtrip(codec: str, x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """decode(encode(x)) for float32[n] x: what the server receives from this client."""
    if codec == "fp16":
        return tf.cast(tf.cast(x, tf.float16), tf.float32)
    if codec in UNIFORM_BITS:
        return uniform_roundtrip(x, seed, UNIFORM_BITS[codec])
    if codec == "topk":
        return topk_roundtrip(x)
    if codec == "rotated1bit":
        scale, positive = rotated_encode(x, seed)
        return rotated_decode(scale, positive, seed, x.shape[0])
    raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")


def round_counter():
    """(start, increment): the int64 round counter a stage keeps at the server to seed codecs."""

    @tff.tensorflow.computation
    def start():
        return tf.constant(0, tf.int64)

    @tff.tensorflow.computation(tf.int64)
    def increment(round_index):
        return round_index + 1

    return start, increment


def client_roundtrip(codec: str, flat: tf.Tensor, round_index: tf.Tensor) -> tf.Tensor:
    """What the server decodes from one client's flat update in round ``round_index``.

    The seed mixes the round with a fingerprint of the update itself, so clients draw
    different randomness without knowing their ids.
    """
    fingerprint = tf.bitcast(tf.reduce_sum(tf.abs(flat)), tf.int32)
    return roundtrip(codec, flat, round_index * 1_000_003 + tf.cast(fingerprint, tf.int64))


class CompressedMeanFactory(tff.aggregators.WeightedAggregationFactory):
    """Weighted mean of client updates after each passes through a codec.

    Aggregator state: the round counter (int64@SERVER), broadcast so each round draws new
    randomness (see ``client_roundtrip``).
    """

    def __init__(self, codec: str, inner: tff.aggregators.WeightedAggregationFactory | None = None):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
        self._codec = codec
        self._inner = inner or tff.aggregators.MeanFactory()

    def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
        inner = self._inner.create(value_type, weight_type)
        codec = self._codec

        @tff.tensorflow.computation(value_type, tf.int64)
        def compress(value, round_index):
            leaves = tf.nest.flatten(value)
            flat = tf.concat([tf.reshape(leaf, [-1]) for leaf in leaves], axis=0)
            decoded = client_roundtrip(codec, flat, round_index)
            sizes = [leaf.shape.num_elements() for leaf in leaves]
            parts = [tf.reshape(p, leaf.shape) for p, leaf in zip(tf.split(decoded, sizes), leaves)]
            return tf.nest.pack_sequence_as(value, parts)

        first_round, increment = round_counter()

        @tff.federated_computation()
        def initialize():
            return tff.federated_zip((tff.federated_eval(first_round, tff.SERVER), inner.initialize()))

        state_type = initialize.type_signature.result

        @tff.federated_computation(state_type, tff.FederatedType(value_type, tff.CLIENTS), tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
            round_index, inner_state = state
            compressed = tff.federated_map(compress, (value, tff.federated_broadcast(round_index)))
            output = inner.next(inner_state, compressed, weight)
            next_round = tff.federated_map(increment, round_index)
            return tff.templates.MeasuredProcessOutput(
                state=tff.federated_zip((next_round, output.state)), result=output.result, measurements=output.measurements,
            )

        return tff.templates.AggregationProcess(initialize, next_fn)
