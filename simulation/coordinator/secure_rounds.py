"""The coordinator's side of secure aggregation (``secure_aggregation = true``): it relays keys and
sealed shares, sums masked vectors, and unmasks only the sum.

A secure round, after the devices' local training (the device side is
edge_runtime/secure_participant.py), moves through phases kept in the store, so a kill -9 at
any point resumes where it was:

- ``keys``: selected devices advertise public keys, until every invited device has or the
  round's training deadline passes. The advertisers become the cohort: each gets a Shamir point
  and neighbours (SecAgg+: a random ring, each linked to the ``secure_neighbours`` nearest, or to
  everyone in a small cohort); the threshold is more than half of a device's neighbours.
- ``shares``: each cohort member uploads one sealed share pair per neighbour, with commitments.
- ``masked``: those who shared upload their masked vectors; these are summed as they come, with
  the same durable running sum as plain updates (store.py), never kept one by one.
- ``unmask``: the survivors reveal, for each neighbour, the self-mask seed share of a survivor or
  the masking-key share of one that dropped after sharing; each revealed share must match the
  commitment its owner published. Then the sum is unmasked (self masks of the survivors, the
  dropped devices' pairwise masks with their surviving neighbours) and closed like a plain
  round, or the round is abandoned if some secret has fewer than threshold shares.

Below three devices at any phase (or the round's minimum of reports) the round is abandoned:
the sum of two reveals each to the other. Every update weighs 1.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time

import numpy as np

from edge_runtime import shamir
from edge_runtime.masking import FixedPoint, committed, mask, public_key
from edge_runtime.protocol import AdvertiseKeysReply, MaskedInputReply, Neighbour, SealedShare, ShareKeysReply, UnmaskReply
from edge_runtime.secure_participant import KEY, SEED, mask_sign, pair_context, pairwise_mask, round_context
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.failpoints import failpoint
from simulation.coordinator.store import CoordinatorStore

log = logging.getLogger("fedbeat.coordinator")
KEYS, SHARES, MASKED, UNMASK = "keys", "shares", "masked", "unmask"
MIN_COHORT = 3
_POLL_S = 0.5


class Refused(Exception):
    """A secure-aggregation message the coordinator does not accept (the reason is logged and stored)."""


class Unrecoverable(Exception):
    """Too few shares to unmask the sum: the round is abandoned."""


def neighbourhoods(cohort: list[str], neighbours: int, seed: list[int]) -> dict[str, list[str]]:
    """SecAgg+'s graph: the cohort on a random ring, each device linked to the ``neighbours``
    nearest (half on each side); everyone to everyone when the cohort is that small."""
    if len(cohort) - 1 <= neighbours:
        return {device: [other for other in cohort if other != device] for device in cohort}
    ring = [cohort[i] for i in np.random.default_rng(seed).permutation(len(cohort))]
    half = neighbours // 2
    return {ring[i]: [ring[(i + offset) % len(ring)] for offset in range(-half, half + 1) if offset] for i in range(len(ring))}


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A secure round once its keys phase closed: who, their points, keys and neighbours."""

    context: bytes
    points: dict[str, int]
    cipher_keys: dict[str, bytes]
    mask_keys: dict[str, bytes]
    graph: dict[str, list[str]]
    threshold: int
    code: FixedPoint


class SecureRounds:
    """Phases and messages of secure rounds over a ``CoordinatorStore``; the Coordinator calls it under its round lock."""

    def __init__(self, store: CoordinatorStore, config: CoordinatorConfig, parameters: int, min_reports: int):
        self.store, self.config, self.parameters = store, config, parameters
        self.min_cohort = max(MIN_COHORT, 0 if config.dp_noise_multiplier else min_reports)
        self._cohorts: dict[int, Cohort] = {}
        self._phases: dict[int, tuple[str, float, int | None, int | None] | None] = {}  # the store's secure_phases rows, read once per process
        self._members: dict[int, int] = {}  # cohort size once the keys phase closed
        self._sharers: dict[int, set[str]] = {}  # per round, who shared keys (the store holds the same; read once per process)
        self._revealers: dict[int, set[str]] = {}

    # -- phases ------------------------------------------------------------------------
    def _stored_phase(self, round_index: int) -> tuple[str, float, int | None, int | None] | None:
        """(phase, deadline, threshold, bits), kept in memory: only this process moves a round's phase."""
        if round_index not in self._phases:
            self._phases[round_index] = self.store.secure_phase(round_index)
        return self._phases[round_index]

    def _move(self, round_index: int, phase: str, deadline: float, *, threshold: int, bits: int, points: list[tuple[int, str]] = ()) -> None:
        self.store.set_secure_phase(round_index, phase, deadline, threshold=threshold, bits=bits, points=points)
        self._phases[round_index] = (phase, deadline, threshold, bits)

    def phase(self, round_index: int, training_deadline: float) -> tuple[str, float]:
        stored = self._stored_phase(round_index)
        return (stored[0], stored[1]) if stored else (KEYS, training_deadline)

    def taking_keys(self, round_index: int, training_deadline: float) -> bool:
        """Whether the round's cohort is still open (its keys phase)."""
        return self.phase(round_index, training_deadline)[0] == KEYS

    def cohort(self, round_index: int, model_version: str) -> Cohort:
        if round_index not in self._cohorts:
            _, _, threshold, bits = self._stored_phase(round_index)
            keys = {device: row for device, row in self.store.secure_keys(round_index).items() if row[0]}
            members = sorted(keys)
            self._cohorts[round_index] = Cohort(
                context=round_context(round_index, model_version), points={d: keys[d][0] for d in members},
                cipher_keys={d: keys[d][1] for d in members}, mask_keys={d: keys[d][2] for d in members},
                graph=neighbourhoods(members, self.config.secure_neighbours, [self.config.seed, round_index, 0x5EC]),
                threshold=threshold, code=FixedPoint(clip=self.config.secure_clip, bits=bits),
            )
        return self._cohorts[round_index]

    def advance(self, round_index: int, training_deadline: float, *, invited: int, reporters: set[str]) -> tuple[str, str] | None:
        """Move the round to its next phase when its devices have all answered or its phase's time is
        up; returns ("close", "") when the sum is ready to be unmasked, ("abandon", why) when the
        round cannot go on."""
        now = time.time()
        phase, deadline = self.phase(round_index, training_deadline)
        if phase == KEYS:
            advertised = sorted(self.store.secure_keys(round_index))
            if len(advertised) < invited and now < deadline:
                return None
            if len(advertised) < self.min_cohort:
                return self._abandon(round_index, f"{len(advertised)} devices advertised keys, {self.min_cohort} needed")
            graph = neighbourhoods(advertised, self.config.secure_neighbours, [self.config.seed, round_index, 0x5EC])
            threshold = len(next(iter(graph.values()))) // 2 + 1
            bits = FixedPoint.for_cohort(self.config.secure_clip, len(advertised)).bits
            self._move(round_index, SHARES, now + self.config.secure_phase_s, threshold=threshold, bits=bits, points=list(enumerate(advertised, 1)))
            self._members[round_index] = len(advertised)
            log.info("round %d: secure cohort of %d, threshold %d of %d neighbours, %d-bit fixed point", round_index, len(advertised), threshold, len(graph[advertised[0]]), bits)
            failpoint("secure:keys-closed")
            return None
        _, _, threshold, bits = self._stored_phase(round_index)
        if phase in (SHARES, MASKED):  # every sharer's masked input, after every member's shares
            arrived, awaited = (self._owners(round_index), self._cohort_size(round_index)) if phase == SHARES else (reporters, len(self._owners(round_index)))
            if len(arrived) < awaited and now < deadline:
                return None
            if len(arrived) < self.min_cohort:
                return self._abandon(round_index, f"{len(arrived)} devices sent their {'shares' if phase == SHARES else 'masked inputs'}, {self.min_cohort} needed")
            self._move(round_index, MASKED if phase == SHARES else UNMASK, now + self.config.secure_phase_s, threshold=threshold, bits=bits)
            failpoint(f"secure:{phase}-closed")
            return None
        return ("close", "") if self._revealed(round_index) >= reporters or now >= deadline else None

    @staticmethod
    def _abandon(round_index: int, why: str) -> tuple[str, str]:
        log.warning("round %d: secure aggregation abandoned: %s", round_index, why)
        return "abandon", why

    def _cohort_size(self, round_index: int) -> int:
        if round_index not in self._members:
            self._members[round_index] = len(self.store.secure_keys(round_index))  # no device joins once the keys phase closed
        return self._members[round_index]

    def _poll(self) -> float:
        """When a device waiting for a phase should ask again: half a second plus a drawn share of the
        pace-steering window, so that a large cohort's polls do not arrive in lockstep."""
        return _POLL_S + random.uniform(0, self.config.pace_steering_s)

    def _owners(self, round_index: int) -> set[str]:
        if round_index not in self._sharers:
            self._sharers[round_index] = {owner for owner, *_ in self.store.secure_shares(round_index)}
        return self._sharers[round_index]

    def _revealed(self, round_index: int) -> set[str]:
        if round_index not in self._revealers:
            self._revealers[round_index] = {holder for holder, *_ in self.store.secure_reveals(round_index)}
        return self._revealers[round_index]

    def _expect(self, round_index: int, training_deadline: float, phase: str) -> None:
        current, _ = self.phase(round_index, training_deadline)
        if current != phase:
            raise Refused(f"out of phase: round {round_index} is in its {current} phase, not {phase}")

    # -- device steps ------------------------------------------------------------------
    def advertise(self, round_index: int, model_version: str, training_deadline: float, device: str, request) -> AdvertiseKeysReply:
        phase, _ = self.phase(round_index, training_deadline)
        if phase == KEYS:
            if len(request.cipher_public_key) != 32 or len(request.mask_public_key) != 32:
                raise Refused("malformed keys: X25519 public keys are 32 bytes")
            if self.store.add_secure_keys(round_index, device, request.cipher_public_key, request.mask_public_key) != (request.cipher_public_key, request.mask_public_key):
                raise Refused("different keys: this device advertised other keys in this round")
            return AdvertiseKeysReply(retry_after_s=self._poll())
        cohort = self.cohort(round_index, model_version)
        if device not in cohort.points:
            raise Refused(f"not in the cohort: round {round_index}'s keys phase closed without this device")
        if (cohort.cipher_keys[device], cohort.mask_keys[device]) != (request.cipher_public_key, request.mask_public_key):
            raise Refused("different keys: this device advertised other keys in this round")
        return AdvertiseKeysReply(
            ready=True, point=cohort.points[device], threshold=cohort.threshold, cohort=len(cohort.points), bits=cohort.code.bits, clip=cohort.code.clip,
            clip_norm=self.config.dp_clip if self.config.dp_noise_multiplier else self.config.max_update_norm,
            neighbours=tuple(Neighbour(d, cohort.points[d], cohort.cipher_keys[d], cohort.mask_keys[d]) for d in cohort.graph[device]),
        )

    def share_keys(self, round_index: int, model_version: str, training_deadline: float, device: str, request) -> ShareKeysReply:
        phase, _ = self.phase(round_index, training_deadline)
        if phase == KEYS:
            raise Refused(f"out of phase: round {round_index} is still in its keys phase")
        cohort = self.cohort(round_index, model_version)
        if device not in cohort.points:
            raise Refused(f"not in the cohort of round {round_index}")
        if phase == SHARES and request.shares and device not in self._owners(round_index):
            holders = [share.device for share in request.shares]
            if sorted(holders) != sorted(cohort.graph[device]):
                raise Refused("wrong holders: one sealed share per neighbour is required, no more, no fewer")
            if any(len(s.seed_commitment) != 32 or len(s.key_commitment) != 32 or len(s.sealed) != 12 + 2 * (shamir.SHARE_BYTES + 16) + 16 for s in request.shares):
                raise Refused("malformed share: wrong sealed or commitment length")
            self.store.add_secure_shares(round_index, device, [(s.device, s.sealed, s.seed_commitment, s.key_commitment) for s in request.shares])
            self._owners(round_index).add(device)
        if phase == SHARES:
            return ShareKeysReply(retry_after_s=self._poll())
        if device not in self._owners(round_index):
            raise Refused(f"too late: round {round_index}'s shares phase closed without this device's shares")
        return ShareKeysReply(ready=True, shares=tuple(SealedShare(owner, sealed, seed_c, key_c) for owner, _, sealed, seed_c, key_c in self.store.secure_shares(round_index, holder=device)))

    def check_masked_input(self, round_index: int, model_version: str, training_deadline: float, device: str, request) -> np.ndarray:
        """The masked vector (uint32 as float64, summed exactly) of a device allowed to send it now."""
        self._expect(round_index, training_deadline, MASKED)
        if device not in self._owners(round_index):
            raise Refused(f"not a sharer: this device did not share keys in round {round_index}")
        if request.model_version != model_version:
            raise Refused(f"stale model: masked input for {request.model_version}, round {round_index} serves {model_version}")
        return self.masked_vector(request.masked)

    def masked_vector(self, masked: bytes) -> np.ndarray:
        if len(masked) != 4 * self.parameters:
            raise Refused(f"wrong length: masked input of {len(masked)} bytes, the model has {self.parameters} parameters (x 4 bytes)")
        return np.frombuffer(masked, "<u4").astype(np.float64)

    def survivors(self, round_index: int, model_version: str, training_deadline: float, device: str, reporters: set[str]) -> MaskedInputReply:
        phase, _ = self.phase(round_index, training_deadline)
        if phase != UNMASK:
            return MaskedInputReply(retry_after_s=self._poll())
        held = sorted(owner for owner, *_ in self.store.secure_shares(round_index, holder=device))
        return MaskedInputReply(ready=True, survivors=tuple(d for d in held if d in reporters), dropped=tuple(d for d in held if d not in reporters))

    def unmask(self, round_index: int, model_version: str, training_deadline: float, device: str, request, reporters: set[str]) -> UnmaskReply:
        self._expect(round_index, training_deadline, UNMASK)
        if device not in reporters:
            raise Refused(f"not a survivor: this device sent no masked input in round {round_index}")
        rows = {owner: (seed_c, key_c) for owner, _, _, seed_c, key_c in self.store.secure_shares(round_index, holder=device)}
        expected = {owner: SEED if owner in reporters else KEY for owner in rows}
        given = {share.device: share.secret for share in request.shares}
        if len(given) != len(request.shares) or given != expected:
            raise Refused("wrong shares: one per neighbour, the seed share of a survivor and the key share of a dropped device")
        context = self.cohort(round_index, model_version).context
        for share in request.shares:
            bound = pair_context(context, share.device, device) + f"|{share.secret}".encode()
            if not committed(share.share, share.salt, bound, rows[share.device][0 if share.secret == SEED else 1]):
                raise Refused(f"forged share: the {share.secret} share of {share.device[:8]} does not match its owner's commitment")
        self.store.add_secure_reveals(round_index, device, [(share.device, share.secret, share.share) for share in request.shares])
        self._revealed(round_index).add(device)
        failpoint("secure:revealed")
        return UnmaskReply(accepted=True)

    # -- the sum -----------------------------------------------------------------------
    def unmasked_sum(self, round_index: int, model_version: str, masked_total: np.ndarray, reporters: set[str]) -> np.ndarray:
        """float64[P], the sum of the survivors' clipped updates, or ``Unrecoverable``."""
        total = self.unmasked_total(round_index, model_version, masked_total, reporters)
        return self.cohort(round_index, model_version).code.decode_sum(total, len(reporters))

    def unmasked_total(self, round_index: int, model_version: str, masked_total: np.ndarray, reporters: set[str]) -> np.ndarray:
        """uint32[P], the sum of the survivors' fixed-point integers, or ``Unrecoverable``."""
        cohort = self.cohort(round_index, model_version)
        shares: dict[tuple[str, str], dict[int, bytes]] = {}
        for holder, owner, secret, share in self.store.secure_reveals(round_index):
            shares.setdefault((owner, secret), {})[cohort.points[holder]] = share
        total = np.mod(masked_total, 2.0**32).astype(np.uint64).astype(np.uint32)
        holders: dict[str, list[str]] = {}
        for owner, holder, *_ in self.store.secure_shares(round_index):
            holders.setdefault(owner, []).append(holder)
        with np.errstate(over="ignore"):
            for survivor in sorted(reporters):
                total -= mask(self._recovered(shares, survivor, SEED, cohort), self.parameters)
            for dropped in sorted(set(holders) - reporters):
                key = self._recovered(shares, dropped, KEY, cohort)
                if public_key(key) != cohort.mask_keys[dropped]:
                    raise Unrecoverable(f"the masking key recovered for {dropped[:8]} does not match its advertised public key")
                for survivor in holders[dropped]:
                    if survivor in reporters:  # it held the dropped device's shares, so it masked with it
                        pair = pairwise_mask(key, cohort.mask_keys[survivor], cohort.context, self.parameters)
                        total -= np.uint32(mask_sign(survivor, dropped) % 2**32) * pair
        return total

    @staticmethod
    def _recovered(shares: dict, owner: str, secret: str, cohort: Cohort) -> bytes:
        points = shares.get((owner, secret), {})
        try:
            return shamir.combine(points, cohort.threshold)
        except shamir.ShamirError as error:
            raise Unrecoverable(f"the {secret} of {owner[:8]}: {error}") from error

    def resume(self, round_index: int, deadline: float) -> None:
        """After a restart: the current phase gets its time again (the devices were retrying meanwhile)."""
        stored = self._stored_phase(round_index)
        if stored is not None:
            self._move(round_index, stored[0], deadline, threshold=stored[2], bits=stored[3])

    def forget(self, round_index: int) -> None:
        for cache in (self._cohorts, self._phases, self._members, self._sharers, self._revealers):
            cache.pop(round_index, None)
