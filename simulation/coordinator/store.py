"""Coordinator state in SQLite: a restarted coordinator resumes the open round with its accepted updates.

Every accepted update is committed before the device hears "accepted", so a kill -9 loses
nothing a device was told was counted. Closing a round is one transaction (the new model, the
closed round with its metrics record, the next open round), so a kill -9 anywhere in a close
applies the round exactly once. Tables: models (version -> weights), rounds,
selections (who was given the round's task), updates (decoded, per device and round) and
rejections (with the logged reason). Devices appear by their id (``identity.device_id``),
never by token.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (version TEXT PRIMARY KEY, round INTEGER NOT NULL, weights BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, model_version TEXT NOT NULL, state TEXT NOT NULL, opened REAL NOT NULL, deadline REAL NOT NULL,
    closed REAL, selected INTEGER DEFAULT 0, reported INTEGER DEFAULT 0, rejected INTEGER DEFAULT 0, late INTEGER DEFAULT 0,
    record TEXT
);
CREATE TABLE IF NOT EXISTS selections (round INTEGER NOT NULL, device TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (round, device));
CREATE TABLE IF NOT EXISTS updates (
    round INTEGER NOT NULL, device TEXT NOT NULL, weight REAL NOT NULL, update_vector BLOB NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (round, device)
);
CREATE TABLE IF NOT EXISTS rejections (round INTEGER NOT NULL, device TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
"""


class CoordinatorStore:
    """Thread-safe access to the coordinator's SQLite file (one connection, one lock)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        if "record" not in {row[1] for row in self._db.execute("PRAGMA table_info(rounds)")}:  # a store from before closes were atomic
            self._db.execute("ALTER TABLE rounds ADD COLUMN record TEXT")

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add_model(self, version: str, round_index: int, weights: np.ndarray) -> None:
        self._run("INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?)", (version, round_index, weights.astype("<f4").tobytes(), time.time()))

    def model(self, version: str) -> np.ndarray | None:
        rows = self._run("SELECT weights FROM models WHERE version = ?", (version,))
        return np.frombuffer(rows[0][0], "<f4").copy() if rows else None

    def _first_model(self, order: str) -> tuple[str, np.ndarray] | None:
        rows = self._run(f"SELECT version, weights FROM models ORDER BY round {order}, created {order} LIMIT 1")
        return (rows[0][0], np.frombuffer(rows[0][1], "<f4").copy()) if rows else None

    def initial_model(self) -> tuple[str, np.ndarray] | None:
        return self._first_model("ASC")

    def latest_model(self) -> tuple[str, np.ndarray] | None:
        return self._first_model("DESC")

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT under the connection lock; ROLLBACK on any exception."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def open_round(self, next_round: tuple[int, str, float, list[str]]) -> None:
        """Open (round, model version, deadline) with its pre-drawn participants (DP sampling), in one transaction."""
        with self._transaction():
            self._insert_round(next_round)

    def _insert_round(self, next_round: tuple[int, str, float, list[str]]) -> None:
        round_index, model_version, deadline, sampled = next_round
        now = time.time()
        self._db.execute("INSERT INTO rounds (round, model_version, state, opened, deadline) VALUES (?, ?, 'open', ?, ?)", (round_index, model_version, now, deadline))
        self._db.executemany("INSERT INTO selections VALUES (?, ?, ?)", [(round_index, device, now) for device in sampled])

    def current_round(self) -> tuple[int, str, float] | None:
        """(round, model_version, deadline) of the open round, if any."""
        rows = self._run("SELECT round, model_version, deadline FROM rounds WHERE state = 'open' ORDER BY round DESC LIMIT 1")
        return rows[0] if rows else None

    def last_round(self) -> int:
        rows = self._run("SELECT MAX(round) FROM rounds")
        return int(rows[0][0] or 0)

    def closed_rounds(self) -> int:
        """Rounds whose aggregate was applied (released), not abandoned ones."""
        return int(self._run("SELECT COUNT(*) FROM rounds WHERE state = 'closed'")[0][0])

    def extend_deadline(self, round_index: int, deadline: float) -> None:
        self._run("UPDATE rounds SET deadline = ? WHERE round = ?", (deadline, round_index))

    def commit_close(
        self, round_index: int, *, record: dict, model: tuple[str, np.ndarray] | None, next_round: tuple[int, str, float, list[str]] | None,
    ) -> bool:
        """One transaction: the new model (if applied), the round closed with its record, the next round opened.

        False (nothing written) if the round is no longer open: a close is never applied twice.
        """
        state = "abandoned" if record["abandoned"] else "closed"
        with self._transaction():
            changed = self._db.execute(
                "UPDATE rounds SET state = ?, closed = ?, selected = ?, reported = ?, rejected = ?, late = ?, record = ? WHERE round = ? AND state = 'open'",
                (state, time.time(), record["invited"], record["reported"], record["rejected"], record["late"], json.dumps(record), round_index),
            ).rowcount
            if changed != 1:
                return False  # the empty transaction commits nothing
            if model is not None:
                self._db.execute("INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?)", (model[0], round_index, model[1].astype("<f4").tobytes(), time.time()))
            if next_round is not None:
                self._insert_round(next_round)
        return True

    def closed_records(self) -> list[dict]:
        """The metrics record of every closed or abandoned round, in round order."""
        return [json.loads(row[0]) for row in self._run("SELECT record FROM rounds WHERE state != 'open' AND record IS NOT NULL ORDER BY round")]

    def select(self, round_index: int, device: str) -> None:
        self._run("INSERT OR IGNORE INTO selections VALUES (?, ?, ?)", (round_index, device, time.time()))

    def selected(self, round_index: int) -> set[str]:
        return {row[0] for row in self._run("SELECT device FROM selections WHERE round = ?", (round_index,))}

    def add_update(self, round_index: int, device: str, weight: float, update: np.ndarray) -> bool:
        """False if this device already has an update in this round (nothing is written)."""
        try:
            self._run("INSERT INTO updates VALUES (?, ?, ?, ?, ?)", (round_index, device, weight, update.astype("<f4").tobytes(), time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def reporters(self, round_index: int) -> set[str]:
        """Devices with an accepted update in the round (without reading the update blobs)."""
        return {row[0] for row in self._run("SELECT device FROM updates WHERE round = ?", (round_index,))}

    def updates(self, round_index: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(devices, weights float64[n], updates float32[n, P]) accepted in the round."""
        rows = self._run("SELECT device, weight, update_vector FROM updates WHERE round = ? ORDER BY device", (round_index,))
        if not rows:
            return [], np.zeros(0), np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.array([r[1] for r in rows]), np.stack([np.frombuffer(r[2], "<f4") for r in rows])

    def reject(self, round_index: int, device: str, reason: str) -> None:
        self._run("INSERT INTO rejections VALUES (?, ?, ?, ?)", (round_index, device, reason, time.time()))

    def rejections(self, round_index: int | None = None) -> list[tuple[int, str, str]]:
        if round_index is None:
            return self._run("SELECT round, device, reason FROM rejections ORDER BY at")
        return self._run("SELECT round, device, reason FROM rejections WHERE round = ? ORDER BY at", (round_index,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
