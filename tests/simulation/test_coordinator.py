"""`fedbeat serve` with real device processes on 127.0.0.1: rounds, faults, bad payloads, tokens, TLS."""
from __future__ import annotations

import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import portpicker
import pytest

from datasets.loading import load_split
from datasets.splits import default_mitdb_dir
from datasets.synthetic import write_synthetic_dataset
from edge_runtime.beats import rr_model_input
from edge_runtime.codecs import encode
from edge_runtime.join import CoordinatorClient, JoinError
from edge_runtime.payload import Payload, pack
from edge_runtime.protocol import SERVICE, TASK, CheckInRequest, UploadRequest
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator
from simulation.coordinator.server import start_server
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
FEDBEAT = str(Path(sys.executable).with_name("fedbeat"))


@pytest.fixture(scope="module")
def federation_dir(tmp_path_factory) -> Path:
    """MIT-BIH when present (DS1 patients are the devices), else 16 synthetic subjects."""
    mitdb = default_mitdb_dir()
    if mitdb is not None:
        return mitdb
    out = tmp_path_factory.mktemp("synthetic16")
    write_synthetic_dataset(out, subjects=16, minutes=3, seed=3)
    return out


@pytest.fixture(scope="module")
def device_files(federation_dir, tmp_path_factory) -> list[Path]:
    """One .npz per DS1 patient: 400 of that patient's labelled beats (its arrhythmic beats first)."""
    out = tmp_path_factory.mktemp("devices")
    train = load_split(federation_dir, "DS1", progress=False)
    files = []
    rng = np.random.default_rng(0)
    for i, patient in enumerate(np.unique(train.patient)[:8]):
        beats = rng.permutation(np.flatnonzero(train.patient == patient))
        index = np.sort(np.concatenate([beats[train.labels[beats] != 0], beats[train.labels[beats] == 0]])[:400])
        path = out / f"device{i}.npz"
        np.savez(path, beat=train.windows[index][..., None], log_rr=rr_model_input(train.rr[index]), label=train.labels[index])
        files.append(path)
    return files


def write_config(path: Path, federation_dir: Path, **fields) -> Path:
    values = {
        "address": f"127.0.0.1:{portpicker.pick_unused_port()}", "state_dir": str(path.parent / "state"),
        "tokens": [f"token-{i}" for i in range(10)], "revoked": ["token-9"], "rounds": 3, "clients_per_round": 6, "deadline_s": 120.0,
        "codec": "uniform8", "client_learning_rate": 0.1, "dataset": "mitdb", "data_dir": str(federation_dir), **fields,
    }
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()))
    return path


def start_coordinator(config: Path, log: Path) -> subprocess.Popen:
    process = subprocess.Popen([FEDBEAT, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=open(log, "ab"), cwd=REPO_ROOT, text=True)
    deadline = time.monotonic() + 180
    while "listening on" not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "coordinator did not start"
        time.sleep(0.2)
    return process


def start_device(address: str, token: str, data: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "join", "--server", address, "--token", token, "--data", str(data)],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), cwd=REPO_ROOT, text=True,
    )


def address_of(config: Path) -> str:
    return next(line.split("=", 1)[1].strip().strip('"') for line in config.read_text().splitlines() if line.startswith("address"))


def metrics(state: Path) -> list[dict]:
    path = state / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def query(state: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(state / "coordinator.sqlite") as db:
        return db.execute(sql).fetchall()


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_eight_devices_run_three_rounds_and_the_test_loss_falls(tmp_path, federation_dir, device_files):
    # Prepare: a coordinator and 8 device processes, each one DS1 patient's beats
    config = write_config(tmp_path / "serve.toml", federation_dir)
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    devices = [start_device(address_of(config), f"token-{i}", f, tmp_path / f"device{i}.log") for i, f in enumerate(device_files)]
    # Execute
    assert coordinator.wait(timeout=600) == 0, (tmp_path / "coordinator.log").read_text()[-3000:]
    for device in devices:
        assert device.wait(timeout=60) == 0  # every device heard DONE
    # Assert
    log = metrics(tmp_path / "state")
    assert [r["round"] for r in log] == [0, 1, 2, 3]
    assert all(r["reported"] == 6 and not r["abandoned"] for r in log[1:])
    versions = [r["model_version"] for r in log]
    assert len(set(versions)) == 4  # the global model changed every round
    assert log[-1]["eval"]["loss"] < log[0]["eval"]["loss"]
    for version in versions[1:]:
        assert (tmp_path / "state" / "exports" / version / "model_int8.tflite").is_file()
    lines = (tmp_path / "coordinator.log").read_text()
    assert "round 3: selected 8, reported 6" in lines


def test_killed_devices_and_a_killed_coordinator_lose_no_round(tmp_path, federation_dir, device_files):
    # Prepare: one round of 6; two devices that train slowly (big data) are selected first
    config = write_config(tmp_path / "serve.toml", federation_dir, rounds=1)
    state = tmp_path / "state"
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    with np.load(device_files[0]) as data:
        big = tmp_path / "big.npz"
        np.savez(big, **{k: np.concatenate([data[k]] * 150) for k in ("beat", "log_rr", "label")})
    slow = [start_device(address_of(config), f"token-{i}", big, tmp_path / f"slow{i}.log") for i in (8, 7)]
    wait_for(lambda: len(query(state, "SELECT token FROM selections WHERE round = 1")) == 2)
    # Execute: kill -9 both mid-round, let 3 devices report, kill -9 the coordinator, restart it, 3 more devices
    for device in slow:
        device.send_signal(signal.SIGKILL)
    first = [start_device(address_of(config), f"token-{i}", device_files[i], tmp_path / f"device{i}.log") for i in range(3)]
    wait_for(lambda: len(query(state, "SELECT token FROM updates WHERE round = 1")) == 3)
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    accepted_before = {row[0] for row in query(state, "SELECT token FROM updates WHERE round = 1")}
    coordinator = start_coordinator(config, tmp_path / "coordinator.log")
    later = [start_device(address_of(config), f"token-{i}", device_files[i], tmp_path / f"device{i}.log") for i in range(3, 6)]
    assert coordinator.wait(timeout=600) == 0
    # Assert: the round completed from 6 reports, including the 3 accepted before the crash
    round_one = [r for r in metrics(state) if r["round"] == 1]
    assert len(round_one) == 1 and round_one[0]["reported"] == 6 and round_one[0]["dropped"] == 2
    accepted = {row[0] for row in query(state, "SELECT token FROM updates WHERE round = 1")}
    assert accepted_before == {"token-0", "token-1", "token-2"} and accepted_before < accepted
    for device in first + later:
        assert device.wait(timeout=60) == 0


@pytest.fixture()
def live_coordinator(tmp_path, federation_dir):
    """An in-process coordinator (K=2, small payload limit) and its address."""
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), tokens=("a", "b", "c", "revoked"), revoked=("revoked",), rounds=1,
        clients_per_round=2, overselect=1.5, codec="fp16", max_payload_bytes=30_000, dataset="mitdb", data_dir=str(federation_dir), export_tflite=False,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    yield coordinator, f"127.0.0.1:{port}"
    server.stop(grace=0)
    coordinator.close()


def payload_for(reply, update: np.ndarray, manifest: dict, round_id: int | None = None) -> bytes:
    body = encode(reply.codec, update, reply.seed)
    return pack(Payload(reply.codec, reply.round if round_id is None else round_id, reply.model_version, manifest["layout_hash"], reply.seed, update.size, body))


def test_bad_payloads_and_tokens_are_rejected_with_a_reason_and_the_round_completes(live_coordinator):
    coordinator, address = live_coordinator
    client = CoordinatorClient(address, max_retries=0)
    manifest = coordinator.manifest
    update = np.random.default_rng(0).normal(0, 1e-3, manifest["parameters"]).astype(np.float32)
    # Unknown and revoked tokens
    for token in ("nobody", "revoked"):
        with pytest.raises(JoinError, match="unknown or revoked"):
            client.call("CheckIn", CheckInRequest(token=token))
    a = client.call("CheckIn", CheckInRequest(token="a"))
    b = client.call("CheckIn", CheckInRequest(token="b"))
    assert a.status == b.status == TASK and a.seed != b.seed
    good_a = payload_for(a, update, manifest)
    corrupted = bytearray(good_a)
    corrupted[60] ^= 0xFF
    rejected = {
        "corrupted": client.call("Upload", UploadRequest(token="a", payload=bytes(corrupted), examples=100)),
        "oversized": client.call("Upload", UploadRequest(token="a", payload=good_a + bytes(30_000), examples=100)),
        "stale": client.call("Upload", UploadRequest(token="a", payload=payload_for(a, update, manifest, round_id=0), examples=100)),
        "huge norm": client.call("Upload", UploadRequest(token="a", payload=payload_for(a, update * 1e6, manifest), examples=100)),
    }
    accepted = client.call("Upload", UploadRequest(token="a", payload=good_a, examples=100))
    rejected["duplicate"] = client.call("Upload", UploadRequest(token="a", payload=good_a, examples=100))
    rejected["replayed by b"] = client.call("Upload", UploadRequest(token="b", payload=good_a, examples=100))
    # Malformed bytes straight on the wire: an error status, not a crash
    raw = grpc.insecure_channel(address).unary_unary(f"/{SERVICE}/Upload")
    with pytest.raises(grpc.RpcError) as error:
        raw(b"\x12\xff\xff\xff\x0f", timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Assert: each rejection names its reason; the round completes with the two good updates
    assert accepted.accepted
    reasons = {name: reply.reason for name, reply in rejected.items()}
    assert not any(reply.accepted for reply in rejected.values())
    assert "CRC32 mismatch" in reasons["corrupted"]
    assert "oversized" in reasons["oversized"]
    assert "stale round" in reasons["stale"]
    assert "exceeds the bound" in reasons["huge norm"]
    assert "duplicate" in reasons["duplicate"]
    assert "replayed" in reasons["replayed by b"]
    assert client.call("Upload", UploadRequest(token="b", payload=payload_for(b, update, manifest), examples=100)).accepted
    log = metrics(Path(coordinator.config.state_dir))
    assert log[-1]["round"] == 1 and log[-1]["reported"] == 2 and log[-1]["rejected"] == len(rejected)
    assert len(coordinator.store.rejections(1)) == len(rejected)
    client.close()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert, key_path = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert, key_path


def test_tls_devices_connect_and_plaintext_ones_cannot(tmp_path, federation_dir):
    cert, key = self_signed_certificate(tmp_path)
    port = portpicker.pick_unused_port()
    config = CoordinatorConfig(
        address=f"localhost:{port}", state_dir=str(tmp_path / "state"), tokens=("a",), rounds=1, clients_per_round=1,
        tls_cert=str(cert), tls_key=str(key), dataset="mitdb", data_dir=str(federation_dir), export_tflite=False,
    )
    coordinator = Coordinator(config)
    server, _ = start_server(coordinator, config)
    try:
        secure = CoordinatorClient(f"localhost:{port}", tls_ca=cert, max_retries=0)
        assert secure.call("CheckIn", CheckInRequest(token="a")).status == TASK
        plaintext = CoordinatorClient(f"localhost:{port}", max_retries=0, timeout_s=5)
        with pytest.raises(grpc.RpcError):
            plaintext.call("CheckIn", CheckInRequest(token="a"))
    finally:
        server.stop(grace=0)
        coordinator.close()


def test_central_dp_clips_each_update_and_accounts_epsilon(tmp_path, federation_dir):
    # Prepare: K=2, clip 0.01, negligible noise; one device sends an update of norm 1, the other zeros
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), tokens=("a", "b", "c", "d"), rounds=1, clients_per_round=2, overselect=1.0,
        codec="fp16", dataset="mitdb", data_dir=str(federation_dir), export_tflite=False, dp_noise_multiplier=1e-9, dp_clip=0.01,
    )
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    try:
        client = CoordinatorClient(f"127.0.0.1:{port}", max_retries=0)
        before = coordinator.store.latest_model()[1]
        size = coordinator.manifest["parameters"]
        big = np.full(size, 1.0 / np.sqrt(size), np.float32)
        for token, update in (("a", big), ("b", np.zeros(size, np.float32))):
            reply = client.call("CheckIn", CheckInRequest(token=token))
            assert client.call("Upload", UploadRequest(token=token, payload=payload_for(reply, update, coordinator.manifest), examples=5000)).accepted
        # Assert: the model moved by clip / K, not by the update's norm 1 / 2 (and example counts did not weight it)
        moved = np.linalg.norm(coordinator.store.latest_model()[1] - before)
        assert moved == pytest.approx(0.01 / 2, rel=1e-2)
        log = metrics(Path(config.state_dir))
        assert log[-1]["round"] == 1 and log[-1]["epsilon"] > 0
        client.close()
    finally:
        server.stop(grace=0)
        coordinator.close()
