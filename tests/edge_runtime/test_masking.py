"""Secure aggregation's building blocks on the device: Shamir sharing, masks, sealing, the fixed-point code."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from edge_runtime import shamir
from edge_runtime.masking import FixedPoint, MaskingError, agreed_key, mask, new_keypair, seal, unseal


def test_any_threshold_shares_recover_the_secret_and_fewer_do_not():
    secret = os.urandom(32)
    shares = dict(zip(range(1, 8), shamir.split(secret, 4, list(range(1, 8)))))
    for subset in itertools.combinations(shares, 4):
        assert shamir.combine({x: shares[x] for x in subset}, 4) == secret
    with pytest.raises(shamir.ShamirError, match="3 shares, 4 needed"):
        shamir.combine({x: shares[x] for x in (1, 2, 3)}, 4)
    # three shares read as a degree-2 polynomial interpolate to some other field element: never the secret
    try:
        assert shamir.combine({x: shares[x] for x in (1, 2, 3)}, 3) != secret
    except shamir.ShamirError as error:
        assert "32-byte secret" in str(error)


def test_a_share_altered_by_one_bit_changes_the_recovered_secret():
    secret = os.urandom(32)
    shares = dict(zip((1, 2, 3), shamir.split(secret, 3, [1, 2, 3])))
    shares[2] = bytes([shares[2][0]]) + bytes([shares[2][1] ^ 1]) + shares[2][2:]
    try:
        assert shamir.combine(shares, 3) != secret
    except shamir.ShamirError:
        pass  # or it is no longer a 32-byte value at all


def test_both_ends_of_a_pair_agree_on_the_key_and_the_masks_cancel():
    (a_private, a_public), (b_private, b_public) = new_keypair(), new_keypair()
    assert agreed_key(a_private, b_public, b"round 3") == agreed_key(b_private, a_public, b"round 3")
    assert agreed_key(a_private, b_public, b"round 3") != agreed_key(a_private, b_public, b"round 4")
    pair = mask(agreed_key(a_private, b_public, b"r"), 1000)
    with np.errstate(over="ignore"):
        assert np.array_equal(np.uint32(7) + pair - mask(agreed_key(b_private, a_public, b"r"), 1000), np.full(1000, 7, np.uint32))
    # a mask looks uniform: every byte value turns up about equally often
    counts = np.bincount(mask(os.urandom(32), 250_000).view(np.uint8), minlength=256)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()


def test_a_sealed_share_opens_only_for_its_pair_and_context():
    key = os.urandom(32)
    sealed = seal(key, b"share", b"round 1|a|b")
    assert unseal(key, sealed, b"round 1|a|b") == b"share"
    for wrong_key, bound in ((os.urandom(32), b"round 1|a|b"), (key, b"round 2|a|b"), (key, b"round 1|b|a")):
        with pytest.raises(MaskingError, match="does not open"):
            unseal(wrong_key, sealed, bound)


def test_fixed_point_is_unbiased_and_a_cohort_sum_never_wraps():
    code = FixedPoint.for_cohort(0.5, 1000)
    x = np.linspace(-0.4, 0.4, 64)
    decoded = np.mean([code.decode_sum(code.encode(x, seed), 1) for seed in range(2000)], axis=0)
    assert np.max(np.abs(decoded - x)) < 3 * (2 * 0.5 / code.levels) / np.sqrt(2000) * 2
    for cohort in (10, 65_537, 100_000, 1_000_000):
        code = FixedPoint.for_cohort(1.0, cohort)
        assert cohort * code.levels < 2**32 and (code.bits == 16 or cohort * (2 ** (code.bits + 1) - 1) >= 2**32)
    # the largest values a whole cohort can send sum exactly
    code = FixedPoint.for_cohort(1.0, 1000)
    total = sum(code.encode(np.ones(4), s).astype(np.uint64) for s in range(1000))
    assert np.array_equal(code.decode_sum(total.astype(np.uint32), 1000), np.full(4, 1000.0))
