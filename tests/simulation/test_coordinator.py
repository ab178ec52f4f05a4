"""`fedbeat serve` with real device processes on 127.0.0.1: rounds, faults, bad payloads, tokens, TLS, influence bounds."""
from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import portpicker
import pytest

from datasets.loading import load_split
from edge_runtime.codecs import encode
from edge_runtime.identity import bearer_metadata, device_id, update_key
from edge_runtime.join import CoordinatorClient, JoinError
from edge_runtime.payload import Payload, pack
from edge_runtime.protocol import SERVICE, TASK, WAIT, CheckInReply, CheckInRequest, UploadRequest
from simulation.coordinator.certificates import self_signed_certificate
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator
from simulation.coordinator.server import start_server
from simulation.resources import child_pids
from tests.conftest import REPO_ROOT
from tests.simulation.serving import address_of, enrolled, metrics, published, query, start_coordinator, start_device, wait_for, write_config

pytestmark = pytest.mark.slow


def test_eight_devices_run_three_rounds_and_the_test_loss_falls(tmp_path, federation_dir, device_files):
    # Prepare: a coordinator and 8 device processes, each one DS1 patient's beats
    status_port = portpicker.pick_unused_port()
    config = write_config(tmp_path / "serve.toml", federation_dir, status_port=status_port)
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    devices = [start_device(address_of(config), f"token-{i}", f, tmp_path / f"device{i}.log") for i, f in enumerate(device_files)]
    # Execute: the operator's status page answers while rounds run (it stays up through the grace period)
    seen: list[dict] = []

    def status_shows_a_closed_round() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/status.json", timeout=5) as reply:
                seen[:] = [json.loads(reply.read())]
        except OSError:
            return False
        return len(seen[0]["rounds"]) >= 2

    wait_for(status_shows_a_closed_round, timeout=400)
    assert coordinator.wait(timeout=600) == 0, (tmp_path / "coordinator.log").read_text()[-3000:]
    for device in devices:
        assert device.wait(timeout=60) == 0  # every device heard DONE
    # Assert
    log = metrics(tmp_path / "state")
    assert [r["round"] for r in log] == [0, 1, 2, 3]
    assert seen[0]["rounds"] == log[: len(seen[0]["rounds"])]
    assert all(r["reported"] == 6 and not r["abandoned"] for r in log[1:])
    versions = [r["model_version"] for r in log]
    assert len(set(versions)) == 4  # the global model changed every round
    assert log[-1]["eval"]["loss"] < log[0]["eval"]["loss"]
    for version in versions[1:]:
        assert (tmp_path / "state" / "exports" / version / "model_int8.tflite").is_file()
    # Each device kept its error-feedback residual (what its codec has not sent yet) across rounds
    for i in range(len(device_files)):
        with np.load(tmp_path / f"device{i}.state" / "residual.npz") as residual:
            assert 0 < np.linalg.norm(residual["weights"]) < 1.0
    lines = (tmp_path / "coordinator.log").read_text()
    assert re.search(r"round 3: selected [678], reported 6", lines)
    # No token material at rest or in logs: the log, the database and the devices file hold device ids only
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("coordinator.sqlite*")) + (tmp_path / "devices.txt").read_bytes()
    assert b"token-" not in stored and "token-" not in lines
    assert device_id("token-0").encode() in stored


def test_killed_devices_and_a_killed_coordinator_lose_no_round(tmp_path, federation_dir, device_files):
    # Prepare: one round of 6; two devices that train slowly (big data) are selected first
    config = write_config(tmp_path / "serve.toml", federation_dir, rounds=1)
    state = tmp_path / "state"
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    with np.load(device_files[0]) as data:
        big = tmp_path / "big.npz"
        np.savez(big, **{k: np.concatenate([data[k]] * 150) for k in ("beat", "log_rr", "label")})
    slow = [start_device(address_of(config), f"token-{i}", big, tmp_path / f"slow{i}.log") for i in (8, 7)]
    wait_for(lambda: len(query(state, "SELECT device FROM selections WHERE round = 1")) == 2)
    # Execute: kill -9 both mid-round, let 3 devices report, kill -9 the coordinator, restart it, 3 more devices
    for device in slow:
        device.send_signal(signal.SIGKILL)
    first = [start_device(address_of(config), f"token-{i}", device_files[i], tmp_path / f"device{i}.log") for i in range(3)]
    wait_for(lambda: len(query(state, "SELECT device FROM reports WHERE round = 1")) == 3)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    accepted_before = {row[0] for row in query(state, "SELECT device FROM reports WHERE round = 1")}
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    later = [start_device(address_of(config), f"token-{i}", device_files[i], tmp_path / f"device{i}.log") for i in range(3, 6)]
    assert coordinator.wait(timeout=600) == 0
    # Assert: the round completed from 6 reports, including the 3 accepted before the crash
    round_one = [r for r in metrics(state) if r["round"] == 1]
    assert len(round_one) == 1 and round_one[0]["reported"] == 6 and round_one[0]["dropped"] == 2
    assert accepted_before == {device_id(f"token-{i}") for i in range(3)}
    assert "resumed round 1 with 3 accepted updates" in (tmp_path / "coordinator.log").read_text()
    assert query(state, "SELECT COUNT(*) FROM reports WHERE round = 1") == [(0,)]  # retention: nothing per device outlives its round
    for device in first + later:
        assert device.wait(timeout=60) == 0


@pytest.fixture(params=["asyncio", "threads"])
def live_coordinator(request, tmp_path, federation_dir):
    """An in-process coordinator (K=2, small payload limit) and its address, on either gRPC server."""
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a", "b", "c", "revoked")), revoked=(device_id("revoked"),),
        rounds=1, clients_per_round=2, overselect=1.5, codec="fp16", max_payload_bytes=30_000, dataset="mitdb", data_dir=str(federation_dir),
        export_tflite=False, insecure=True, server=request.param,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    yield coordinator, f"127.0.0.1:{port}"
    server.stop(grace=0)
    coordinator.close()


def payload_for(reply, update: np.ndarray, manifest: dict, token: str, round_id: int | None = None) -> bytes:
    body = encode(reply.codec, update, reply.seed)
    header = Payload(reply.codec, reply.round if round_id is None else round_id, reply.model_version, manifest["layout_hash"], reply.seed, update.size, body)
    return pack(header, update_key(token))


def clients(address: str, *tokens: str, **options) -> list[CoordinatorClient]:
    return [CoordinatorClient(address, token, insecure=True, max_retries=0, **options) for token in tokens]


def test_bad_payloads_and_tokens_are_rejected_with_a_reason_and_the_round_completes(live_coordinator):
    coordinator, address = live_coordinator
    client_a, client_b, nobody, revoked = clients(address, "a", "b", "nobody", "revoked")
    manifest = coordinator.manifest
    update = np.random.default_rng(0).normal(0, 1e-3, manifest["parameters"]).astype(np.float32)
    # Unknown and revoked tokens
    for client in (nobody, revoked):
        with pytest.raises(JoinError, match="unknown or revoked"):
            client.call("CheckIn", CheckInRequest())
    a = client_a.call("CheckIn", CheckInRequest())
    b = client_b.call("CheckIn", CheckInRequest())
    assert a.status == b.status == TASK and a.seed != b.seed
    good_a = payload_for(a, update, manifest, "a")
    corrupted = bytearray(good_a)
    corrupted[60] ^= 0xFF
    seed_offset = 28
    a_under_b_seed = payload_for(a, update, manifest, "b")  # b re-signs a's update under its own key...
    rejected = {
        "corrupted": client_a.call("Upload", UploadRequest(payload=bytes(corrupted), examples=100)),
        "stale": client_a.call("Upload", UploadRequest(payload=payload_for(a, update, manifest, "a", round_id=0), examples=100)),
        "huge norm": client_a.call("Upload", UploadRequest(payload=payload_for(a, update * 1e6, manifest, "a"), examples=100)),
    }
    with pytest.raises(grpc.RpcError) as oversized:  # over the Upload size limit: refused by gRPC before anything reads it
        client_a.call("Upload", UploadRequest(payload=good_a + bytes(30_000), examples=100))
    assert oversized.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    accepted = client_a.call("Upload", UploadRequest(payload=good_a, examples=100))
    rejected["duplicate"] = client_a.call("Upload", UploadRequest(payload=good_a, examples=100))
    rejected["a's payload sent by b"] = client_b.call("Upload", UploadRequest(payload=good_a, examples=100))
    rejected["a's seed re-signed by b"] = client_b.call("Upload", UploadRequest(payload=a_under_b_seed, examples=100))
    assert a_under_b_seed[seed_offset : seed_offset + 8] == a.seed.to_bytes(8, "little")
    # Malformed bytes straight on the wire: an error status, not a crash
    raw = grpc.insecure_channel(address).unary_unary(f"/{SERVICE}/Upload")
    with pytest.raises(grpc.RpcError) as error:
        raw(b"\x12\xff\xff\xff\x0f", timeout=10, metadata=bearer_metadata("a"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Assert: each rejection names its reason; the round completes with the two good updates
    assert accepted.accepted
    reasons = {name: reply.reason for name, reply in rejected.items()}
    assert not any(reply.accepted for reply in rejected.values())
    assert "authentication tag mismatch" in reasons["corrupted"]
    assert "stale round" in reasons["stale"]
    assert "exceeds the bound" in reasons["huge norm"]
    assert "duplicate" in reasons["duplicate"]
    assert "authentication tag mismatch" in reasons["a's payload sent by b"]
    assert "replayed payload" in reasons["a's seed re-signed by b"]
    assert client_b.call("Upload", UploadRequest(payload=payload_for(b, update, manifest, "b"), examples=100)).accepted
    log = published(Path(coordinator.config.state_dir), lines=2)
    assert log[-1]["round"] == 1 and log[-1]["reported"] == 2 and log[-1]["rejected"] == len(rejected)
    assert sum(log[-1]["rejections_by_reason"].values()) == len(rejected)
    assert set(log[-1]["rejections_by_reason"]) == {"invalid payload", "stale round", "duplicate", "replayed payload"}
    assert coordinator.store.rejections(1) == []  # the closed round's record keeps the counts; the rows are gone (retention)
    for client in (client_a, client_b, nobody, revoked):
        client.close()


def test_unauthenticated_calls_are_refused_before_parsing_and_sizes_are_bounded_per_method(live_coordinator):
    coordinator, address = live_coordinator
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 1 << 22)])
    unknown_fields = b"".join(b"\xf8\xff\xff\xff\x0f\x01" for _ in range(4_000))  # 24 KiB of unknown varint fields, under the Upload limit
    calls = {method: channel.unary_unary(f"/{SERVICE}/{method}") for method in ("CheckIn", "Upload")}
    parsed = []
    original = CheckInRequest.from_bytes.__func__
    CheckInRequest.from_bytes = classmethod(lambda cls, raw: parsed.append(len(raw)) or original(cls, raw))
    try:
        # No token, and a token that is not enrolled: UNAUTHENTICATED, and the body is never parsed
        for metadata in (None, bearer_metadata("nobody")):
            with pytest.raises(grpc.RpcError) as error:
                calls["CheckIn"](unknown_fields, timeout=10, metadata=metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert parsed == []
        # An enrolled device's CheckIn is small: a large one is refused by size before parsing
        with pytest.raises(grpc.RpcError) as error:
            calls["CheckIn"](unknown_fields[:6000], timeout=10, metadata=bearer_metadata("a"))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and parsed == []
        assert CheckInReply.from_bytes(calls["CheckIn"](b"", timeout=10, metadata=bearer_metadata("a"))).status == TASK  # a normal call works
        assert parsed == [0]
    finally:
        CheckInRequest.from_bytes = classmethod(original)
    # An Upload above the payload limit (+ framing) is refused whole
    with pytest.raises(grpc.RpcError) as error:
        calls["Upload"](bytes(coordinator.config.max_payload_bytes + 1000), timeout=10, metadata=bearer_metadata("a"))
    assert error.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED,)
    channel.close()


def test_tls_devices_connect_and_plaintext_ones_cannot(tmp_path, federation_dir):
    cert, key = self_signed_certificate(tmp_path)
    port = portpicker.pick_unused_port()
    config = CoordinatorConfig(
        address=f"localhost:{port}", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a",)), rounds=1, clients_per_round=1,
        tls_cert=str(cert), tls_key=str(key), dataset="mitdb", data_dir=str(federation_dir), export_tflite=False,
    )
    coordinator = Coordinator(config)
    server, _ = start_server(coordinator, config)
    try:
        secure = CoordinatorClient(f"localhost:{port}", "a", tls_ca=cert, max_retries=0)
        assert secure.call("CheckIn", CheckInRequest()).status == TASK
        (plaintext,) = clients(f"localhost:{port}", "a", timeout_s=5)
        with pytest.raises(grpc.RpcError):
            plaintext.call("CheckIn", CheckInRequest())
        # A device pinned to another certificate refuses this coordinator (a man in the middle's, say)
        other, _ = self_signed_certificate(tmp_path / "other")
        impostor_pinned = CoordinatorClient(f"localhost:{port}", "a", tls_ca=other, max_retries=0, timeout_s=5)
        with pytest.raises(grpc.RpcError) as error:
            impostor_pinned.call("CheckIn", CheckInRequest())
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=0)
        coordinator.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "TLS is required"),
        ({"insecure": True, "address": "0.0.0.0:50051"}, "only allowed on a loopback address"),
        ({"insecure": True, "address": "coordinator.example:50051"}, "only allowed on a loopback address"),
    ],
)
def test_plaintext_is_refused_unless_asked_for_on_loopback(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message):
        CoordinatorConfig(devices_file=enrolled(tmp_path, ("a",)), **fields)
    with pytest.raises(JoinError, match="no --tls-ca"):
        CoordinatorClient("127.0.0.1:1", "a")


def run_round(coordinator: Coordinator, address: str, uploads: dict[str, tuple[np.ndarray, int]]) -> None:
    """Each token checks in and uploads its (update, examples); the last upload closes the round."""
    for token, (update, examples) in uploads.items():
        (client,) = clients(address, token)
        reply = client.call("CheckIn", CheckInRequest())
        assert reply.status == TASK, token
        assert client.call("Upload", UploadRequest(payload=payload_for(reply, update, coordinator.manifest, token), examples=examples)).accepted
        client.close()


def test_one_device_claiming_many_examples_weighs_no_more_than_a_typical_one(tmp_path, federation_dir):
    # Prepare: seven honest devices (1,200 examples, small updates) and one claiming 10,000 with an update near the norm bound
    honest = [f"h{i}" for i in range(7)]
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, [*honest, "attacker"]), rounds=1,
        clients_per_round=8, overselect=1.0, codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, insecure=True,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    try:
        size = coordinator.manifest["parameters"]
        rng = np.random.default_rng(0)
        direction = rng.normal(size=size)
        direction /= np.linalg.norm(direction)
        attack = (direction * 0.95 * config.max_update_norm).astype(np.float32)
        uploads = {token: (rng.normal(0, 1e-3, size).astype(np.float32), 1200) for token in honest}
        before = coordinator.store.latest_model()[1]
        run_round(coordinator, f"127.0.0.1:{port}", {**uploads, "attacker": (attack, 10_000)})
        # Assert: the attacker's share of the mean is 1/8 (equal to an honest device's), not 10,000/18,400 = 54 %
        moved = coordinator.store.latest_model()[1].astype(np.float64) - before
        share = float(moved @ direction) / float(np.linalg.norm(attack))
        assert share == pytest.approx(1 / 8, abs=0.01)
    finally:
        server.stop(grace=0)
        coordinator.close()


def test_central_dp_clips_each_update_and_accounts_epsilon(tmp_path, federation_dir):
    # Prepare: q = K / devices = 1 so both devices are sampled; clip 0.01, negligible noise
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a", "b")), rounds=1, clients_per_round=2,
        codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, dp_noise_multiplier=1e-9, dp_clip=0.01, insecure=True,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    try:
        before = coordinator.store.latest_model()[1]
        size = coordinator.manifest["parameters"]
        big = np.full(size, 1.0 / np.sqrt(size), np.float32)
        run_round(coordinator, f"127.0.0.1:{port}", {"a": (big, 5000), "b": (np.zeros(size, np.float32), 5)})
        # Assert: the model moved by clip / K, not by the update's norm 1 / 2 (and example counts did not weight it)
        moved = np.linalg.norm(coordinator.store.latest_model()[1] - before)
        assert moved == pytest.approx(0.01 / 2, rel=1e-2)
        log = published(Path(config.state_dir), lines=2)
        assert log[-1]["round"] == 1 and log[-1]["epsilon"] > 0
    finally:
        server.stop(grace=0)
        coordinator.close()


def test_under_dp_participation_is_a_secret_coin_per_device_not_first_come(tmp_path, federation_dir):
    # Prepare: 40 enrolled devices, K = 10: q = 0.25; every device checks in every round (always online)
    tokens = [f"d{i}" for i in range(40)]
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, tokens), rounds=1, clients_per_round=10,
        codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, dp_noise_multiplier=1.0, insecure=True,
    )
    coordinator = Coordinator(config)
    try:
        # Execute: draw 400 rounds' participants the way the coordinator opens a round
        drawn = [set(coordinator._next_round(r, "v")[3]) for r in range(400)]
        # Assert: each device is in about q of the rounds, independently (binomial sizes), whatever its check-in order
        inclusion = np.array([sum(device_id(t) in d for d in drawn) for t in tokens]) / len(drawn)
        assert np.abs(inclusion - 0.25).max() < 0.09 and inclusion.mean() == pytest.approx(0.25, abs=0.02)
        assert np.var([len(d) for d in drawn]) == pytest.approx(40 * 0.25 * 0.75, rel=0.3)
        # And a device not drawn for the open round is told to wait, however early it checks in
        sampled = coordinator.store.selected(1)
        outsider = next(t for t in tokens if device_id(t) not in sampled)
        assert coordinator.check_in(device_id(outsider)).status != TASK
        if sampled:
            insider = next(t for t in tokens if device_id(t) in sampled)
            assert coordinator.check_in(device_id(insider)).status == TASK
    finally:
        coordinator.close()


def test_a_slow_evaluation_of_a_closed_round_does_not_block_devices(tmp_path, federation_dir, monkeypatch):
    # Prepare: K = 1, and evaluating the new model takes 3 s
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a", "b")), rounds=2, clients_per_round=1,
        overselect=1.0, codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, insecure=True,
    )
    coordinator = Coordinator(config)
    evaluate = coordinator._evaluate
    monkeypatch.setattr(coordinator, "_evaluate", lambda weights: time.sleep(3) or evaluate(weights))
    try:
        reply = coordinator.check_in(device_id("a"))
        payload = payload_for(reply, np.zeros(coordinator.manifest["parameters"], np.float32), coordinator.manifest, "a")
        # Execute: a's upload closes round 1 (and evaluates, 3 s) while b checks in for round 2
        closer = threading.Thread(target=coordinator.upload, args=(device_id("a"), payload, 10))
        closer.start()
        wait_for(lambda: coordinator.store.current_round() is not None and coordinator.store.current_round()[0] == 2, timeout=10)
        started = time.monotonic()
        b = coordinator.check_in(device_id("b"))
        answered = time.monotonic() - started
        closer.join()
        # Assert: b got round 2's task at once, not after the evaluation
        assert b.status == TASK and b.round == 2 and answered < 1.0
    finally:
        coordinator.close()


SERVING_PROCESS = """
import json, sys, time
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator
from simulation.coordinator.server import start_server

config = CoordinatorConfig(**json.loads(sys.argv[1]))
coordinator = Coordinator(config)
start_server(coordinator, config)
print(json.dumps({"evaluator": coordinator._models.pid(), "tensorflow": sorted(m for m in sys.modules if m.startswith(("tensorflow", "keras")))}), flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_serving_process_and_its_evaluator_never_import_tensorflow_and_die_together(tmp_path, federation_dir):
    # Prepare: a coordinator and its gRPC server in a process of their own
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a",)), rounds=1, clients_per_round=1,
        dataset="mitdb", data_dir=str(federation_dir), export_tflite=True, insecure=True,
    )
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    serving = subprocess.Popen([sys.executable, "-c", SERVING_PROCESS, json.dumps(fields)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        started = json.loads(serving.stdout.readline())
        # Assert: no TensorFlow in the serving process nor in its live evaluator; the TensorFlow job of the start has exited
        assert started["tensorflow"] == []
        assert started["evaluator"] != serving.pid and alive(started["evaluator"])
        assert "tflite_runtime" in Path(f"/proc/{started['evaluator']}/maps").read_text()
        assert "site-packages/tensorflow/" not in Path(f"/proc/{started['evaluator']}/maps").read_text()
        spawned = child_pids(serving.pid)  # the evaluator and multiprocessing's resource tracker
        assert started["evaluator"] in spawned
        assert not any("site-packages/tensorflow/" in Path(f"/proc/{pid}/maps").read_text() for pid in spawned if alive(pid))
        # Execute: kill -9 the serving process
        serving.send_signal(signal.SIGKILL)
        serving.wait(timeout=10)
        # Assert: nothing it started outlives it
        wait_for(lambda: not any(alive(pid) for pid in spawned), timeout=10)
    finally:
        serving.kill()


def test_the_evaluator_on_tflite_runtime_matches_tensorflow_on_the_held_out_people(tmp_path, federation_dir):
    # Prepare: the coordinator's model side for a federation, and a model moved off its seed
    from models.beat_classifier import build_beat_classifier
    from simulation.beat_data import data_directory
    from simulation.config import SimulationConfig
    from simulation.coordinator.held_out import HeldOutEvaluation
    from simulation.coordinator.model_worker import ModelWorker, trainable_tflite_path
    from simulation.runner import evaluate

    config = CoordinatorConfig(state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, ("a",)), dataset="mitdb", data_dir=str(federation_dir), insecure=True)
    worker = ModelWorker(config)
    try:
        setup = worker.setup()
    finally:
        worker.close()
    weights = setup.initial_weights + np.random.default_rng(3).normal(0, 0.05, setup.initial_weights.size).astype(np.float32)
    model = build_beat_classifier(seed=config.seed)
    shapes = [w.shape for w in model.get_weights()]
    model.set_weights([part.reshape(shape) for part, shape in zip(np.split(weights, np.cumsum([int(np.prod(s)) for s in shapes])[:-1]), shapes)])
    test = load_split(data_directory(SimulationConfig(dataset="mitdb", data_dir=str(federation_dir))), "DS2", progress=False)
    # Execute: the same weights through TensorFlow and through the evaluator
    expected = evaluate(model, test, np.array(setup.manifest["class_weights"], np.float32))
    measured = HeldOutEvaluation(config, trainable_tflite_path(config), setup.manifest["class_weights"]).evaluate(weights)
    # Assert: the same loss, accuracy and macro-F1
    assert measured["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert measured["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-4)
    assert measured["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-3)


def test_devices_told_to_wait_come_back_after_the_deadline_spread_out(tmp_path, federation_dir):
    # Prepare: K = 2 of 12 devices, deadline 30 s, pace steering over 4 s
    tokens = [f"d{i}" for i in range(12)]
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=enrolled(tmp_path, tokens), rounds=1, clients_per_round=2,
        overselect=1.0, deadline_s=30.0, max_retry_after_s=30.0, pace_steering_s=4.0, dataset="mitdb", data_dir=str(federation_dir),
        export_tflite=False, insecure=True,
    )
    coordinator = Coordinator(config)
    try:
        # Execute: every device checks in; the first two get the task
        replies = [coordinator.check_in(device_id(token)) for token in tokens]
        deadline_in = coordinator.store.current_round()[2] - time.time()
    finally:
        coordinator.close()
    # Assert: the other ten are told to come back after the deadline, at instants spread over the pace-steering window
    waits = np.array([r.retry_after_s for r in replies[2:]])
    assert [r.status for r in replies[:2]] == [TASK, TASK] and all(r.status == WAIT for r in replies[2:])
    assert np.all(waits >= deadline_in - 0.5) and np.all(waits <= deadline_in + 4.5)
    assert waits.max() - waits.min() > 1.0
