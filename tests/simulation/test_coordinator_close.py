"""A coordinator killed at any step of closing a round applies that round exactly once."""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.codecs import encode
from edge_runtime.identity import device_id, update_key
from edge_runtime.payload import Payload, pack
from edge_runtime.protocol import TASK
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.enrollment import enroll_tokens
from simulation.coordinator.failpoints import FAILPOINT_ENV
from simulation.coordinator.rounds import Coordinator
from tests.conftest import REPO_ROOT

UPDATES = {"a": 1e-3, "b": 3e-3}
DEVICE_ROUND = """
import json, sys
import numpy as np
from edge_runtime.codecs import encode
from edge_runtime.identity import device_id, update_key
from edge_runtime.payload import Payload, pack
from edge_runtime.codecs import encode
from edge_runtime.identity import device_id, update_key
from edge_runtime.payload import Payload, pack
from edge_runtime.protocol import TASK
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator

coordinator = Coordinator(CoordinatorConfig(**json.loads(sys.argv[1])))
for token, value in json.loads(sys.argv[2]).items():
    reply = coordinator.check_in(device_id(token))
    update = np.full(coordinator.manifest["parameters"], value, np.float32)
    body = encode(reply.codec, update, reply.seed)
    header = Payload(reply.codec, reply.round, reply.model_version, coordinator.manifest["layout_hash"], reply.seed, update.size, body)
    assert coordinator.upload(device_id(token), pack(header, update_key(token)), 100).accepted
coordinator.close()
"""


def rows(state, sql: str) -> list[tuple]:
    with sqlite3.connect(state / "coordinator.sqlite") as db:
        return db.execute(sql).fetchall()


@pytest.mark.parametrize("failpoint", ["none", "close:before-commit", "close:after-commit", "close:after-metrics"])
def test_a_kill_anywhere_in_close_applies_the_round_exactly_once(synthetic_dir, tmp_path, failpoint):
    # Prepare: two devices, K = 2, so the second upload closes round 1
    enroll_tokens(tmp_path / "devices.txt", list(UPDATES))
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=str(tmp_path / "devices.txt"), rounds=2, clients_per_round=2,
        overselect=1.0, codec="fp16", dataset="mitdb", data_dir=str(synthetic_dir), export_tflite=True, insecure=True,
    )
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    # Execute: the round in a process that dies (os._exit, as kill -9) at the failpoint, then a restart, twice
    run = subprocess.run(
        [sys.executable, "-c", DEVICE_ROUND, json.dumps(fields), json.dumps(UPDATES)], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, FAILPOINT_ENV: failpoint},
    )
    assert run.returncode == (0 if failpoint == "none" else 137), run.stderr[-2000:]
    for _ in range(2):
        restarted = Coordinator(config)
        restarted.close()  # waits for exports
    # Assert: one model per round, the mean applied once, round 1 closed once and round 2 open
    state = tmp_path / "state"
    models = rows(state, "SELECT round, weights FROM models ORDER BY round")
    assert [r for r, _ in models] == [0, 1]
    moved = np.frombuffer(models[1][1], "<f4").astype(np.float64) - np.frombuffer(models[0][1], "<f4")
    expected = config.server_learning_rate * np.mean(list(UPDATES.values()))
    np.testing.assert_allclose(moved, expected, rtol=2e-3)
    assert rows(state, "SELECT round, state FROM rounds ORDER BY round") == [(1, "closed"), (2, "open")]
    logged = [json.loads(line)["round"] for line in (state / "metrics.jsonl").read_text().splitlines()]
    assert logged == [0, 1]
    version = json.loads((state / "metrics.jsonl").read_text().splitlines()[1])["model_version"]
    assert (state / "exports" / version / "model_int8.tflite").is_file()
    assert not [p for p in (state / "exports").iterdir() if p.name.startswith(".")]  # no half-written export left


DIE_AFTER_ACKS = DEVICE_ROUND.replace("coordinator.close()", "os._exit(137)  # killed with every upload above acknowledged").replace("import json, sys", "import json, os, sys")


@pytest.mark.parametrize("failpoint", ["none", "upload:after-commit"])
def test_every_acknowledged_upload_is_in_the_closed_rounds_sum_after_a_kill_mid_round(synthetic_dir, tmp_path, failpoint):
    # Prepare: K = 10, a checkpoint of the running sum every 4 updates, ten distinct constant updates
    values = {f"d{i}": (i + 1) * 1e-3 for i in range(10)}
    enroll_tokens(tmp_path / "devices.txt", list(values))
    config = CoordinatorConfig(
        address="127.0.0.1:0", state_dir=str(tmp_path / "state"), devices_file=str(tmp_path / "devices.txt"), rounds=2, clients_per_round=10,
        overselect=1.0, codec="fp16", dataset="mitdb", data_dir=str(synthetic_dir), export_tflite=False, insecure=True, checkpoint_every=4,
    )
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    first = dict(list(values.items())[:7])
    # Execute: 7 uploads acknowledged (4 in a checkpoint, 3 after it), then the process dies as under kill -9;
    # with the failpoint it dies after committing the first upload, before answering it
    run = subprocess.run([sys.executable, "-c", DIE_AFTER_ACKS, json.dumps(fields), json.dumps(first)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, FAILPOINT_ENV: failpoint})
    assert run.returncode == 137, run.stderr[-2000:]
    state = tmp_path / "state"
    counted = rows(state, "SELECT COUNT(*) FROM reports WHERE round = 1")[0][0]
    assert counted == (7 if failpoint == "none" else 1)
    restarted = Coordinator(config)
    try:
        for token, value in values.items():  # every device (re)sends; the ones already counted are told so
            reply = restarted.check_in(device_id(token))
            if reply.status != TASK:
                continue
            update = np.full(restarted.manifest["parameters"], value, np.float32)
            body = encode(reply.codec, update, reply.seed)
            header = Payload(reply.codec, reply.round, reply.model_version, restarted.manifest["layout_hash"], reply.seed, update.size, body)
            answer = restarted.upload(device_id(token), pack(header, update_key(token)), 100)
            assert answer.accepted or answer.reason.startswith("duplicate"), answer.reason
    finally:
        restarted.close()
    # Assert: round 1 closed from all ten updates, each counted once (equal weights in the first round)
    models = rows(state, "SELECT round, weights FROM models ORDER BY round")
    moved = np.frombuffer(models[1][1], "<f4").astype(np.float64) - np.frombuffer(models[0][1], "<f4")
    np.testing.assert_allclose(moved, config.server_learning_rate * np.mean(list(values.values())), rtol=2e-3)
    record = json.loads((state / "metrics.jsonl").read_text().splitlines()[1])
    assert record["round"] == 1 and record["reported"] == 10
    assert rows(state, "SELECT COUNT(*) FROM reports") == [(0,)] and rows(state, "SELECT COUNT(*) FROM sums") == [(0,)]  # nothing kept per device
