"""In-process devices through a secure round of a ``Coordinator`` (its methods called directly,
no network): for tests and benchmarks/secure_aggregation.py, with devices dropping at a chosen
step, each device's seconds and bytes per step recorded."""
from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np

from edge_runtime.identity import device_id
from edge_runtime.protocol import TASK, MaskedInputRequest, ShareKeysRequest
from edge_runtime.secure_participant import SecureParticipant
from simulation.coordinator.rounds import Coordinator


@dataclasses.dataclass
class CohortRun:
    """What one secure round cost the devices and what became of each."""

    seconds: dict[str, list[float]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))  # step -> per device
    bytes_sent: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())  # device -> bytes
    refused: dict[str, str] = dataclasses.field(default_factory=dict)  # device -> why the round ended for it


def run_secure_round(
    coordinator: Coordinator, tokens: list[str], updates: dict[str, np.ndarray], *, drop_after_sharing: set[str] = frozenset(),
    drop_after_masking: set[str] = frozenset(), phase_s: float = 0.0, between_steps=lambda step: None,
) -> tuple[CohortRun, dict[str, SecureParticipant]]:
    """Every device checks in, advertises, shares, masks its update and reveals, step by step;
    ``drop_after_*`` devices vanish after that step. Where a step waits for vanished devices, the
    phase's time (``phase_s``, the coordinator's secure_phase_s) is let pass and the coordinator
    ticked. ``between_steps(name)`` is called after each step ("keys", "shares", "masked") and
    may return a coordinator to go on with (a restarted one)."""
    run = CohortRun()
    devices = {token: device_id(token) for token in tokens}
    tasks = {token: coordinator.check_in(devices[token]) for token in tokens}
    tasks = {token: task for token, task in tasks.items() if task.status == TASK and task.secure_aggregation}
    participants: dict[str, SecureParticipant] = {}

    def step(name: str, token: str, work):
        started = time.perf_counter()
        request = work()
        run.seconds[name].append(time.perf_counter() - started)
        run.bytes_sent[token] += len(request.to_bytes())
        return request

    def answered(token: str, reply, *, wanted_ready: bool = True):
        if reply.reason or (wanted_ready and not reply.ready):
            run.refused[token] = reply.reason or "still waiting when its step was due"
            return None
        return reply

    for token, task in tasks.items():
        participants[token] = SecureParticipant(devices[token], task.round, task.model_version)
        coordinator.advertise_keys(devices[token], step("advertise", token, participants[token].advertisement))
    coordinator = between_steps("keys") or coordinator
    live = list(participants)
    for token in live:
        reply = answered(token, coordinator.advertise_keys(devices[token], participants[token].advertisement()))
        if reply is not None:
            participants[token].join_cohort(reply)
    live = [t for t in live if t not in run.refused]
    for token in live:
        answered(token, coordinator.share_keys(devices[token], step("share keys", token, participants[token].shares)), wanted_ready=False)
    live = [t for t in live if t not in drop_after_sharing and t not in run.refused]
    coordinator = between_steps("shares") or coordinator
    for token in live:
        reply = answered(token, coordinator.share_keys(devices[token], ShareKeysRequest(round=tasks[token].round)))
        if reply is not None:
            started = time.perf_counter()
            participants[token].hold(reply)
            run.seconds["share keys"].append(time.perf_counter() - started)
    live = [t for t in live if t not in run.refused]
    for token in live:
        masked = step("masked input", token, lambda: participants[token].masked_input(updates[token], tasks[token].seed))
        answered(token, coordinator.masked_input(devices[token], masked), wanted_ready=False)
    _let_phase_pass(coordinator, phase_s, bool(drop_after_sharing))
    coordinator = between_steps("masked") or coordinator
    live = [t for t in live if t not in drop_after_masking and t not in run.refused]
    for token in live:
        reply = answered(token, coordinator.masked_input(devices[token], MaskedInputRequest(round=tasks[token].round)))
        if reply is not None:
            reveal = step("unmask", token, lambda: participants[token].reveal(reply))
            reply = coordinator.unmask(devices[token], reveal)
            if not reply.accepted:
                run.refused[token] = reply.reason
    _let_phase_pass(coordinator, phase_s, bool(drop_after_masking))
    return run, participants


def _let_phase_pass(coordinator: Coordinator, phase_s: float, someone_missing: bool) -> None:
    """A phase waiting for a vanished device ends at its deadline: wait it out, then tick."""
    if someone_missing:
        time.sleep(phase_s + 0.05)
        coordinator.tick()
