"""The update payload: a versioned binary envelope around a codec body, checked on arrival.

Layout (little-endian), 44-byte header, body, CRC32 of header + body:

    magic "FBUP" | format u8 | codec u8 | reserved u16 | round u32 | model version 8 bytes |
    weight-layout hash 8 bytes | seed u64 | length u32 | body bytes u32 | body | crc32 u32

The server refuses anything inconsistent with a ``PayloadError`` naming the field and
value, and never lets a payload crash it: decoded updates must be finite and within a norm
bound.
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from edge_runtime.codecs import CODEC_IDS, CodecError, decode

MAGIC = b"FBUP"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBHI8s8sQII")
_CRC = struct.Struct("<I")


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


def pack(payload: Payload) -> bytes:
    header = _HEADER.pack(
        MAGIC, FORMAT_VERSION, CODEC_IDS[payload.codec], 0, payload.round_id, bytes.fromhex(payload.model_version),
        bytes.fromhex(payload.layout_hash), payload.seed, payload.length, len(payload.body),
    )
    return header + payload.body + _CRC.pack(zlib.crc32(header + payload.body))


def unpack(data: bytes) -> Payload:
    """Parse and check framing (magic, format, codec, sizes, CRC); no decoding yet."""
    if len(data) < _HEADER.size + _CRC.size:
        raise PayloadError(f"payload truncated: {len(data)} bytes, header alone needs {_HEADER.size + _CRC.size}")
    magic, version, codec_id, _, round_id, model, layout, seed, length, body_size = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PayloadError(f"magic {magic!r} is not {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise PayloadError(f"format version {version} unsupported (expected {FORMAT_VERSION})")
    codecs = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in codecs:
        raise PayloadError(f"codec id {codec_id} unknown")
    if len(data) != _HEADER.size + body_size + _CRC.size:
        raise PayloadError(f"payload is {len(data)} bytes but its header declares a {body_size}-byte body")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if crc != zlib.crc32(data[: -_CRC.size]):
        raise PayloadError(f"CRC32 mismatch (stored {crc:#010x}): payload corrupted")
    return Payload(codecs[codec_id], round_id, model.hex(), layout.hex(), seed, length, data[_HEADER.size : -_CRC.size])


def decode_update(data: bytes, *, layout_hash: str, length: int, max_norm: float) -> tuple[Payload, np.ndarray]:
    """Unpack, check against the server's model (layout, length) and decode to float32[length]."""
    payload = unpack(data)
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
