"""End-to-end federated runs on small synthetic populations: learning, determinism, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from simulation.config import ConfigError, SimulationConfig, load_config
from simulation.loopback import is_loopback, listening_sockets
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SMALL = {"synthetic_subjects": 6, "synthetic_minutes": 3.0, "clients": 30, "clients_per_round": 5, "eval_every": 2}


RUN_TAG_ENV = "FEDBEAT_TEST_RUN"
"""Set in a test's fedbeat processes and so inherited by their TFF workers: tests running beside
this one (pytest -n) start workers of their own, which are not this test's to count."""


def fedbeat(*args: str, timeout: float = 600, tag: str = "") -> subprocess.CompletedProcess:
    """The console script, with stdout piped as `fedbeat ... | tail` would (its workers tagged with ``tag``)."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("fedbeat")), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
        env=tagged_environment(tag) if tag else None,
    )


def tagged_environment(tag: str) -> dict[str, str]:
    """This process's environment plus the run tag, for a fedbeat process and the workers it starts."""
    return {**os.environ, RUN_TAG_ENV: tag}


def worker_pids(tag: str) -> set[int]:
    """Live TFF worker_binary processes started under ``tag`` (see RUN_TAG_ENV)."""
    result = subprocess.run(["pgrep", "-f", "tensorflow_federated/data/worker_binary"], capture_output=True, text=True)
    marker = f"{RUN_TAG_ENV}={tag}".encode()
    return {int(p) for p in result.stdout.split() if marker in _environment(int(p))}


def _environment(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # exited meanwhile
        return []


def write_config(path: Path, **fields) -> Path:
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in {**SMALL, **fields}.items()))
    return path


def test_resumed_run_ends_with_the_same_model_as_an_uninterrupted_one(tmp_path):
    # Prepare: one uninterrupted 4-round FedAdam run releasing a moving average of the rounds' models
    # (its running average is part of the checkpoint); one stopped after 2 rounds then resumed
    config = write_config(tmp_path / "small.toml", algorithm="fedadam", release_decay=0.5)
    tag = uuid.uuid4().hex
    full = fedbeat("simulate", "--config", str(config), "--rounds", "4", "--out", str(tmp_path / "full"), "--json", tag=tag)
    fedbeat("simulate", "--config", str(config), "--rounds", "2", "--out", str(tmp_path / "cut"), "--json", tag=tag)
    resumed = fedbeat("simulate", "--config", str(config), "--rounds", "4", "--out", str(tmp_path / "cut"), "--resume", "--json", tag=tag)
    again = fedbeat("simulate", "--config", str(config), "--rounds", "4", "--out", str(tmp_path / "again"), "--json", tag=tag)
    # Assert
    for result in (full, resumed, again):
        assert result.returncode == 0, result.stderr[-3000:]
    full_summary, resumed_summary = json.loads(full.stdout), json.loads(resumed.stdout)
    assert resumed_summary["model_sha256"] == full_summary["model_sha256"]
    assert json.loads(again.stdout)["model_sha256"] == full_summary["model_sha256"]  # same seed, same model
    rounds = [json.loads(line)["round"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]
    assert resumed_summary["rounds"] == full_summary["rounds"]
    assert not worker_pids(tag)  # every run stopped its TFF worker


def test_federated_training_learns_and_counts_failures(tmp_path):
    config = write_config(tmp_path / "small.toml", dropout=0.3)
    result = fedbeat("simulate", "--config", str(config), "--rounds", "8", "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in log if "train_loss" in r]
    assert losses[-1] < losses[0]
    assert summary["test"]["per_class"]["V"]["sensitivity"] > 0.5  # synthetic PVCs are learnable
    assert summary["rounds"]["dropped"] == sum(r["dropped"] for r in log) > 0
    assert summary["population"]["test_patients_in_train"] == 0
    assert summary["rounds_completed"] == 8 and summary["clients_total"] == 30
    assert summary["reports_dropped"] == summary["rounds"]["dropped"]
    for artefact in ("model.keras", "rounds.png", "confusion.png", "summary.json"):
        assert (tmp_path / "run" / artefact).is_file(), artefact


def test_running_simulation_listens_on_loopback_only_and_a_kill_leaves_no_worker(tmp_path):
    # While a run is active, no process of its tree listens on a non-loopback address (`ss -ltnp`, from /proc).
    # Then SIGKILL the simulation mid-run: its worker must die too (PR_SET_PDEATHSIG) and our pipe must close.
    config = write_config(tmp_path / "small.toml")
    tag = uuid.uuid4().hex
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("fedbeat")), "simulate", "--config", str(config), "--rounds", "200", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO_ROOT, env=tagged_environment(tag),
    )
    checkpoint = tmp_path / "run" / "checkpoint.npz"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the simulation should be running a TFF worker"
    assert worker_pids(tag) == set(map(int, children)), "the run's worker carries its tag (what the other tests count by)"
    listening = listening_sockets([process.pid, *map(int, children)])
    assert listening, "the TFF worker should be listening (for fedbeat, on loopback)"
    assert all(is_loopback(address) for address, _ in listening), listening
    os.kill(process.pid, signal.SIGKILL)
    process.stdout.read()  # returns only when every holder of the pipe has exited
    process.wait(timeout=30)
    time.sleep(1)
    assert not worker_pids(tag)


def test_bad_flag_value_is_one_line_and_exit_2():
    result = fedbeat("simulate", "--dropout", "1.5", timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "fedbeat: error: flags: dropout must be in [0, 1), got 1.5"


def test_unknown_toml_key_is_refused(tmp_path):
    (tmp_path / "bad.toml").write_text("rounds = 3\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown config keys learning_rate"):
        load_config(tmp_path / "bad.toml", {})


def test_flags_override_the_file(tmp_path):
    config = load_config(write_config(tmp_path / "c.toml", rounds=7), {"rounds": 9, "seed": None})
    assert config == SimulationConfig(**{**SMALL, "rounds": 9})


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--clients", "10", "--clients-per-round", "20"], "clients_per_round (20) must not exceed clients (10)"),
        (["--rounds", "-1"], "rounds must be >= 1, got -1"),
        (["--local-epochs", "0"], "local_epochs must be >= 1, got 0"),
        (["--release-decay", "1"], "release_decay must be in [0, 1), got 1.0"),
        (["--dataset", "mitdb", "--data-dir", "/nonexistent"], "/nonexistent: data directory does not exist"),
    ],
)
def test_bad_flags_fail_before_any_work(flags, message, capsys):
    from simulation.cli import main

    assert main(["simulate", *flags]) == 2
    assert message in capsys.readouterr().err


def test_compressed_updates_still_train(tmp_path):
    config = write_config(tmp_path / "small.toml", compression="rotated1bit")
    result = fedbeat("simulate", "--config", str(config), "--rounds", "6", "--out", str(tmp_path / "run"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["config"]["compression"] == "rotated1bit"
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["train_loss"] < log[0]["train_loss"]


def test_fedprox_runs_and_differs_from_fedavg(tmp_path):
    config = write_config(tmp_path / "small.toml")
    runs = {name: fedbeat("simulate", "--config", str(config), "--rounds", "2", "--algorithm", name, "--out", str(tmp_path / name), "--json")
            for name in ("fedavg", "fedprox")}
    for result in runs.values():
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(runs["fedavg"].stdout)["model_sha256"] != json.loads(runs["fedprox"].stdout)["model_sha256"]
