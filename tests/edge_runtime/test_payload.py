"""The update payload: round trip, and every inconsistency refused with a PayloadError."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from edge_runtime.codecs import encode
from edge_runtime.payload import Payload, PayloadError, decode_update, pack, unpack

LAYOUT, LENGTH = "0123456789abcdef", 1000


def make(update: np.ndarray, codec: str = "fp16", **overrides) -> bytes:
    fields = {"codec": codec, "round_id": 7, "model_version": "fedcba9876543210", "layout_hash": LAYOUT, "seed": 3, "length": update.size,
              "body": encode(codec, update, 3)}
    return pack(Payload(**{**fields, **overrides}))


def recrc(data: bytes) -> bytes:
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


@pytest.fixture
def update() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.01, LENGTH).astype(np.float32)


def test_round_trip(update):
    payload, decoded = decode_update(make(update, "uniform8"), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)
    assert (payload.round_id, payload.codec, payload.seed) == (7, "uniform8", 3)
    assert np.abs(decoded - update).max() < 1e-3


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d[:20], "payload truncated"),
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: recrc(d[:4] + bytes([9]) + d[5:]), "format version 9 unsupported"),
        (lambda d: recrc(d[:5] + bytes([99]) + d[6:]), "codec id 99 unknown"),
        (lambda d: d[:-10] + d[-4:], "declares a"),
        (lambda d: d[:50] + bytes([d[50] ^ 1]) + d[51:], "CRC32 mismatch"),
    ],
)
def test_framing_errors(update, corrupt, message):
    with pytest.raises(PayloadError, match=message):
        decode_update(corrupt(make(update)), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)


def test_wrong_layout_and_length(update):
    with pytest.raises(PayloadError, match="weight-layout hash"):
        decode_update(make(update, layout_hash="ffffffffffffffff"), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)
    with pytest.raises(PayloadError, match="update length 999 does not match the model's 1000"):
        decode_update(make(update[:999]), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)


def test_non_finite_and_oversized_updates(update):
    poisoned = update.copy()
    poisoned[5] = np.nan
    with pytest.raises(PayloadError, match="1 NaN/Inf values"):
        decode_update(make(poisoned), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)
    with pytest.raises(PayloadError, match="exceeds the bound"):
        decode_update(make(update * 1000), layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)


def test_random_corruption_never_escapes_as_another_error(update):
    data = make(update, "rotated1bit")
    rng = np.random.default_rng(0)
    for _ in range(300):
        mutated = bytearray(data)
        for position in rng.integers(0, len(data), rng.integers(1, 4)):
            mutated[position] = rng.integers(0, 256)
        cut = bytes(mutated[: rng.integers(0, len(data) + 1)]) if rng.random() < 0.3 else bytes(mutated)
        try:
            decode_update(cut, layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)
        except PayloadError:
            pass


def test_unpack_reads_header_fields(update):
    payload = unpack(make(update, "topk"))
    assert (payload.codec, payload.model_version, payload.length) == ("topk", "fedcba9876543210", LENGTH)
