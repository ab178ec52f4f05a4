"""Running `fedbeat serve` and `python -m edge_runtime join` as processes in tests, and reading what they leave."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import portpicker

from edge_runtime.identity import device_id
from simulation.coordinator.enrollment import enroll_tokens
from tests.conftest import REPO_ROOT

FEDBEAT = str(Path(sys.executable).with_name("fedbeat"))


def enrolled(directory: Path, tokens) -> str:
    """A devices file enrolling ``tokens`` (tests choose their tokens; `fedbeat enroll` draws them)."""
    path = directory / "devices.txt"
    path.unlink(missing_ok=True)
    enroll_tokens(path, list(tokens))
    return str(path)


def write_config(path: Path, federation_dir: Path, **fields) -> Path:
    values = {
        "address": f"127.0.0.1:{portpicker.pick_unused_port()}", "state_dir": str(path.parent / "state"), "insecure": True,
        "devices_file": enrolled(path.parent, [f"token-{i}" for i in range(10)]), "revoked": [device_id("token-9")], "rounds": 3, "clients_per_round": 6, "deadline_s": 120.0,
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
    state = log.with_suffix(".state")
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime", "join", "--server", address, "--token", token, "--insecure", "--data", str(data), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=open(log, "ab"), cwd=REPO_ROOT, text=True,
    )


def address_of(config: Path) -> str:
    return next(line.split("=", 1)[1].strip().strip('"') for line in config.read_text().splitlines() if line.startswith("address"))


def metrics(state: Path) -> list[dict]:
    path = state / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def published(state: Path, *, lines: int) -> list[dict]:
    """metrics.jsonl once the publisher thread has written ``lines`` lines (a round's line follows its close)."""
    wait_for(lambda: len(metrics(state)) >= lines, timeout=60)
    return metrics(state)


def query(state: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(state / "coordinator.sqlite") as db:
        return db.execute(sql).fetchall()


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
