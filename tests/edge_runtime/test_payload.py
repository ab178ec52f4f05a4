"""The update payload: round trip, authentication, and every inconsistency refused with a PayloadError."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.codecs import encode
from edge_runtime.identity import update_key
from edge_runtime.payload import TAG_BYTES, Payload, PayloadError, _tag, decode_update, pack, unpack

LAYOUT, LENGTH = "0123456789abcdef", 1000
KEY = update_key("device-a")


def make(update: np.ndarray, codec: str = "fp16", key: bytes = KEY, **overrides) -> bytes:
    fields = {"codec": codec, "round_id": 7, "model_version": "fedcba9876543210", "layout_hash": LAYOUT, "seed": 3, "length": update.size,
              "body": encode(codec, update, 3)}
    return pack(Payload(**{**fields, **overrides}), key)


def resign(data: bytes, key: bytes = KEY) -> bytes:
    """What only the key holder can do: a valid tag over altered bytes."""
    return data[:-TAG_BYTES] + _tag(key, data[:-TAG_BYTES])


def decode(data: bytes, key: bytes = KEY):
    return decode_update(data, key=key, layout_hash=LAYOUT, length=LENGTH, max_norm=10.0)


@pytest.fixture
def update() -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.01, LENGTH).astype(np.float32)


def test_round_trip(update):
    payload, decoded = decode(make(update, "uniform8"))
    assert (payload.round_id, payload.codec, payload.seed) == (7, "uniform8", 3)
    assert np.abs(decoded - update).max() < 1e-3


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: d[:20], "payload truncated"),
        (lambda d: b"XXXX" + d[4:], "magic"),
        (lambda d: resign(d[:4] + bytes([9]) + d[5:]), "format version 9 unsupported"),
        (lambda d: resign(d[:5] + bytes([99]) + d[6:]), "codec id 99 unknown"),
        (lambda d: d[:-40] + d[-TAG_BYTES:], "declares a"),
        (lambda d: d[:50] + bytes([d[50] ^ 1]) + d[51:], "authentication tag mismatch"),
    ],
)
def test_framing_errors(update, corrupt, message):
    with pytest.raises(PayloadError, match=message):
        decode(corrupt(make(update)))


def test_another_device_cannot_sign_or_rewrite_a_payload(update):
    # A token holder rewrites device a's header seed (a replay under its own seed) and re-signs with its own key
    original = make(update)
    seed_offset = 4 + 1 + 1 + 2 + 4 + 8 + 8
    rewritten = original[:seed_offset] + (12345).to_bytes(8, "little") + original[seed_offset + 8 :]
    for forged in (rewritten, resign(rewritten, update_key("device-b")), resign(original, update_key("device-b"))):
        with pytest.raises(PayloadError, match="authentication tag mismatch"):
            decode(forged)
    # Device b's own payload does not verify under a's key, nor a's under b's
    with pytest.raises(PayloadError, match="authentication tag mismatch"):
        decode(make(update, key=update_key("device-b")))
    with pytest.raises(PayloadError, match="authentication tag mismatch"):
        decode(original, key=update_key("device-b"))


def test_wrong_layout_and_length(update):
    with pytest.raises(PayloadError, match="weight-layout hash"):
        decode(make(update, layout_hash="ffffffffffffffff"))
    with pytest.raises(PayloadError, match="update length 999 does not match the model's 1000"):
        decode(make(update[:999]))


def test_non_finite_and_oversized_updates(update):
    poisoned = update.copy()
    poisoned[5] = np.nan
    with pytest.raises(PayloadError, match="1 NaN/Inf values"):
        decode(make(poisoned))
    with pytest.raises(PayloadError, match="exceeds the bound"):
        decode(make(update * 1000))


@pytest.mark.parametrize("codec", ["rotated1bit", "topk", "uniform8", "fp16"])
def test_signed_random_corruption_reaches_the_codecs_and_never_escapes_as_another_error(update, codec):
    # Mutations re-signed with the device's key get past the tag: the codec decoders see them
    data = make(update, codec)
    rng = np.random.default_rng(0)
    outcomes = {"decoded": 0, "codec": 0, "framing": 0}
    for _ in range(300):
        mutated = bytearray(data[:-TAG_BYTES])
        for position in rng.integers(44, len(mutated), rng.integers(1, 4)):  # the body
            mutated[position] = rng.integers(0, 256)
        try:
            decode(resign(bytes(mutated) + bytes(TAG_BYTES)))
            outcomes["decoded"] += 1
        except PayloadError as error:
            outcomes["codec" if f"{codec} body" in str(error) or "NaN" in str(error) or "exceeds" in str(error) else "framing"] += 1
    assert outcomes["framing"] == 0  # every mutation reached the decoder
    assert outcomes["decoded"] + outcomes["codec"] == 300


def test_unpack_reads_header_fields(update):
    payload = unpack(make(update, "topk"), KEY)
    assert (payload.codec, payload.model_version, payload.length) == ("topk", "fedcba9876543210", LENGTH)
