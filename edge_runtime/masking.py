"""The arithmetic of secure aggregation (Bonawitz et al. 2017), numpy and ``cryptography`` only.

- Keys: X25519 pairs drawn from the OS CSPRNG, fresh for every round.
- Agreed secrets: X25519 then HKDF-SHA256 with the round's context, the same on both sides.
- Masks: a 32-byte seed expanded by ChaCha20 into uint32 words; vectors are added modulo 2^32,
  so a vector plus a uniform mask is uniform whatever the vector.
- Share transport: AES-256-GCM under an agreed key, bound to (round, sender, receiver), so the
  server that relays a share can neither read it nor pass it off as another's.
- Commitments: SHA-256 of a revealed value with a 16-byte salt, published before the value is
  revealed, so that a forged or replayed share is refused on sight.
- ``FixedPoint``: the update as integers for masking: the uniform codecs' stochastic rounding
  (``codecs.stochastic_levels``, unbiased) onto 2^bits - 1 levels of a round-wide range
  [-clip, clip] instead of the vector's own min and max, with bits chosen so that the sum of a
  whole cohort cannot wrap modulo 2^32.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_runtime.codecs import stochastic_levels

KEY_BYTES = 32
SALT_BYTES = 16
_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


class MaskingError(ValueError):
    """A key, share or vector that is not what the protocol allows."""


def new_keypair() -> tuple[bytes, bytes]:
    """(private, public) X25519 keys, 32 raw bytes each."""
    private = X25519PrivateKey.generate()
    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()), private.public_key().public_bytes(**_RAW)


def public_key(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes(**_RAW)


def agreed_key(private: bytes, peer_public: bytes, context: bytes) -> bytes:
    """The 32-byte secret two devices share: X25519, then HKDF-SHA256 bound to ``context``."""
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as error:
        raise MaskingError(f"not an X25519 public key: {error}") from error
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"fedbeat secure aggregation|" + context).derive(shared)


def mask(seed: bytes, length: int) -> np.ndarray:
    """uint32[length], ChaCha20's keystream under ``seed``: the same on every machine."""
    stream = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor().update(bytes(4 * length))
    return np.frombuffer(stream, "<u4").astype(np.uint32)


def seal(key: bytes, plaintext: bytes, bound_to: bytes) -> bytes:
    """AES-256-GCM: 12-byte random nonce, ciphertext and tag; ``bound_to`` is authenticated, not sent."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, bound_to)


def unseal(key: bytes, sealed: bytes, bound_to: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], bound_to)
    except (InvalidTag, ValueError) as error:
        raise MaskingError("a sealed share does not open under this pair's key and context: forged, altered or replayed") from error


def commitment(value: bytes, salt: bytes, context: bytes) -> bytes:
    return hashlib.sha256(b"fedbeat commitment|" + context + b"|" + salt + value).digest()


def committed(value: bytes, salt: bytes, context: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(commitment(value, salt, context), expected)


@dataclasses.dataclass(frozen=True)
class FixedPoint:
    """An update as integers in [0, 2^bits - 1] per coordinate, for a cohort of up to ``capacity``."""

    clip: float
    bits: int

    @classmethod
    def for_cohort(cls, clip: float, cohort: int, max_bits: int = 16) -> "FixedPoint":
        """The finest levels at which ``cohort`` devices' integers sum below 2^32."""
        bits = min(max_bits, int(math.floor(math.log2((2**32 - 1) / max(cohort, 1) + 1))))
        if bits < 1 or clip <= 0:
            raise MaskingError(f"no fixed-point code for a cohort of {cohort} with clip {clip}")
        return cls(clip=clip, bits=bits)

    @property
    def levels(self) -> int:
        return 2**self.bits - 1

    def encode(self, update: np.ndarray, seed: int) -> np.ndarray:
        """uint32[P]: each coordinate clipped to [-clip, clip], stochastically rounded (unbiased inside the range)."""
        clipped = np.clip(update.astype(np.float64), -self.clip, self.clip)
        return stochastic_levels(clipped, low=-self.clip, span=2 * self.clip, levels=self.levels, seed=seed).astype(np.uint32)

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """float64[P]: the sum of ``count`` updates from the sum of their integers."""
        return total.astype(np.float64) * (2 * self.clip / self.levels) - count * self.clip
