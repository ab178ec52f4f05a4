"""The update payload: a versioned binary envelope around a codec body, checked on arrival.

Layout (little-endian), 44-byte header, body, HMAC-SHA256 tag of header + body:

    magic "FBUP" | format u8 | codec u8 | reserved u16 | round u32 | model version 8 bytes |
    weight-layout hash 8 bytes | seed u64 | length u32 | body bytes u32 | body | tag 32 bytes

The tag is keyed with the sending device's update key (``identity.update_key``): a payload
cannot be altered, nor replayed under another device's name, by anyone without that key, and
it is checked before the body is decoded. The server refuses anything inconsistent with a
``PayloadError`` naming the field and value, and never lets a payload crash it: decoded
updates must be finite and within a norm bound.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct

import numpy as np

from edge_runtime.codecs import CODEC_IDS, CodecError, decode

MAGIC = b"FBUP"
FORMAT_VERSION = 2
_HEADER = struct.Struct("<4sBBHI8s8sQII")
TAG_BYTES = 32
MAX_UPDATE_NORM = 20.0
"""The default bound on an update's L2 norm, for the coordinator and the simulation alike: about
twice the largest honest first-round update measured on MIT-BIH (22 DS1 patients x {400, 2,000}
beats, 3 epochs at lr 0.2: median 2.5, p99 8.2, max 10.6)."""


class PayloadError(ValueError):
    """A payload the server must refuse; the message names the field and the offending value."""


@dataclasses.dataclass(frozen=True)
class Payload:
    codec: str
    round_id: int
    model_version: str
    layout_hash: str
    seed: int
    length: int
    body: bytes


def _tag(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()


def pack(payload: Payload, key: bytes) -> bytes:
    """Header, body and the HMAC tag under the device's update key."""
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, CODEC_IDS[payload.codec], 0, payload.round_id, bytes.fromhex(payload.model_version),
        bytes.fromhex(payload.layout_hash), payload.seed, payload.length, len(payload.body),
    )
    return header + payload.body + _tag(key, header + payload.body)


def unpack(data: bytes, key: bytes) -> Payload:
    """Parse and check framing (magic, format, codec, sizes) and the tag; no decoding yet."""
    if len(data) < _HEADER.size + TAG_BYTES:
        raise PayloadError(f"payload truncated: {len(data)} bytes, header alone needs {_HEADER.size + TAG_BYTES}")
    magic, version, codec_id, _, round_id, model, layout, seed, length, body_size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError(f"magic {magic!r} is not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise PayloadError(f"format version {version} unsupported (expected {FORMAT_VERSION})")
    codecs = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in codecs:
        raise PayloadError(f"codec id {codec_id} unknown")
    if len(data) != _HEADER.size + body_size + TAG_BYTES:
        raise PayloadError(f"payload is {len(data)} bytes but its header declares a {body_size}-byte body")
    if not hmac.compare_digest(data[-TAG_BYTES:], _tag(key, data[:-TAG_BYTES])):
        raise PayloadError("authentication tag mismatch: payload altered, corrupted or not signed by this device")
    return Payload(codecs[codec_id], round_id, model.hex(), layout.hex(), seed, length, data[_HEADER.size : -TAG_BYTES])


def decode_update(data: bytes, *, key: bytes, layout_hash: str, length: int, max_norm: float) -> tuple[Payload, np.ndarray]:
    """Unpack (tag checked with the sender's key), check against the server's model (layout,
    length) and decode to float32[length]."""
    payload = unpack(data, key)
    if payload.layout_hash != layout_hash:
        raise PayloadError(f"weight-layout hash {payload.layout_hash} does not match the model's {layout_hash}")
    if payload.length != length:
        raise PayloadError(f"update length {payload.length} does not match the model's {length} parameters")
    try:
        update = decode(payload.codec, payload.body, payload.length, payload.seed)
    except CodecError as error:
        raise PayloadError(f"{payload.codec} body: {error}") from error
    if not np.all(np.isfinite(update)):
        raise PayloadError(f"update has {int((~np.isfinite(update)).sum())} NaN/Inf values")
    norm = float(np.linalg.norm(update))
    if norm > max_norm:
        raise PayloadError(f"update norm {norm:.4g} exceeds the bound {max_norm:.4g}")
    return payload, update
