"""Update compression codecs, numpy only: the device encodes, the server decodes.

Each codec maps a float32[P] model update to bytes and back. Randomness (stochastic
rounding, rotations) comes from a seed carried in the payload header through a
counter-based generator (``counter_uniform``), so the server and the TF implementation in
``simulation/compression.py`` reproduce the device's random choices exactly.

- ``fp16``: half precision, 2 bytes per coordinate, deterministic.
- ``uniform8`` / ``uniform4``: stochastic uniform quantization between the vector's min and
  max (unbiased: E[decode(encode(x))] = x), 1 or 0.5 bytes per coordinate.
- ``topk``: the 1 % largest-magnitude coordinates (index + fp16 value); the rest is kept on
  the device as a residual and added to the next update (error feedback, Stich et al. 2018).
- ``rotated1bit``: DRIVE/EDEN-style (Vargaftik et al. 2021, 2022): random signs then a
  Walsh-Hadamard rotation per block of 512, one sign bit per coordinate plus one fp32 scale
  per block, ||x||^2 / ||Hx||_1, which minimises the block's squared error.
"""
from __future__ import annotations

import numpy as np

ROTATION_BLOCK = 512
TOPK_FRACTION = 0.01


class CodecError(ValueError):
    """A body that does not decode to the declared length."""


SIGN_STREAM = 0x5157
DITHER_STREAM = 0xD17E


def counter_uniform(seed: int, stream: int, n: int) -> np.ndarray:
    """float64[n] in [0, 1): splitmix64 of (seed, stream, i), the codecs' only randomness.

    A counter-based generator, not numpy's, so that the TF implementation
    (``simulation/compression.py``) draws the very same numbers from the same seed.
    """
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) % 2**64)
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def walsh_hadamard(x: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform along the last axis (length a power of 2)."""
    n = x.shape[-1]
    y = x.astype(np.float64).reshape(-1, n)
    h = 1
    while h < n:
        y = y.reshape(y.shape[0], n // (2 * h), 2, h)
        y = np.concatenate([y[:, :, 0] + y[:, :, 1], y[:, :, 0] - y[:, :, 1]], axis=-1).reshape(-1, n)
        h *= 2
    return (y / np.sqrt(n)).reshape(x.shape)


def _fp16_encode(x: np.ndarray, seed: int) -> bytes:
    return x.astype("<f2").tobytes()


def _fp16_decode(body: bytes, length: int, seed: int) -> np.ndarray:
    _expect(body, 2 * length)
    return np.frombuffer(body, dtype="<f2").astype(np.float32)


def stochastic_levels(x: np.ndarray, *, low: float, span: float, levels: int, seed: int) -> np.ndarray:
    """int64[n] in [0, levels]: x in [low, low + span] mapped onto ``levels`` steps, rounded up
    with probability equal to the remainder (dither from ``seed``), so the expectation is exact."""
    scaled = (x.astype(np.float64) - low) / span * levels
    return np.clip(np.floor(scaled + counter_uniform(seed, DITHER_STREAM, x.size)), 0, levels).astype(np.int64)


def _uniform_encode(bits: int):
    levels = 2**bits - 1

    def encode(x: np.ndarray, seed: int) -> bytes:
        low, high = float(x.min()), float(x.max())
        span = high - low if high > low else 1.0
        q = stochastic_levels(x, low=low, span=span, levels=levels, seed=seed).astype(np.uint8)
        if bits == 4:
            q = np.pad(q, (0, q.size % 2))
            q = (q[0::2] | (q[1::2] << 4)).astype(np.uint8)
        return np.array([low, span], dtype="<f4").tobytes() + q.tobytes()

    return encode


def _uniform_decode(bits: int):
    levels = 2**bits - 1

    def decode(body: bytes, length: int, seed: int) -> np.ndarray:
        packed = length if bits == 8 else (length + 1) // 2
        _expect(body, 8 + packed)
        low, span = np.frombuffer(body[:8], dtype="<f4").astype(np.float64)
        q = np.frombuffer(body[8:], dtype=np.uint8)
        if bits == 4:
            q = np.stack([q & 0x0F, q >> 4], axis=1).ravel()[:length]
        return (low + q.astype(np.float64) * span / levels).astype(np.float32)

    return decode


def topk_count(length: int) -> int:
    return max(1, int(np.ceil(TOPK_FRACTION * length)))


def _topk_encode(x: np.ndarray, seed: int) -> bytes:
    k = topk_count(x.size)
    index = np.sort(np.argpartition(-np.abs(x), k - 1)[:k]).astype("<u4")
    return index.tobytes() + x[index].astype("<f2").tobytes()


def _topk_decode(body: bytes, length: int, seed: int) -> np.ndarray:
    k = topk_count(length)
    _expect(body, 6 * k)
    index = np.frombuffer(body[: 4 * k], dtype="<u4")
    if index.size and int(index.max()) >= length:
        raise CodecError(f"top-k index {int(index.max())} outside the update of length {length}")
    out = np.zeros(length, dtype=np.float32)
    out[index] = np.frombuffer(body[4 * k :], dtype="<f2").astype(np.float32)
    return out


def _rotation(length: int, seed: int) -> tuple[int, np.ndarray]:
    blocks = -(-length // ROTATION_BLOCK)
    signs = np.where(counter_uniform(seed, SIGN_STREAM, blocks * ROTATION_BLOCK) < 0.5, -1.0, 1.0).reshape(blocks, ROTATION_BLOCK)
    return blocks, signs


def _rotated_encode(x: np.ndarray, seed: int) -> bytes:
    blocks, signs = _rotation(x.size, seed)
    padded = np.zeros(blocks * ROTATION_BLOCK)
    padded[: x.size] = x
    rotated = walsh_hadamard(padded.reshape(blocks, ROTATION_BLOCK) * signs)
    l1 = np.abs(rotated).sum(axis=1)
    scale = np.divide((padded.reshape(blocks, ROTATION_BLOCK) ** 2).sum(axis=1), l1, out=np.zeros(blocks), where=l1 > 0)
    return scale.astype("<f4").tobytes() + np.packbits(rotated.ravel() >= 0).tobytes()


def _rotated_decode(body: bytes, length: int, seed: int) -> np.ndarray:
    blocks, signs = _rotation(length, seed)
    _expect(body, 4 * blocks + blocks * ROTATION_BLOCK // 8)
    scale = np.frombuffer(body[: 4 * blocks], dtype="<f4").astype(np.float64)
    bits = np.unpackbits(np.frombuffer(body[4 * blocks :], dtype=np.uint8)).reshape(blocks, ROTATION_BLOCK)
    rotated = np.where(bits == 1, 1.0, -1.0) * scale[:, None]
    return (walsh_hadamard(rotated) * signs).ravel()[:length].astype(np.float32)


def _expect(body: bytes, size: int) -> None:
    if len(body) != size:
        raise CodecError(f"body is {len(body)} bytes, the codec needs {size}")


UNIFORM_BITS: dict[str, int] = {"uniform8": 8, "uniform4": 4}
"""Bits per coordinate of the uniform codecs: 2**bits - 1 levels between min and max."""

CODECS: dict[str, tuple] = {
    "fp16": (_fp16_encode, _fp16_decode),
    **{name: (_uniform_encode(bits), _uniform_decode(bits)) for name, bits in UNIFORM_BITS.items()},
    "topk": (_topk_encode, _topk_decode),
    "rotated1bit": (_rotated_encode, _rotated_decode),
}
CODEC_IDS: dict[str, int] = {name: i + 1 for i, name in enumerate(CODECS)}
"""Wire identifiers: append new codecs, never renumber."""


def encode(codec: str, update: np.ndarray, seed: int) -> bytes:
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    return CODECS[codec][0](np.asarray(update, dtype=np.float32).ravel(), seed)


def decode(codec: str, body: bytes, length: int, seed: int) -> np.ndarray:
    if codec not in CODECS:
        raise CodecError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    return CODECS[codec][1](body, length, seed)


class ErrorFeedback:
    """Device-side residual for biased codecs (top-k): what was not sent is sent later."""

    def __init__(self, length: int):
        self.residual = np.zeros(length, dtype=np.float32)

    def encode(self, codec: str, update: np.ndarray, seed: int) -> bytes:
        corrected = update.astype(np.float32) + self.residual
        body = encode(codec, corrected, seed)
        self.residual = corrected - decode(codec, body, corrected.size, seed)
        return body
