"""Secure aggregation between devices and the coordinator: the server unmasks only the sum.

Devices are ``SecureParticipant``s driven in process against a real ``Coordinator`` (its store,
phases and model worker), through ``secure_cohort.run_secure_round``.
"""
from __future__ import annotations

import dataclasses
import re
import time

import numpy as np
import pytest

from edge_runtime.identity import device_id
from edge_runtime.masking import MaskingError
from edge_runtime.protocol import WAIT, AdvertiseKeysReply, MaskedInputReply, MaskedInputRequest, Neighbour, SealedShare, ShareKeysReply, ShareKeysRequest
from edge_runtime.secure_participant import SecureParticipant
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.enrollment import enroll_tokens
from simulation.coordinator.failpoints import FAILPOINT_ENV
from simulation.coordinator.rounds import Coordinator
from simulation.coordinator.secure_cohort import run_secure_round
from tests.simulation.serving import address_of, metrics, query, start_coordinator, start_device, write_config

PHASE_S = 1.0
TOKENS = [f"watch-{i:02d}" for i in range(10)]


def secure_config(tmp_path, **fields) -> CoordinatorConfig:
    devices = tmp_path / "devices.txt"
    if not devices.exists():
        enroll_tokens(devices, TOKENS)
    values = {
        "state_dir": str(tmp_path / "state"), "devices_file": str(devices), "insecure": True, "rounds": 2, "clients_per_round": len(TOKENS),
        "overselect": 1.0, "secure_aggregation": True, "secure_phase_s": PHASE_S, "export_tflite": False, **fields,
    }
    return CoordinatorConfig(**values)


@pytest.fixture
def coordinator(tmp_path):
    started = Coordinator(secure_config(tmp_path))
    yield started
    started.close()


def updates_for(coordinator: Coordinator, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {token: rng.normal(0, 0.02, coordinator.manifest["parameters"]).astype(np.float32) for token in TOKENS}


def expected_integers(participants: dict[str, SecureParticipant], updates: dict[str, np.ndarray], coordinator: Coordinator, survivors) -> np.ndarray:
    """The plain sum, modulo 2^32, of the survivors' fixed-point updates as the devices coded them."""
    total = np.zeros(coordinator.manifest["parameters"], np.uint64)
    for token in survivors:
        participant = participants[token]
        total += participant.code().encode(updates[token], coordinator._seed(participant.round, participant.device)).astype(np.uint64)
    return (total % 2**32).astype(np.uint32)


def captured_totals(coordinator: Coordinator, monkeypatch) -> list[np.ndarray]:
    totals: list[np.ndarray] = []
    unmasked_total = coordinator._secure.unmasked_total
    monkeypatch.setattr(coordinator._secure, "unmasked_total", lambda *args: totals.append(unmasked_total(*args)) or totals[-1])
    return totals


@pytest.mark.parametrize("dropping", ["none", "30% after sharing keys", "30% after masking"])
def test_the_unmasked_sum_equals_the_plain_sum_of_the_quantised_updates_exactly(coordinator, monkeypatch, dropping):
    # Prepare: ten devices with random updates; three of them vanish at the given step
    updates = updates_for(coordinator)
    vanish = set(TOKENS[:3])
    after_sharing, after_masking = (vanish, set()) if dropping == "30% after sharing keys" else (set(), vanish) if dropping == "30% after masking" else (set(), set())
    totals = captured_totals(coordinator, monkeypatch)
    before = coordinator.store.latest_model()[1]
    # Execute
    run, participants = run_secure_round(coordinator, TOKENS, updates, drop_after_sharing=after_sharing, drop_after_masking=after_masking, phase_s=PHASE_S)
    # Assert: the round closed with every device that sent a masked input, and the unmasked integers are their plain sum exactly
    record = coordinator.store.closed_records()[-1]
    counted = [t for t in TOKENS if t not in after_sharing]
    assert not run.refused and record["abandoned"] is False and record["reported"] == len(counted)
    assert np.array_equal(totals[-1], expected_integers(participants, updates, coordinator, counted))
    # ... and the model moved by their mean, to fixed-point precision
    step = coordinator.store.latest_model()[1].astype(np.float64) - before
    mean = np.mean([np.clip(updates[t], -1, 1) for t in counted], axis=0)
    assert np.max(np.abs(step - mean)) < 2 * 2.0 / (2**16 - 1)


def test_once_the_cohort_is_fixed_a_device_checking_in_is_told_to_wait_not_to_train_again(coordinator):
    # Prepare: the ten devices advertise, which fixes the cohort
    replies = {}

    def check_in_after_keys(step):
        if step == "keys":
            replies["member"] = coordinator.check_in(device_id(TOKENS[0]))

    # Execute: a cohort member checks in again after the cohort is fixed (a restarted app, say)
    run_secure_round(coordinator, TOKENS, updates_for(coordinator), between_steps=check_in_after_keys)
    # Assert: it waits, and the round closed with all ten
    assert replies["member"].status == WAIT and replies["member"].retry_after_s >= 0.5
    assert coordinator.store.closed_records()[-1]["reported"] == len(TOKENS)


def test_below_the_threshold_the_round_is_abandoned_and_the_model_unchanged(coordinator):
    # Prepare: half of the ten devices vanish after masking: a survivor has 4 revealing neighbours, 5 are needed
    before = coordinator.store.latest_model()[0]
    # Execute
    run_secure_round(coordinator, TOKENS, updates_for(coordinator), drop_after_masking=set(TOKENS[:5]), phase_s=PHASE_S)
    # Assert
    record = coordinator.store.closed_records()[-1]
    assert record["abandoned"] is True and "cannot unmask" in record["abandoned_reason"] and "5 needed" in record["abandoned_reason"]
    assert coordinator.store.latest_model()[0] == before


def test_too_few_devices_sharing_keys_abandon_the_round(tmp_path):
    # Prepare: only two devices of the ten take the task and advertise keys
    coordinator = Coordinator(secure_config(tmp_path, deadline_s=1.0, pace_steering_s=0.5))
    try:
        for token in TOKENS[:2]:
            task = coordinator.check_in(device_id(token))
            coordinator.advertise_keys(device_id(token), SecureParticipant(device_id(token), task.round, task.model_version).advertisement())
        # Execute: the training deadline passes
        time.sleep(1.1)
        coordinator.tick()
        # Assert: abandoned at the keys phase, never unmasking a sum of two
        record = coordinator.store.closed_records()[-1]
        assert record["abandoned"] is True and "advertised keys" in record["abandoned_reason"]
    finally:
        coordinator.close()


def local_cohort(size: int = 5, threshold: int = 3, round_index: int = 1) -> list[SecureParticipant]:
    """``size`` devices through the first two steps with no coordinator: everyone neighbours everyone."""
    participants = [SecureParticipant(device_id(f"d{i}"), round_index, "00" * 8) for i in range(size)]
    for point, participant in enumerate(participants, 1):
        neighbours = tuple(Neighbour(q.device, i, q.cipher_public, q.mask_public) for i, q in enumerate(participants, 1) if q is not participant)
        participant.join_cohort(AdvertiseKeysReply(ready=True, point=point, threshold=threshold, cohort=size, bits=16, clip=1.0, clip_norm=20.0, neighbours=neighbours))
    sealed = {p.device: p.shares().shares for p in participants}
    for participant in participants:
        to_it = tuple(dataclasses.replace(share, device=owner) for owner, shares in sealed.items() for share in shares if share.device == participant.device)
        participant.hold(ShareKeysReply(ready=True, shares=to_it))
    return participants


def test_a_device_never_reveals_both_secrets_of_one_neighbour():
    # Prepare: a device holding its four neighbours' shares
    device, *others = local_cohort()
    names = [o.device for o in others]
    # Execute / Assert: one neighbour named both survivor and dropped is refused
    with pytest.raises(MaskingError, match="both survivor and dropped"):
        device.reveal(MaskedInputReply(ready=True, survivors=tuple(names), dropped=(names[0],)))
    # ... and once it has answered, a second announcement that moves a neighbour to "dropped" is refused too
    first = device.reveal(MaskedInputReply(ready=True, survivors=tuple(names)))
    assert {(s.device, s.secret) for s in first.shares} == {(n, "seed") for n in names}
    with pytest.raises(MaskingError, match="changed who survived"):
        device.reveal(MaskedInputReply(ready=True, survivors=tuple(names[1:]), dropped=(names[0],)))
    with pytest.raises(MaskingError, match="does not hold"):
        device.reveal(MaskedInputReply(ready=True, survivors=(device_id("stranger"),)))


def test_a_threshold_that_would_let_two_groups_reveal_both_secrets_is_refused():
    # A threshold of at most half the neighbours lets a lying server get seed shares from one half and key shares from the other.
    participants = [SecureParticipant(device_id(f"d{i}"), 1, "00" * 8) for i in range(5)]
    neighbours = tuple(Neighbour(q.device, i, q.cipher_public, q.mask_public) for i, q in enumerate(participants[1:], 2))
    with pytest.raises(MaskingError, match="more than half"):
        participants[0].join_cohort(AdvertiseKeysReply(ready=True, point=1, threshold=2, cohort=5, bits=16, clip=1.0, clip_norm=20.0, neighbours=neighbours))


def test_a_sealed_share_replayed_from_another_round_does_not_open():
    # Prepare: the same five devices in round 1 and round 2 (fresh keys each round)
    first, second = local_cohort(round_index=1), local_cohort(round_index=2)
    replayed = next(s for s in first[0].shares().shares if s.device == first[1].device)
    # Execute / Assert: device 1 of round 2 is handed device 0's round-1 share
    with pytest.raises(MaskingError, match="does not open"):
        second[1].hold(ShareKeysReply(ready=True, shares=(dataclasses.replace(replayed, device=second[0].device),)))


def test_forged_replayed_and_wrong_length_messages_are_refused_with_a_logged_reason(coordinator, caplog):
    # Prepare: two secure rounds; round 1's Unmask requests are kept; in round 2 one device's shares are forged once before its honest ones
    sent, replies = [], {}
    device = device_id(TOKENS[0])
    unmask = coordinator.unmask

    def intercepted(sender, request):
        sent.append((sender, request))
        if request.round == 2 and sender == device and "forged" not in replies:
            first = request.shares[0]
            forged = dataclasses.replace(first, share=bytes([first.share[0] ^ 1]) + first.share[1:])
            replies["forged"] = unmask(sender, dataclasses.replace(request, shares=(forged, *request.shares[1:])))
        return unmask(sender, request)

    coordinator.unmask = intercepted
    run_secure_round(coordinator, TOKENS, updates_for(coordinator, 1))
    version = coordinator.store.current_round()[1]

    def tamper(step):
        if step == "keys":  # round 2 is taking shares: one sealed pair for a stranger instead of one per neighbour
            stranger = SealedShare(device="ab" * 8, sealed=bytes(192), seed_commitment=bytes(32), key_commitment=bytes(32))
            replies["holders"] = coordinator.share_keys(device, ShareKeysRequest(round=2, shares=(stranger,)))
        if step == "shares":  # round 2 is taking masked inputs
            replies["short"] = coordinator.masked_input(device, MaskedInputRequest(round=2, model_version=version, masked=bytes(8)))
            replies["stale"] = coordinator.masked_input(device, MaskedInputRequest(round=2, model_version="ff" * 8, masked=bytes(4 * coordinator.manifest["parameters"])))
        if step == "masked":  # round 2 is unmasking: a round-1 reveal sent again
            owner, round_one = sent[0]
            replies["replayed"] = unmask(owner, dataclasses.replace(round_one, round=2))

    with caplog.at_level("WARNING", logger="fedbeat.coordinator"):
        # Execute
        run_secure_round(coordinator, TOKENS, updates_for(coordinator, 2), between_steps=tamper)
    # Assert: each refused with its reason, logged; round 2 still closed with all ten honest inputs
    assert replies["holders"].reason.startswith("wrong holders")
    assert replies["short"].reason.startswith("wrong length")
    assert replies["stale"].reason.startswith("stale model")
    assert re.match("(forged share|wrong shares)", replies["replayed"].reason)
    assert replies["forged"].reason.startswith("forged share")
    for reply in replies.values():
        assert reply.reason in caplog.text
    record = coordinator.store.closed_records()[-1]
    assert record["round"] == 2 and record["abandoned"] is False and record["reported"] == len(TOKENS)
    assert record["rejections_by_reason"]["wrong length"] == 1 and record["rejections_by_reason"]["stale model"] == 1


def windows(vector: np.ndarray) -> list[bytes]:
    """Three 32-byte pieces of a vector's bytes: any of them in a file means the vector is there."""
    raw = vector.tobytes()
    return [raw[i : i + 32] for i in (0, len(raw) // 2, len(raw) - 32)]


def test_the_store_logs_and_metrics_never_hold_an_individual_update(tmp_path, caplog):
    # Prepare: masked inputs kept in the store until the round closes (no checkpoint folds them earlier)
    coordinator = Coordinator(secure_config(tmp_path, checkpoint_every=1000, rounds=1))
    state = tmp_path / "state"
    files = lambda: b"".join(p.read_bytes() for p in sorted(state.glob("coordinator.sqlite*")))  # noqa: E731
    mid_round = {}
    masked_inputs = []
    masked_input = coordinator.masked_input
    coordinator.masked_input = lambda device, request: masked_inputs.append(request.masked) or masked_input(device, request)
    try:
        updates = updates_for(coordinator, 3)
        with caplog.at_level("DEBUG"):
            _, participants = run_secure_round(coordinator, TOKENS, updates, between_steps=lambda step: mid_round.setdefault(step, files()) and None)
    finally:
        coordinator.close()
    seen = [mid_round["masked"], files(), (state / "metrics.jsonl").read_bytes(), caplog.text.encode()]
    # Assert: the scan finds what is there (the masked vectors, mid-round) ...
    assert any(window in mid_round["masked"] for window in windows(np.frombuffer(masked_inputs[0], np.uint8)))
    # ... and no device's update is anywhere: neither as floats nor as the integers it was masked from
    for token in TOKENS:
        coded = participants[token].code().encode(updates[token], coordinator._seed(1, device_id(token))).astype("<u4")
        for window in windows(updates[token].astype("<f4")) + windows(coded):
            assert not any(window in blob for blob in seen), f"{token}'s update found"


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", ["keys", "shares", "masked"])
def test_a_coordinator_killed_at_any_phase_resumes_and_unmasks_exactly(tmp_path, monkeypatch, killed_after):
    # Prepare: the coordinator is dropped without closing (its model processes stopped) after one step, and a new one started on its state
    config = secure_config(tmp_path, rounds=1)
    running = {"coordinator": Coordinator(config)}
    totals: list[np.ndarray] = []

    def kill_and_restart(step):
        if step != killed_after:
            return None
        dead = running["coordinator"]
        dead._publisher.shutdown(wait=True)
        dead._models.close()
        running["coordinator"] = Coordinator(config)
        unmasked_total = running["coordinator"]._secure.unmasked_total
        monkeypatch.setattr(running["coordinator"]._secure, "unmasked_total", lambda *args: totals.append(unmasked_total(*args)) or totals[-1])
        return running["coordinator"]

    try:
        updates = updates_for(running["coordinator"], 4)
        # Execute
        run, participants = run_secure_round(running["coordinator"], TOKENS, updates, between_steps=kill_and_restart)
        # Assert: the round closed once, with everyone, and its sum unmasked exactly
        records = running["coordinator"].store.closed_records()
        assert not run.refused and len(records) == 1 and records[0]["abandoned"] is False and records[0]["reported"] == len(TOKENS)
        assert np.array_equal(totals[-1], expected_integers(participants, updates, running["coordinator"], TOKENS))
    finally:
        running["coordinator"].close()


def test_with_central_dp_devices_clip_to_the_dp_bound_and_the_noise_goes_on_the_unmasked_sum(tmp_path):
    # Prepare: DP with every enrolled device sampled (q = 1), a negligible noise multiplier, and updates of norm 5 against dp_clip 0.5
    coordinator = Coordinator(secure_config(tmp_path, rounds=1, dp_noise_multiplier=1e-6, dp_clip=0.5))
    try:
        rng = np.random.default_rng(5)
        directions = {t: rng.normal(0, 1, coordinator.manifest["parameters"]) for t in TOKENS}
        updates = {t: (5 * d / np.linalg.norm(d)).astype(np.float32) for t, d in directions.items()}
        before = coordinator.store.latest_model()[1].astype(np.float64)
        # Execute
        run_secure_round(coordinator, TOKENS, updates)
        record = coordinator.store.closed_records()[-1]
        step = coordinator.store.latest_model()[1].astype(np.float64) - before
    finally:
        coordinator.close()
    # Assert: the released mean is that of the updates clipped to 0.5 on the devices (to fixed-point precision), and epsilon is accounted
    clipped_mean = np.mean([0.5 * d / np.linalg.norm(d) for d in directions.values()], axis=0)
    assert record["abandoned"] is False and record["epsilon"] > 0
    assert np.max(np.abs(step - clipped_mean)) < 2 * 2.0 / (2**16 - 1)


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["secure:keys-closed", "secure:masked-closed", "secure:revealed"])
def test_a_secure_round_survives_kill_9_of_the_serving_process(tmp_path, monkeypatch, federation_dir, device_files, failpoint):
    # Prepare: `fedbeat serve` with secure aggregation, set to die (os._exit, as kill -9) at a phase, and four device processes
    config = write_config(tmp_path / "serve.toml", federation_dir, rounds=1, clients_per_round=4, overselect=1.0, secure_aggregation=True, secure_phase_s=60.0, export_tflite=False)
    state, log = tmp_path / "state", tmp_path / "coordinator.log"
    monkeypatch.setenv(FAILPOINT_ENV, failpoint)
    coordinator = start_coordinator(config, log)
    devices = [start_device(address_of(config), f"token-{i}", device_files[i], tmp_path / f"device{i}.log") for i in range(4)]
    # Execute: it dies at the failpoint; started again on its state, without the failpoint, while the devices retry
    assert coordinator.wait(timeout=300) == 137, log.read_text()[-3000:]
    monkeypatch.delenv(FAILPOINT_ENV)
    coordinator = start_coordinator(config, log)
    assert coordinator.wait(timeout=600) == 0, log.read_text()[-3000:]
    # Assert: the round closed once, with all four masked inputs, and the step is a mean of real updates, not of unremoved masks
    records = [r for r in metrics(state) if r["round"] == 1]
    assert len(records) == 1 and records[0]["abandoned"] is False and records[0]["reported"] == 4
    models = dict(query(state, "SELECT round, weights FROM models"))
    step = np.frombuffer(models[1], "<f4").astype(np.float64) - np.frombuffer(models[0], "<f4")
    assert 0 < np.linalg.norm(step) < 20.0  # a sum with a mask left in would be uniform over the clip range: norm ~ 57
    for device in devices:
        assert device.wait(timeout=120) == 0

