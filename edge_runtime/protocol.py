"""The coordinator protocol's messages (``coordinator.proto``) in protobuf wire format, by hand.

A watch has grpcio but no protobuf runtime, so the few message types are encoded here:
each dataclass lists ``(field number, kind)`` per attribute, where kind is one of
``string``, ``bytes``, ``uint`` (varint), ``bool``, ``double`` (fixed64), ``repeated string``
or a ``Message`` class (a repeated sub-message; the attribute is a tuple). Unknown fields
are skipped, as protobuf does, so old devices keep working when fields are added. The
device's token travels in the call metadata (``identity.bearer_metadata``), not in a message,
so the coordinator authenticates a call before it parses the request.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import ClassVar, TypeVar

SERVICE = "fedbeat.Coordinator"
WAIT, TASK, DONE = 0, 1, 2

_VARINT, _FIXED64, _LENGTH = 0, 1, 2
_WIRE_TYPE = {"uint": _VARINT, "bool": _VARINT, "double": _FIXED64, "string": _LENGTH, "bytes": _LENGTH}
_DEFAULT = {"uint": 0, "bool": False, "double": 0.0, "string": "", "bytes": b""}


class ProtocolError(ValueError):
    """Bytes that are not a valid message of the expected type."""


def _varint(value: int) -> bytes:
    if not 0 <= value < 1 << 64:
        raise ProtocolError(f"varint out of range [0, 2^64): {value}")  # a negative int would never end the loop
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtocolError("truncated or overlong varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            if value >= 1 << 64:
                raise ProtocolError("varint out of range (>= 2^64)")
            return value, pos
        shift += 7


M = TypeVar("M", bound="Message")


class Message:
    FIELDS: ClassVar[dict[str, tuple[int, str]]] = {}

    def to_bytes(self) -> bytes:
        out = bytearray()
        for name, (number, kind) in self.FIELDS.items():
            value = getattr(self, name)
            if _repeated(kind):
                for item in value:
                    raw = item.encode() if kind == "repeated string" else item.to_bytes()
                    out += _varint(number << 3 | _LENGTH) + _varint(len(raw)) + raw
                continue
            if value == _DEFAULT[kind]:
                continue  # proto3: defaults are not written
            out += _varint(number << 3 | _WIRE_TYPE[kind])
            if kind in ("uint", "bool"):
                out += _varint(int(value))
            elif kind == "double":
                out += struct.pack("<d", value)
            else:
                raw = value.encode() if kind == "string" else bytes(value)
                out += _varint(len(raw)) + raw
        return bytes(out)

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        by_number = {number: (name, kind) for name, (number, kind) in cls.FIELDS.items()}
        values: dict = {}
        pos = 0
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ProtocolError("field number 0 is invalid")
            if wire == _VARINT:
                raw, pos = _read_varint(data, pos)
            elif wire == _FIXED64:
                if pos + 8 > len(data):
                    raise ProtocolError("truncated fixed64 field")
                raw, pos = data[pos : pos + 8], pos + 8
            elif wire == _LENGTH:
                size, pos = _read_varint(data, pos)
                if pos + size > len(data):
                    raise ProtocolError(f"field {number} declares {size} bytes, {len(data) - pos} left")
                raw, pos = data[pos : pos + size], pos + size
            elif wire == 5:
                if pos + 4 > len(data):
                    raise ProtocolError("truncated fixed32 field")
                raw, pos = data[pos : pos + 4], pos + 4
            else:
                raise ProtocolError(f"unsupported wire type {wire}")
            if number not in by_number:
                continue
            name, kind = by_number[number]
            if (_LENGTH if _repeated(kind) else _WIRE_TYPE[kind]) != wire:
                raise ProtocolError(f"field {name} has wire type {wire}, expected {_LENGTH if _repeated(kind) else _WIRE_TYPE[kind]}")
            if _repeated(kind):
                values.setdefault(name, []).append(_text(raw, name) if kind == "repeated string" else kind.from_bytes(bytes(raw)))
            elif kind == "uint":
                values[name] = raw
            elif kind == "bool":
                values[name] = bool(raw)
            elif kind == "double":
                values[name] = struct.unpack("<d", raw)[0]
            elif kind == "string":
                values[name] = _text(raw, name)
            else:
                values[name] = bytes(raw)
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in values.items()})


def _repeated(kind) -> bool:
    return kind == "repeated string" or isinstance(kind, type)


def _text(raw: bytes, name: str) -> str:
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError as error:
        raise ProtocolError(f"field {name} is not UTF-8") from error


@dataclasses.dataclass(frozen=True)
class CheckInRequest(Message):
    model_version: str = ""
    FIELDS: ClassVar = {"model_version": (2, "string")}


@dataclasses.dataclass(frozen=True)
class CheckInReply(Message):
    status: int = WAIT
    round: int = 0
    model_version: str = ""
    weights_sha256: str = ""
    tflite_sha256: str = ""
    codec: str = ""
    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    retry_after_s: float = 0.0
    deadline_s: float = 0.0
    seed: int = 0
    manifest_json: str = ""
    secure_aggregation: bool = False
    FIELDS: ClassVar = {
        "status": (1, "uint"), "round": (2, "uint"), "model_version": (3, "string"), "weights_sha256": (4, "string"),
        "tflite_sha256": (5, "string"), "codec": (6, "string"), "epochs": (7, "uint"), "batch_size": (8, "uint"),
        "learning_rate": (9, "double"), "retry_after_s": (10, "double"), "deadline_s": (11, "double"), "seed": (12, "uint"),
        "manifest_json": (13, "string"), "secure_aggregation": (14, "bool"),
    }


@dataclasses.dataclass(frozen=True)
class DownloadRequest(Message):
    model_version: str = ""
    include_tflite: bool = False
    FIELDS: ClassVar = {"model_version": (2, "string"), "include_tflite": (3, "bool")}


@dataclasses.dataclass(frozen=True)
class DownloadReply(Message):
    model_version: str = ""
    weights: bytes = b""
    tflite: bytes = b""
    FIELDS: ClassVar = {"model_version": (1, "string"), "weights": (2, "bytes"), "tflite": (3, "bytes")}


@dataclasses.dataclass(frozen=True)
class UploadRequest(Message):
    payload: bytes = b""
    examples: int = 0
    FIELDS: ClassVar = {"payload": (2, "bytes"), "examples": (3, "uint")}


@dataclasses.dataclass(frozen=True)
class UploadReply(Message):
    accepted: bool = False
    reason: str = ""
    FIELDS: ClassVar = {"accepted": (1, "bool"), "reason": (2, "string")}


# -- secure aggregation (edge_runtime/secure_participant.py): four steps after local training.
# A device repeats a step's request (with an empty body once accepted) until ``ready``; a
# ``reason`` ends the round for it (abandoned, or its message refused).
@dataclasses.dataclass(frozen=True)
class StepReply(Message):
    """What every secure-aggregation step answers first: ready, or retry after, or the reason the round is over for the device."""

    ready: bool = False
    retry_after_s: float = 0.0
    reason: str = ""
    FIELDS: ClassVar = {"ready": (1, "bool"), "retry_after_s": (2, "double"), "reason": (3, "string")}


@dataclasses.dataclass(frozen=True)
class Neighbour(Message):
    device: str = ""
    point: int = 0  # the device's Shamir evaluation point (its place in the cohort, from 1)
    cipher_public_key: bytes = b""
    mask_public_key: bytes = b""
    FIELDS: ClassVar = {"device": (1, "string"), "point": (2, "uint"), "cipher_public_key": (3, "bytes"), "mask_public_key": (4, "bytes")}


@dataclasses.dataclass(frozen=True)
class AdvertiseKeysRequest(Message):
    round: int = 0
    cipher_public_key: bytes = b""
    mask_public_key: bytes = b""
    FIELDS: ClassVar = {"round": (1, "uint"), "cipher_public_key": (2, "bytes"), "mask_public_key": (3, "bytes")}


@dataclasses.dataclass(frozen=True)
class AdvertiseKeysReply(StepReply):
    point: int = 0
    threshold: int = 0
    cohort: int = 0
    bits: int = 0
    clip: float = 0.0        # each coordinate clipped to [-clip, clip] before fixed-point coding
    clip_norm: float = 0.0   # the update's L2 norm clipped to this first
    neighbours: tuple = ()
    FIELDS: ClassVar = {
        **StepReply.FIELDS, "point": (4, "uint"), "threshold": (5, "uint"), "cohort": (6, "uint"), "bits": (7, "uint"), "clip": (8, "double"),
        "clip_norm": (9, "double"), "neighbours": (10, Neighbour),
    }


@dataclasses.dataclass(frozen=True)
class SealedShare(Message):
    device: str = ""  # the holder when sent, the owner when delivered
    sealed: bytes = b""
    seed_commitment: bytes = b""
    key_commitment: bytes = b""
    FIELDS: ClassVar = {"device": (1, "string"), "sealed": (2, "bytes"), "seed_commitment": (3, "bytes"), "key_commitment": (4, "bytes")}


@dataclasses.dataclass(frozen=True)
class ShareKeysRequest(Message):
    round: int = 0
    shares: tuple = ()
    FIELDS: ClassVar = {"round": (1, "uint"), "shares": (2, SealedShare)}


@dataclasses.dataclass(frozen=True)
class ShareKeysReply(StepReply):
    shares: tuple = ()
    FIELDS: ClassVar = {**StepReply.FIELDS, "shares": (4, SealedShare)}


@dataclasses.dataclass(frozen=True)
class MaskedInputRequest(Message):
    round: int = 0
    model_version: str = ""
    masked: bytes = b""  # uint32 little-endian, the manifest's layout order
    FIELDS: ClassVar = {"round": (1, "uint"), "model_version": (2, "string"), "masked": (3, "bytes")}


@dataclasses.dataclass(frozen=True)
class MaskedInputReply(StepReply):
    survivors: tuple = ()  # this device's neighbours whose masked input counts
    dropped: tuple = ()    # its neighbours that shared keys but sent no masked input
    FIELDS: ClassVar = {**StepReply.FIELDS, "survivors": (4, "repeated string"), "dropped": (5, "repeated string")}


@dataclasses.dataclass(frozen=True)
class RevealedShare(Message):
    device: str = ""  # whose secret
    secret: str = ""  # "seed" (a survivor's self mask) or "key" (a dropped device's masking key)
    share: bytes = b""
    salt: bytes = b""
    FIELDS: ClassVar = {"device": (1, "string"), "secret": (2, "string"), "share": (3, "bytes"), "salt": (4, "bytes")}


@dataclasses.dataclass(frozen=True)
class UnmaskRequest(Message):
    round: int = 0
    shares: tuple = ()
    FIELDS: ClassVar = {"round": (1, "uint"), "shares": (2, RevealedShare)}


@dataclasses.dataclass(frozen=True)
class UnmaskReply(Message):
    accepted: bool = False
    reason: str = ""
    FIELDS: ClassVar = {"accepted": (1, "bool"), "reason": (2, "string")}


METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "CheckIn": (CheckInRequest, CheckInReply),
    "Download": (DownloadRequest, DownloadReply),
    "Upload": (UploadRequest, UploadReply),
    "AdvertiseKeys": (AdvertiseKeysRequest, AdvertiseKeysReply),
    "ShareKeys": (ShareKeysRequest, ShareKeysReply),
    "MaskedInput": (MaskedInputRequest, MaskedInputReply),
    "Unmask": (UnmaskRequest, UnmaskReply),
}
