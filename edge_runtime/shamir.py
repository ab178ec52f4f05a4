"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree ``threshold - 1``; a share is
the polynomial at a nonzero point ``x``. Any ``threshold`` shares give the secret back
(Lagrange interpolation at 0); fewer reveal nothing about it. Coefficients come from the OS
CSPRNG (``secrets``). The Mersenne prime 2^521 - 1 is larger than any 256-bit secret, so
every secret is a field element as it is; a share is 66 bytes.
"""
from __future__ import annotations

import secrets

PRIME = 2**521 - 1
SHARE_BYTES = 66
SECRET_BYTES = 32


class ShamirError(ValueError):
    """Too few or inconsistent shares."""


def split(secret: bytes, threshold: int, points: list[int]) -> list[bytes]:
    """The shares of ``secret`` at ``points`` (distinct, nonzero), any ``threshold`` of which recover it."""
    if len(secret) != SECRET_BYTES:
        raise ShamirError(f"a secret is {SECRET_BYTES} bytes, not {len(secret)}")
    if not 1 <= threshold <= len(points) or len(set(points)) != len(points) or not all(0 < x < PRIME for x in points):
        raise ShamirError(f"need 1 <= threshold ({threshold}) <= {len(points)} distinct nonzero points")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [_evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in points]


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for coefficient in reversed(coefficients):  # Horner
        value = (value * x + coefficient) % PRIME
    return value


def combine(shares: dict[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares {point: share} (the first ``threshold`` by point are used)."""
    if len(shares) < threshold:
        raise ShamirError(f"{len(shares)} shares, {threshold} needed")
    points = sorted(shares)[:threshold]
    values = {x: int.from_bytes(shares[x], "big") for x in points}
    if any(len(shares[x]) != SHARE_BYTES or values[x] >= PRIME for x in points):
        raise ShamirError("a share is not a field element")
    secret = 0
    for x in points:
        numerator, denominator = 1, 1
        for other in points:
            if other != x:
                numerator = numerator * -other % PRIME
                denominator = denominator * (x - other) % PRIME
        secret = (secret + values[x] * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * SECRET_BYTES):
        raise ShamirError("the shares do not interpolate to a 32-byte secret")
    return secret.to_bytes(SECRET_BYTES, "big")
