"""A device's identity, derived from its enrolment token (stdlib only: runs on the watch).

The token is the device's one secret. The coordinator never stores it: it keeps the device
id (a hash that authenticates the token sent over TLS) and the update key (another hash,
the HMAC key of the device's payloads). Neither reveals the token, and the id appears in
logs and the coordinator's database instead of any token material.
"""
from __future__ import annotations

import hashlib
import hmac

TOKEN_METADATA = "authorization"
_BEARER = "Bearer "


def device_id(token: str) -> str:
    """32 hex digits naming the device in the coordinator's records and logs."""
    return hashlib.sha256(b"fedbeat device id\0" + token.encode()).hexdigest()[:32]


def update_key(token: str) -> bytes:
    """The device's payload-signing key: only the device and the coordinator hold it."""
    return hmac.new(token.encode(), b"fedbeat update key", hashlib.sha256).digest()


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata carrying the token (read before the request body is parsed)."""
    return ((TOKEN_METADATA, _BEARER + token),)


def token_from_metadata(metadata) -> str | None:
    for key, value in metadata or ():
        if key == TOKEN_METADATA and isinstance(value, str) and value.startswith(_BEARER):
            return value[len(_BEARER):]
    return None
