"""The coordinator's round logic, independent of the network layer.

A round: devices check in and the first ceil(overselect x K) get the task (over-selection
covers devices that vanish); updates are validated exactly as the codec decoder does
(framing, authentication tag under the device's key, layout hash, finite, norm bound) plus
round, model version, selection and one-update-per-device checks; the round closes at K
accepted updates, or at the deadline with at least the minimum, else it is abandoned.
Aggregation streams: each accepted update is added to the round's running weighted sum at
once (its example count capped at the median the previous round's reporters claimed; equal
weights in the first round), so memory does not grow with the cohort (the store keeps the sum
durable, see store.py). Closing divides the sum by its weight, applies it with the server
learning rate, publishes the next model version, evaluates it on the held-out patients and
exports TFLite for devices.

Under DP the round's participants are drawn when it opens, by a secret coin per enrolled
device (Poisson sampling at q = K / devices); only they get the task, every sampled device
that reports in time contributes, and the round closes when all have reported or at the
deadline, never abandoned (the noisy sum is released whatever the count).

Payload decoding runs outside the round lock. This process never imports TensorFlow: the model
work (round 0's model, evaluating each new model on the held-out people, TFLite exports) runs in
the model worker process (model_worker.py), and a closed round is published (evaluation,
metrics line, export) by one publisher thread in round order, so no device call waits for it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import random
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from edge_runtime.identity import device_id
from edge_runtime.payload import PayloadError, decode_update
from edge_runtime.protocol import (
    DONE, TASK, WAIT, AdvertiseKeysReply, CheckInReply, DownloadReply, MaskedInputReply, ShareKeysReply, UnmaskReply, UploadReply,
)
from simulation.accounting import dp_epsilon
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.failpoints import failpoint
from simulation.coordinator.model_worker import ModelWorker
from simulation.coordinator.private_sum import clipped, noisy_mean
from simulation.coordinator.secure_rounds import Refused, SecureRounds, Unrecoverable
from simulation.coordinator.store import CoordinatorStore

log = logging.getLogger("fedbeat.coordinator")

_UNKNOWN = object()


class Unauthenticated(Exception):
    """Unknown or revoked device token."""


@dataclasses.dataclass
class OpenRound:
    """The open round in memory (the store holds the same durably): who was given the task, who
    reported, and the running sum of weighted (under DP, clipped) updates, float64[P]. Check-ins
    and uploads consult these sets instead of reading a cohort's rows from SQLite each time."""

    round: int
    total: np.ndarray
    selected: set[str]
    reported: set[str]
    weight: float = 0.0
    since_checkpoint: int = 0

    def add(self, device: str, contribution: np.ndarray, weight: float) -> None:
        self.reported.add(device)
        self.total += contribution
        self.weight += weight
        self.since_checkpoint += 1


def model_version(weights: np.ndarray) -> str:
    return hashlib.sha256(weights.astype("<f4").tobytes()).hexdigest()[:16]


class Coordinator:
    """Thread-safe round state machine over a ``CoordinatorStore``."""

    def __init__(self, config: CoordinatorConfig):
        self.config = config
        self.out = Path(config.state_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.store = CoordinatorStore(self.out / "coordinator.sqlite")
        self._devices = config.enrolled_devices()
        if config.dp_noise_multiplier and config.clients_per_round > len(self._devices):
            raise ValueError(f"clients_per_round {config.clients_per_round} is more than the {len(self._devices)} enrolled devices")
        self._lock = threading.RLock()
        self._policy = config.availability()
        self._publisher = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="publisher")
        self._models = ModelWorker(config)
        try:
            setup = self._models.setup()
        except BaseException:
            self._models.close()
            raise
        self.manifest = setup.manifest
        self._manifest_json = json.dumps(self.manifest)
        self.tflite = setup.tflite
        self.tflite_sha256 = hashlib.sha256(self.tflite).hexdigest()
        self._secure = SecureRounds(self.store, config, self.manifest["parameters"], self._policy.min_reports) if config.secure_aggregation else None
        self._round_started = time.time()
        self._open_round: OpenRound | None = None
        self._current: tuple[int, str, float] | None | object = _UNKNOWN
        records = self.store.closed_records()
        self._example_cap = next((r["median_examples"] for r in reversed(records) if r.get("median_examples")), None)
        self._resume_or_start(setup.initial_weights)

    # -- setup -------------------------------------------------------------------------
    def _resume_or_start(self, initial_weights: np.ndarray) -> None:
        if self.store.latest_model() is None:  # a fresh federation: the seeded model is round 0's
            self.store.add_model(model_version(initial_weights), 0, initial_weights)
        self._publish_pending()
        current = self._current_round()
        if current is not None:  # restarted mid-round: keep its selections and accepted updates
            log.info("resumed round %d with %d accepted updates", current[0], len(self._open(current[0]).reported))
            closed = self._close(current[0], abandoned=False) if self._complete(current[0]) else None  # killed while closing
            if closed is not None:
                self._publish(*closed)
            elif not self._complete(current[0]):
                self.store.extend_deadline(current[0], time.time() + self.config.deadline_s)
                if self._secure is not None:
                    self._secure.resume(current[0], time.time() + self.config.secure_phase_s)
                self._current = _UNKNOWN
        elif self.store.last_round() < self.config.rounds:
            version, _ = self.store.latest_model()
            self.store.open_round(self._next_round(self.store.last_round() + 1, version))
            self._current = _UNKNOWN

    @property
    def _private(self) -> bool:
        return bool(self.config.dp_noise_multiplier)

    @property
    def _sampling_rate(self) -> float:
        """q = K / enrolled devices: the coin each device's participation is drawn with, and what epsilon accounts."""
        return self.config.clients_per_round / len(self._devices)

    def _next_round(self, round_index: int, version: str) -> tuple[int, str, float, list[str]]:
        """(round, model version, deadline, participants drawn now: under DP a secret coin per device)."""
        sampled = []
        if self._private:
            coin = secrets.SystemRandom()
            sampled = [device for device in sorted(self._devices) if coin.random() < self._sampling_rate]
        return round_index, version, time.time() + self.config.deadline_s, sampled

    def _current_round(self) -> tuple[int, str, float] | None:
        """(round, model version, deadline) of the open round, read from the store once per change of round."""
        if self._current is _UNKNOWN:
            self._current = self.store.current_round()
        return self._current

    def _complete(self, round_index: int) -> bool:
        """K accepted updates, or under DP every sampled device reported (a secure round completes by its phases)."""
        if self._secure is not None:
            return False
        open_round = self._open(round_index)
        if self._private:
            return len(open_round.reported) >= len(open_round.selected)
        return len(open_round.reported) >= self.config.clients_per_round

    def _publish_pending(self) -> None:
        """After a restart: the metrics lines and exports of committed rounds that a kill cut short."""
        path = self.out / "metrics.jsonl"
        text = path.read_text() if path.is_file() else ""
        if text and not text.endswith("\n"):  # a line torn by the kill: drop it, it is written again below
            text = text[: text.rfind("\n") + 1]
            path.write_text(text)
        logged = {json.loads(line)["round"] for line in text.splitlines() if line}
        if 0 not in logged:
            version, weights = self.store.initial_model()
            self._publish({"round": 0, "model_version": version, "abandoned": False}, weights)
        for record in self.store.closed_records():
            if record["round"] not in logged:
                self._publish(record, None if record["abandoned"] else self.store.model(record["model_version"]))
            elif not record["abandoned"] and self.config.export_tflite and not (self.out / "exports" / record["model_version"]).is_dir():
                self._publisher.submit(self._export, record["model_version"], self.store.model(record["model_version"]))

    # -- device calls ------------------------------------------------------------------
    def authenticate(self, token: str | None) -> str:
        """The device id of an enrolled, unrevoked token (one hash and one dict lookup)."""
        device = device_id(token) if token else None
        if device not in self._devices:
            raise Unauthenticated("unknown or revoked device token")
        return device

    @property
    def finished(self) -> bool:
        return self._current_round() is None and self.store.last_round() >= self.config.rounds

    def check_in(self, device: str) -> CheckInReply:
        with self._lock:
            current = self._current_round()
            if current is None:
                return CheckInReply(status=DONE) if self.finished else CheckInReply(status=WAIT, retry_after_s=0.5)
            round_index, version, deadline = current
            open_round = self._open(round_index)
            selected, reported = open_round.selected, open_round.reported
            closed_to_newcomers = self._private or len(selected) >= self._policy.invited  # DP: only the coin's choice
            cohort_fixed = self._secure is not None and not self._secure.taking_keys(round_index, deadline)  # training again would not get it in
            if device in reported or cohort_fixed or (device not in selected and closed_to_newcomers):
                # nothing for this device before the round ends: come back then (spread out), not twice a second
                left = self.config.secure_phase_s if cohort_fixed else deadline - time.time()
                wait = min(max(0.5, left), self.config.max_retry_after_s) + random.uniform(0, self.config.pace_steering_s)
                return CheckInReply(status=WAIT, retry_after_s=wait)
            self.store.select(round_index, device)
            selected.add(device)
            return CheckInReply(
                status=TASK, round=round_index, model_version=version, weights_sha256=self._weights_sha256(version),
                tflite_sha256=self.tflite_sha256, codec=self.config.codec, epochs=self.config.local_epochs, batch_size=self.config.batch_size,
                learning_rate=self.config.client_learning_rate, deadline_s=max(0.0, deadline - time.time()),
                seed=self._seed(round_index, device), manifest_json=self._manifest_json, secure_aggregation=self._secure is not None,
            )

    @functools.lru_cache(maxsize=8)
    def download(self, version: str, include_tflite: bool) -> bytes:
        """The serialized DownloadReply: every device of a round asks for the same few, so each is built once."""
        weights = self.store.model(version)
        if weights is None:
            raise KeyError(f"no model version {version!r}")
        return DownloadReply(model_version=version, weights=weights.astype("<f4").tobytes(), tflite=self.tflite if include_tflite else b"").to_bytes()

    def upload(self, device: str, payload: bytes, examples: int) -> UploadReply:
        if self._secure is not None:
            return UploadReply(accepted=False, reason="secure aggregation: this coordinator takes masked inputs (MaskedInput), not plain updates")
        decoded = self._decoded(device, payload)  # outside the lock: the slow part, and no shared state
        closed = None
        with self._lock:
            current = self._current_round()
            round_index = current[0] if current else self.store.last_round()
            reason = decoded if isinstance(decoded, str) else self._rejection(device, *decoded, examples, current, payload)
            if reason is not None:
                self.store.reject(round_index, device, reason)
                log.warning("round %d: rejected update from device %s: %s", round_index, device[:8], reason)
                return UploadReply(accepted=False, reason=reason)
            if self._complete(round_index):
                closed = self._close(round_index, abandoned=False)
        if closed is not None:
            self._publish(*closed)
        return UploadReply(accepted=True)

    # -- secure aggregation steps (secure_rounds.py) -------------------------------------
    def advertise_keys(self, device: str, request) -> AdvertiseKeysReply:
        return self._secure_call("AdvertiseKeys", device, request, AdvertiseKeysReply, lambda r, v, d: self._secure.advertise(r, v, d, device, request))

    def share_keys(self, device: str, request) -> ShareKeysReply:
        return self._secure_call("ShareKeys", device, request, ShareKeysReply, lambda r, v, d: self._secure.share_keys(r, v, d, device, request))

    def masked_input(self, device: str, request) -> MaskedInputReply:
        def step(round_index: int, version: str, deadline: float) -> MaskedInputReply:
            reported = self._open(round_index).reported
            if request.masked and device not in reported:
                vector = self._secure.check_masked_input(round_index, version, deadline, device, request)
                reason = self._accepted(round_index, device, 1, 1.0, request.masked, vector)
                if reason is not None:
                    raise Refused(reason)
            elif device not in reported:
                raise Refused(f"no masked input: this device has sent none in round {round_index}")
            return self._secure.survivors(round_index, version, deadline, device, reported)

        return self._secure_call("MaskedInput", device, request, MaskedInputReply, step)

    def unmask(self, device: str, request) -> UnmaskReply:
        return self._secure_call("Unmask", device, request, UnmaskReply, lambda r, v, d: self._secure.unmask(r, v, d, device, request, self._open(r).reported))

    def _secure_call(self, method: str, device: str, request, reply_type, step):
        """One secure-aggregation step under the round lock: refused with a logged and stored reason
        when the round or the message is wrong, then the phases moved on if it was the last awaited."""
        closed = None
        with self._lock:
            current = self._current_round()
            round_index = current[0] if current else self.store.last_round()
            try:
                if self._secure is None:
                    raise Refused("secure aggregation is off on this coordinator")
                if current is None or request.round != current[0]:
                    raise Refused(f"stale round: {method} for round {request.round}, " + (f"current round is {current[0]}" if current else "no round is open"))
                if device not in self._open(current[0]).selected:
                    raise Refused(f"not selected for round {current[0]}")
                reply = step(*current)
            except Refused as refused:
                self.store.reject(round_index, device, str(refused))
                log.warning("round %d: refused %s from device %s: %s", round_index, method, device[:8], refused)
                return reply_type(reason=str(refused))
            closed = self._secure_step(current)
        if closed is not None:
            self._publish(*closed)
        return reply

    def _secure_step(self, current: tuple[int, str, float]):
        """Advance the open secure round's phase; close or abandon it when its phases say so."""
        round_index, _, deadline = current
        open_round = self._open(round_index)
        invited = len(open_round.selected) if self._private else self._policy.invited
        action = self._secure.advance(round_index, deadline, invited=invited, reporters=open_round.reported)
        if action is None:
            return None
        closed = self._close(round_index, abandoned=action[0] == "abandon", why=action[1])
        self._secure.forget(round_index)
        return closed

    def _decoded(self, device: str, payload: bytes):
        """(header, update) of a well-formed payload signed by this device, else why not."""
        if len(payload) > self.config.max_payload_bytes:
            return f"oversized payload: {len(payload)} bytes > limit {self.config.max_payload_bytes}"
        try:
            return decode_update(
                payload, key=self._devices[device], layout_hash=self.manifest["layout_hash"], length=self.manifest["parameters"],
                max_norm=self.config.max_update_norm,
            )
        except PayloadError as error:
            return f"invalid payload: {error}"

    def _rejection(self, device: str, header, update: np.ndarray, examples: int, current, payload: bytes) -> str | None:
        """Why the update is refused, or None after committing it and adding it to the running sum."""
        if current is None:
            return f"late: round {header.round_id} is closed"
        round_index, version, _ = current
        if header.round_id == round_index - 1 >= 1:
            return f"late: round {header.round_id} closed before this update arrived"
        if header.round_id != round_index:
            return f"stale round: payload for round {header.round_id}, current round is {round_index}"
        if header.model_version != version:
            return f"stale model: payload trained on {header.model_version}, round {round_index} serves {version}"
        open_round = self._open(round_index)
        if device not in open_round.selected:
            return f"not selected for round {round_index}"
        if header.seed != self._seed(round_index, device):
            return "replayed payload: codec seed is not this device's for this round"
        claimed = int(min(max(examples, 1), self.config.max_examples))
        weight = self._weight(claimed)
        return self._accepted(round_index, device, claimed, weight, payload, self._contribution(update, weight))

    def _accepted(self, round_index: int, device: str, claimed: int, weight: float, payload: bytes, contribution: np.ndarray) -> str | None:
        """Commit the payload, then add it to the running sum (checkpointed every ``checkpoint_every``); a reason if it is a duplicate."""
        open_round = self._open(round_index)
        if not self.store.add_report(round_index, device, claimed, weight, payload):  # committed before the device hears "accepted"
            return f"duplicate: this device already reported in round {round_index}"
        open_round.add(device, contribution, weight)
        failpoint("upload:after-commit")
        if open_round.since_checkpoint >= self.config.checkpoint_every:
            self.store.checkpoint(round_index, open_round.total, open_round.weight)
            open_round.since_checkpoint = 0
        return None

    def _weight(self, claimed: int) -> float:
        """Under DP every update weighs 1; else its claimed examples capped at the previous round's
        median claim (1 when there is none yet), so one device cannot outweigh a typical one."""
        if self._private or self._example_cap is None:
            return 1.0
        return float(min(claimed, self._example_cap))

    def _contribution(self, update: np.ndarray, weight: float) -> np.ndarray:
        """What one accepted update adds to the running sum: clipped under DP, else weighted."""
        if self._private:
            return clipped(update, self.config.dp_clip)
        return update.astype(np.float64) * weight

    def _open(self, round_index: int) -> OpenRound:
        """The open round in memory, or rebuilt after a restart: its selections and reporters, and its
        sum from the checkpoint plus the payloads accepted after it (decoded and verified again)."""
        if self._open_round is not None and self._open_round.round == round_index:
            return self._open_round
        total, weight, pending = self.store.running_sum(round_index)
        reported = self.store.reporters(round_index)
        restored = OpenRound(round_index, np.zeros(self.manifest["parameters"]) if total is None else total, self.store.selected(round_index), reported - {p[0] for p in pending}, weight)
        for device, device_weight, payload in pending:
            if self._secure is not None:
                restored.add(device, self._secure.masked_vector(payload), device_weight)
                continue
            decoded = self._decoded(device, payload)
            if isinstance(decoded, str):
                raise RuntimeError(f"round {round_index}: a stored payload of device {device[:8]} no longer decodes: {decoded}")
            restored.add(device, self._contribution(decoded[1], device_weight), device_weight)
        self._open_round = restored
        return restored

    @functools.lru_cache(maxsize=8)
    def _weights_sha256(self, version: str) -> str:
        """SHA-256 of a version's weight bytes, computed once per version rather than per check-in."""
        return hashlib.sha256(self.store.model(version).astype("<f4").tobytes()).hexdigest()

    def _seed(self, round_index: int, device: str) -> int:
        digest = hashlib.sha256(f"{self.config.seed}:{round_index}:{device}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1

    # -- round closing -----------------------------------------------------------------
    def tick(self) -> None:
        """Close or abandon the open round once its deadline has passed."""
        with self._lock:
            current = self._current_round()
            if self._secure is not None:
                closed = self._secure_step(current) if current is not None else None
            elif current is None or time.time() < current[2]:
                return
            else:
                accepted = len(self._open(current[0]).reported)
                closed = self._close(current[0], abandoned=not self._private and accepted < self._policy.min_reports)
        if closed is not None:
            self._publish(*closed)

    def _close(self, round_index: int, *, abandoned: bool, why: str = "") -> tuple[dict, np.ndarray | None] | None:
        """Aggregate, then commit the new model, the closed round and the next round in one transaction.

        Returns what to publish (the caller does it outside the round lock: evaluation, metrics
        line, export, all redone after a restart if lost), or None if the round was closed already.
        """
        running = self._open(round_index)
        reported = len(running.reported)
        claimed = self.store.claimed_examples(round_index)
        version, global_weights = self.store.latest_model()
        invited = len(running.selected)
        reasons = self.store.rejections_by_reason(round_index)
        record = {
            "round": round_index, "invited": invited, "reported": reported, "dropped": invited - reported,
            "rejected": sum(reasons.values()), "late": reasons.get("late", 0), "abandoned": abandoned, "rejections_by_reason": dict(sorted(reasons.items())),
            "median_examples": float(np.median(claimed)) if claimed.size else None,
        }
        if why:
            record["abandoned_reason"] = why
        new = None
        total, weight = running.total, running.weight
        if self._secure is not None and not abandoned:
            started = time.perf_counter()
            try:
                total, weight = self._secure.unmasked_sum(round_index, version, running.total, running.reported), float(reported)
            except Unrecoverable as error:
                log.warning("round %d: abandoned, cannot unmask the sum: %s", round_index, error)
                abandoned, record["abandoned"], record["abandoned_reason"] = True, True, f"cannot unmask: {error}"
            record["unmask_s"] = round(time.perf_counter() - started, 3)
        if not abandoned:
            if self._private:
                mean = noisy_mean(total, clip=self.config.dp_clip, noise_multiplier=self.config.dp_noise_multiplier, denominator=self.config.clients_per_round)
                record["epsilon"] = dp_epsilon(
                    noise_multiplier=self.config.dp_noise_multiplier, sampling_rate=self._sampling_rate,
                    rounds=self.store.closed_rounds() + 1, delta=self.config.dp_target_delta,
                )
            else:
                mean = total / weight if weight > 0 else np.zeros_like(total)
            new = (global_weights + self.config.server_learning_rate * mean).astype(np.float32)
            version = model_version(new)
        record.update(model_version=version, seconds=round(time.time() - self._round_started, 3))
        next_round = self._next_round(round_index + 1, version) if round_index < self.config.rounds else None
        failpoint("close:before-commit")
        committed = self.store.commit_close(round_index, record=record, model=None if new is None else (version, new), next_round=next_round)
        self._current = _UNKNOWN
        if not committed:
            return None  # closed already (a second caller)
        failpoint("close:after-commit")
        self._round_started = time.time()
        self._example_cap = record["median_examples"] or self._example_cap
        return record, new

    def _publish(self, record: dict, weights: np.ndarray | None) -> None:
        """Queue a committed round's publication: the publisher thread does them one at a time, in round order."""
        self._publisher.submit(self._publish_now, record, weights)

    def _publish_now(self, record: dict, weights: np.ndarray | None) -> None:
        """Evaluate an applied round's model, append its metrics line, log it and export it (all
        redone after a restart if a kill cut them short)."""
        try:
            if weights is not None:
                record = {**record, "eval": self._evaluate(weights)}
            with open(self.out / "metrics.jsonl", "a") as metrics:
                metrics.write(json.dumps(record) + "\n")
            if record["round"] == 0:
                return
            failpoint("close:after-metrics")
            log.info(
                "round %d: selected %d, reported %d, dropped %d, late %d, rejected %d, %.1f s%s", record["round"], record["invited"], record["reported"],
                record["dropped"], record["late"], record["rejected"], record["seconds"], " (abandoned)" if weights is None else f", test loss {record['eval']['loss']:.4f}",
            )
            if weights is not None and self.config.export_tflite:
                self._export(record["model_version"], weights)
        except Exception:  # noqa: BLE001 - rounds go on; a restart publishes what is missing
            log.exception("round %d: publishing failed", record["round"])

    def _evaluate(self, weights: np.ndarray) -> dict:
        return self._models.evaluate(weights)

    def _export(self, version: str, weights: np.ndarray) -> None:
        """TFLite files for devices (the worker writes them aside and renames: never half an export)."""
        final = self.out / "exports" / version
        if not final.is_dir():
            self._models.export(version, weights, final)

    def close(self) -> None:
        self._publisher.shutdown(wait=True)
        self._models.close()
        self.store.close()
