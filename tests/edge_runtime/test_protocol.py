"""The hand-written wire format equals protoc's for coordinator.proto, and rejects garbage."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from edge_runtime.protocol import (
    AdvertiseKeysReply, AdvertiseKeysRequest, CheckInReply, CheckInRequest, DownloadReply, MaskedInputReply, MaskedInputRequest, Message,
    Neighbour, ProtocolError, RevealedShare, SealedShare, ShareKeysReply, ShareKeysRequest, UnmaskReply, UnmaskRequest, UploadReply, UploadRequest,
)
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """coordinator_pb2 compiled by grpc_tools.protoc at test time."""
    out = tmp_path_factory.mktemp("pb2")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{REPO_ROOT / 'edge_runtime'}", f"--python_out={out}", "coordinator.proto"], check=True,
    )
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("coordinator_pb2")
    finally:
        sys.path.remove(str(out))


MESSAGES = [
    CheckInRequest(model_version="00ff00ff00ff00ff"),
    CheckInReply(status=1, round=7, model_version="ab" * 8, codec="rotated1bit", epochs=3, batch_size=32, learning_rate=0.2, deadline_s=12.5, seed=2**62 + 5, manifest_json='{"a": 1}'),
    DownloadReply(model_version="cd" * 8, weights=bytes(range(256)) * 3, tflite=b"\x00\x01"),
    UploadRequest(payload=b"FBUP" + bytes(100), examples=750),
    UploadReply(accepted=False, reason="stale round: payload for round 1"),
    CheckInReply(status=1, round=2, secure_aggregation=True),
    AdvertiseKeysRequest(round=3, cipher_public_key=bytes(range(32)), mask_public_key=bytes(range(32, 64))),
    AdvertiseKeysReply(
        ready=True, point=2, threshold=3, cohort=5, bits=16, clip=1.0, clip_norm=20.0,
        neighbours=(Neighbour("a" * 16, 1, b"\x01" * 32, b"\x02" * 32), Neighbour("b" * 16, 3, b"\x03" * 32, b"\x04" * 32)),
    ),
    ShareKeysRequest(round=3, shares=(SealedShare("a" * 16, b"s" * 192, b"c" * 32, b"k" * 32), SealedShare("b" * 16, b"t" * 192, b"d" * 32, b"l" * 32))),
    ShareKeysReply(retry_after_s=0.5),
    MaskedInputRequest(round=3, model_version="ab" * 8, masked=bytes(range(256)) * 4),
    MaskedInputReply(ready=True, survivors=("a" * 16, "c" * 16), dropped=("b" * 16,)),
    UnmaskRequest(round=3, shares=(RevealedShare("a" * 16, "seed", b"\x05" * 66, b"\x06" * 16), RevealedShare("b" * 16, "key", b"\x07" * 66, b"\x08" * 16))),
    UnmaskReply(accepted=False, reason="unknown round"),
]


def filled(reference, message: Message):
    """protoc's message with the same field values (repeated and nested fields included)."""
    for name, (_, kind) in message.FIELDS.items():
        value = getattr(message, name)
        if kind == "repeated string":
            getattr(reference, name).extend(value)
        elif isinstance(kind, type):
            for item in value:
                filled(getattr(reference, name).add(), item)
        else:
            setattr(reference, name, value)
    return reference


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_bytes_equal_protoc_and_round_trip(generated, message):
    reference = filled(getattr(generated, type(message).__name__)(), message)
    assert message.to_bytes() == reference.SerializeToString()
    assert type(message).from_bytes(reference.SerializeToString()) == message


def test_unknown_fields_are_skipped_and_garbage_is_refused(generated):
    # A newer coordinator may add fields: an old device still reads the ones it knows.
    extended = UploadReply(accepted=True).to_bytes() + bytes([0x7A, 0x02]) + b"hi"  # field 15, length 2
    assert UploadReply.from_bytes(extended) == UploadReply(accepted=True)
    for garbage in (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x12\x10abc", b"\x0b"):
        with pytest.raises(ProtocolError):
            UploadRequest.from_bytes(garbage)


def test_out_of_range_integers_are_refused_when_writing():
    # A negative int used to loop forever in the varint writer.
    with pytest.raises(ProtocolError, match="out of range"):
        UploadRequest(payload=b"x", examples=-1).to_bytes()
    with pytest.raises(ProtocolError, match="out of range"):
        UploadRequest(payload=b"x", examples=1 << 64).to_bytes()


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x18" + b"\xff" * 9 + b"\x7f", "out of range"),  # examples = a 70-bit varint
        (b"\x00\x01", "field number 0"),
        (b"\xfd\x07\x01\x02", "truncated fixed32"),  # unknown field 127, wire type 5, two bytes of four
    ],
)
def test_malformed_wire_data_is_refused(data, message):
    with pytest.raises(ProtocolError, match=message):
        UploadRequest.from_bytes(data)
