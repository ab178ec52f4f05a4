"""A device's side of one secure-aggregation round (Bonawitz et al. 2017; neighbourhoods as in
SecAgg+, Bell et al. 2020), after its local training:

1. advertise two fresh X25519 public keys (one to seal shares to it, one for pairwise masks);
   the server answers with the cohort: this device's neighbours, their keys and Shamir points,
   the threshold t and the fixed-point code;
2. share keys: Shamir shares (threshold t) of its self-mask seed and of its masking private key,
   one pair per neighbour, sealed to that neighbour with AES-GCM, each with a salted commitment;
   the server relays the neighbours' sealed shares back;
3. masked input: the fixed-point update plus the self mask plus, for each neighbour whose shares
   arrived, +/- their pairwise mask, modulo 2^32; the pairwise masks cancel in the sum and the
   server learns nothing from one vector;
4. unmask: for each neighbour the server names a survivor, the share of its self-mask seed; for
   each one it names dropped, the share of its masking key. Never both for one neighbour: the
   device refuses an announcement that overlaps, names devices that are not its neighbours,
   or differs from one it has answered before.

Keys, seeds and salts come from the OS CSPRNG; nothing here imports TensorFlow.
"""
from __future__ import annotations

import os

import numpy as np

from edge_runtime import shamir
from edge_runtime.masking import FixedPoint, MaskingError, agreed_key, commitment, mask, new_keypair, seal, unseal
from edge_runtime.protocol import (
    AdvertiseKeysReply, AdvertiseKeysRequest, MaskedInputReply, MaskedInputRequest, Neighbour, RevealedShare, SealedShare, ShareKeysReply,
    ShareKeysRequest, UnmaskRequest,
)

SEED, KEY = "seed", "key"
_SHARE = shamir.SHARE_BYTES
_SALT = 16


def round_context(round_index: int, model_version: str) -> bytes:
    """What every key, mask and commitment of a round is bound to: nothing carries over to another round."""
    return f"{round_index}|{model_version}".encode()


def pair_context(context: bytes, owner: str, holder: str) -> bytes:
    return context + f"|{owner}|{holder}".encode()


def mask_sign(device: str, other: str) -> int:
    """+1 for the pair's smaller id, -1 for the larger: the pair's two masks cancel in the sum."""
    return 1 if device < other else -1


def pairwise_mask(mask_private: bytes, other_public: bytes, context: bytes, length: int) -> np.ndarray:
    return mask(agreed_key(mask_private, other_public, context), length)


class SecureParticipant:
    """One device, one round: its keys and seed, the cohort it was given, the shares it holds, and
    what it has revealed (so that it never reveals both secrets of one neighbour)."""

    def __init__(self, device: str, round_index: int, model_version: str):
        self.device, self.round = device, round_index
        self.context = round_context(round_index, model_version)
        self.model_version = model_version
        self._cipher_private, self.cipher_public = new_keypair()
        self._mask_private, self.mask_public = new_keypair()
        self._seed = os.urandom(shamir.SECRET_BYTES)
        self.cohort: AdvertiseKeysReply | None = None
        self.neighbours: dict[str, Neighbour] = {}
        self.held: dict[str, dict[str, tuple[bytes, bytes]]] = {}  # owner -> {"seed"/"key": (share, salt)}
        self._announced: tuple[frozenset, frozenset] | None = None

    def advertisement(self) -> AdvertiseKeysRequest:
        return AdvertiseKeysRequest(round=self.round, cipher_public_key=self.cipher_public, mask_public_key=self.mask_public)

    def join_cohort(self, reply: AdvertiseKeysReply) -> None:
        """Check the cohort the server announced before sharing anything with it."""
        devices = [n.device for n in reply.neighbours]
        points = [n.point for n in reply.neighbours] + [reply.point]
        if self.device in devices or len(set(devices)) != len(devices) or len(set(points)) != len(points) or 0 in points:
            raise MaskingError("the cohort lists this device as its own neighbour, a device twice, or a point twice")
        if any(len(n.cipher_public_key) != 32 or len(n.mask_public_key) != 32 for n in reply.neighbours):
            raise MaskingError("a neighbour's public key is not 32 bytes")
        if not 2 * reply.threshold > len(devices) or reply.threshold < 2 or reply.threshold > len(devices):
            raise MaskingError(
                f"threshold {reply.threshold} for {len(devices)} neighbours: it must be more than half of them (else two disjoint groups "
                "could be asked for both secrets of one device) and at least 2",
            )
        if not (1 <= reply.bits <= 16 and reply.clip > 0 and reply.clip_norm > 0 and reply.cohort * (2**reply.bits - 1) < 2**32):
            raise MaskingError(f"fixed-point code out of bounds: {reply.bits} bits for a cohort of {reply.cohort}, clip {reply.clip}")
        self.cohort = reply
        self.neighbours = {n.device: n for n in reply.neighbours}

    def shares(self) -> ShareKeysRequest:
        """Shares of the self-mask seed and of the masking key, sealed to each neighbour."""
        holders = list(self.neighbours.values())
        points = [n.point for n in holders]
        seed_shares = shamir.split(self._seed, self.cohort.threshold, points)
        key_shares = shamir.split(self._mask_private, self.cohort.threshold, points)
        sealed = []
        for holder, seed_share, key_share in zip(holders, seed_shares, key_shares):
            bound = pair_context(self.context, self.device, holder.device)
            seed_salt, key_salt = os.urandom(_SALT), os.urandom(_SALT)
            key = agreed_key(self._cipher_private, holder.cipher_public_key, self.context)
            sealed.append(SealedShare(
                device=holder.device, sealed=seal(key, seed_share + seed_salt + key_share + key_salt, bound),
                seed_commitment=commitment(seed_share, seed_salt, bound + b"|seed"), key_commitment=commitment(key_share, key_salt, bound + b"|key"),
            ))
        return ShareKeysRequest(round=self.round, shares=tuple(sealed))

    def hold(self, reply: ShareKeysReply) -> None:
        """Open the shares the neighbours sealed to this device (a forged or replayed one fails here)."""
        for share in reply.shares:
            owner = self.neighbours.get(share.device)
            if owner is None:
                raise MaskingError(f"a share from {share.device[:8]}, which is not a neighbour")
            bound = pair_context(self.context, owner.device, self.device)
            plain = unseal(agreed_key(self._cipher_private, owner.cipher_public_key, self.context), share.sealed, bound)
            if len(plain) != 2 * (_SHARE + _SALT):
                raise MaskingError(f"a share from {owner.device[:8]} has {len(plain)} bytes")
            seed_share, seed_salt = plain[:_SHARE], plain[_SHARE : _SHARE + _SALT]
            key_share, key_salt = plain[_SHARE + _SALT : 2 * _SHARE + _SALT], plain[2 * _SHARE + _SALT :]
            if commitment(seed_share, seed_salt, bound + b"|seed") != share.seed_commitment or commitment(key_share, key_salt, bound + b"|key") != share.key_commitment:
                raise MaskingError(f"the shares from {owner.device[:8]} do not match their commitments")
            self.held[owner.device] = {SEED: (seed_share, seed_salt), KEY: (key_share, key_salt)}

    def code(self) -> FixedPoint:
        return FixedPoint(clip=self.cohort.clip, bits=self.cohort.bits)

    def masked_input(self, update: np.ndarray, seed: int) -> MaskedInputRequest:
        """The update clipped (L2 to clip_norm), fixed-point coded and masked: uint32 words."""
        norm = float(np.linalg.norm(update))
        clipped = update * min(1.0, self.cohort.clip_norm / norm) if norm > 0 else update
        with np.errstate(over="ignore"):
            total = self.code().encode(clipped, seed) + mask(self._seed, update.size)
            for other in self.held:  # the neighbours whose shares arrived: the ones the server counts as having shared keys
                total += np.uint32(mask_sign(self.device, other) % 2**32) * pairwise_mask(self._mask_private, self.neighbours[other].mask_public_key, self.context, update.size)
        return MaskedInputRequest(round=self.round, model_version=self.model_version, masked=total.astype("<u4").tobytes())

    def reveal(self, reply: MaskedInputReply) -> UnmaskRequest:
        """The seed shares of the survivors and the key shares of the dropped, after checking the announcement."""
        survivors, dropped = frozenset(reply.survivors), frozenset(reply.dropped)
        if survivors & dropped:
            raise MaskingError(f"the server named {len(survivors & dropped)} neighbour(s) both survivor and dropped: refusing to reveal both secrets")
        if not (survivors | dropped) <= set(self.held):
            raise MaskingError("the server named devices whose shares this device does not hold")
        if self._announced is not None and self._announced != (survivors, dropped):
            raise MaskingError("the server changed who survived after this device answered: refusing to reveal more")
        self._announced = (survivors, dropped)
        shares = [RevealedShare(device=d, secret=SEED, share=self.held[d][SEED][0], salt=self.held[d][SEED][1]) for d in sorted(survivors)]
        shares += [RevealedShare(device=d, secret=KEY, share=self.held[d][KEY][0], salt=self.held[d][KEY][1]) for d in sorted(dropped)]
        return UnmaskRequest(round=self.round, shares=tuple(shares))
