"""Coordinator state in SQLite: a restarted coordinator resumes the open round with its accepted updates.

Aggregation streams: the round's running weighted sum is checkpointed here every
``checkpoint_every`` accepted updates (CoordinatorConfig), and each accepted update is committed as its signed
payload (about 1.3 KB rotated 1-bit) before the device hears "accepted"; a checkpoint folds the
payloads since the last one into the sum and drops them. So a kill -9 loses nothing a device
was told was counted (restart: the checkpointed sum plus the payloads after it, decoded again),
while neither memory nor the file holds a round's updates one by one. Closing a round is one
transaction (the new model, the closed round with its metrics record, the next open round, and
the retention: the closed round's sum, reports, selections and rejections, and models older
than the last ``KEEP_MODELS``), so a kill -9 anywhere in a close applies the round exactly
once and the file stops growing. Devices appear by their id (``identity.device_id``), never by token.

Durability: every commit survives a kill -9 of the process (WAL, written before the commit
returns). Power loss is covered by fsync (``synchronous=FULL``) only where it is cheap: each
checkpoint of the running sum, each close and each opened round. The frequent commits (an
accepted update, a check-in's selection, a rejection) are not fsynced one by one
(``NORMAL``): an fsync per upload took a fifth of the serving thread at 10,000 devices and
held every check-in behind it. So a power cut can lose at most the updates accepted since
the last checkpoint (fewer than ``checkpoint_every``; they then count as dropped) and a few
selections (those devices are refused as not selected); it never applies anything twice.
"""
from __future__ import annotations

import collections
import contextlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

KEEP_MODELS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (version TEXT PRIMARY KEY, round INTEGER NOT NULL, weights BLOB NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY, model_version TEXT NOT NULL, state TEXT NOT NULL, opened REAL NOT NULL, deadline REAL NOT NULL,
    closed REAL, selected INTEGER DEFAULT 0, reported INTEGER DEFAULT 0, rejected INTEGER DEFAULT 0, late INTEGER DEFAULT 0,
    record TEXT
);
CREATE TABLE IF NOT EXISTS selections (round INTEGER NOT NULL, device TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (round, device));
CREATE TABLE IF NOT EXISTS reports (
    round INTEGER NOT NULL, device TEXT NOT NULL, examples INTEGER NOT NULL, weight REAL NOT NULL, payload BLOB, at REAL NOT NULL,
    PRIMARY KEY (round, device)
);
CREATE TABLE IF NOT EXISTS sums (round INTEGER PRIMARY KEY, total BLOB NOT NULL, weight REAL NOT NULL);
CREATE TABLE IF NOT EXISTS rejections (round INTEGER NOT NULL, device TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS secure_phases (round INTEGER PRIMARY KEY, phase TEXT NOT NULL, deadline REAL NOT NULL, threshold INTEGER, bits INTEGER);
CREATE TABLE IF NOT EXISTS secure_keys (
    round INTEGER NOT NULL, device TEXT NOT NULL, point INTEGER, cipher_public BLOB NOT NULL, mask_public BLOB NOT NULL, PRIMARY KEY (round, device)
);
CREATE TABLE IF NOT EXISTS secure_shares (
    round INTEGER NOT NULL, owner TEXT NOT NULL, holder TEXT NOT NULL, sealed BLOB NOT NULL, seed_commitment BLOB NOT NULL, key_commitment BLOB NOT NULL,
    PRIMARY KEY (round, owner, holder)
);
CREATE INDEX IF NOT EXISTS secure_shares_by_holder ON secure_shares (round, holder);
CREATE TABLE IF NOT EXISTS secure_reveals (
    round INTEGER NOT NULL, holder TEXT NOT NULL, owner TEXT NOT NULL, secret TEXT NOT NULL, share BLOB NOT NULL, PRIMARY KEY (round, holder, owner)
);
"""
SECURE_TABLES = ("secure_phases", "secure_keys", "secure_shares", "secure_reveals")


class CoordinatorStore:
    """Thread-safe access to the coordinator's SQLite file (one connection, one lock)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA journal_size_limit=16777216")  # the WAL shrinks back after checkpoints
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
    def _transaction(self, *, durable: bool = True):
        """BEGIN IMMEDIATE ... COMMIT under the connection lock (fsynced if ``durable``); ROLLBACK on any exception."""
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

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
            for table in ("sums", "reports", "selections", "rejections", *SECURE_TABLES):  # the record keeps their counts
                self._db.execute(f"DELETE FROM {table} WHERE round <= ?", (round_index,))
            self._db.execute(  # round 0's model and the newest KEEP_MODELS stay
                "DELETE FROM models WHERE round > 0 AND version NOT IN (SELECT version FROM models ORDER BY round DESC, created DESC LIMIT ?)", (KEEP_MODELS,))
            if next_round is not None:
                self._insert_round(next_round)
        self._run("PRAGMA wal_checkpoint(TRUNCATE)")  # the closed round's rows leave the WAL too: the files hold only live state
        return True

    def closed_records(self) -> list[dict]:
        """The metrics record of every closed or abandoned round, in round order."""
        return [json.loads(row[0]) for row in self._run("SELECT record FROM rounds WHERE state != 'open' AND record IS NOT NULL ORDER BY round")]

    def select(self, round_index: int, device: str) -> None:
        self._run("INSERT OR IGNORE INTO selections VALUES (?, ?, ?)", (round_index, device, time.time()))

    def selected(self, round_index: int) -> set[str]:
        return {row[0] for row in self._run("SELECT device FROM selections WHERE round = ?", (round_index,))}

    def add_report(self, round_index: int, device: str, examples: int, weight: float, payload: bytes) -> bool:
        """Commit an accepted update as its payload; False (nothing written) if the device already reported."""
        try:
            with self._transaction(durable=False):
                self._db.execute("INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?)", (round_index, device, examples, weight, payload, time.time()))
        except sqlite3.IntegrityError:
            return False
        return True

    def checkpoint(self, round_index: int, total: np.ndarray, weight: float) -> None:
        """The running sum of every report so far, and their payloads dropped, in one transaction."""
        with self._transaction():  # the fsync also covers the updates accepted since the last one
            self._db.execute("INSERT OR REPLACE INTO sums VALUES (?, ?, ?)", (round_index, total.astype("<f8").tobytes(), weight))
            self._db.execute("UPDATE reports SET payload = NULL WHERE round = ? AND payload IS NOT NULL", (round_index,))

    def running_sum(self, round_index: int) -> tuple[np.ndarray | None, float, list[tuple[str, float, bytes]]]:
        """(checkpointed sum or None, its weight, [(device, weight, payload)] accepted after it)."""
        with self._lock:
            rows = self._db.execute("SELECT total, weight FROM sums WHERE round = ?", (round_index,)).fetchall()
            pending = self._db.execute("SELECT device, weight, payload FROM reports WHERE round = ? AND payload IS NOT NULL ORDER BY at", (round_index,)).fetchall()
        total, weight = (np.frombuffer(rows[0][0], "<f8").copy(), float(rows[0][1])) if rows else (None, 0.0)
        return total, weight, pending

    def reporters(self, round_index: int) -> set[str]:
        """Devices with an accepted update in the round."""
        return {row[0] for row in self._run("SELECT device FROM reports WHERE round = ?", (round_index,))}

    def selected_count(self, round_index: int) -> int:
        return int(self._run("SELECT COUNT(*) FROM selections WHERE round = ?", (round_index,))[0][0])

    def report_count(self, round_index: int) -> int:
        return int(self._run("SELECT COUNT(*) FROM reports WHERE round = ?", (round_index,))[0][0])

    def claimed_examples(self, round_index: int) -> np.ndarray:
        """int64[n]: the example counts the round's reporters claimed."""
        return np.array([row[0] for row in self._run("SELECT examples FROM reports WHERE round = ?", (round_index,))], np.int64)

    def reject(self, round_index: int, device: str, reason: str) -> None:
        self._run("INSERT INTO rejections VALUES (?, ?, ?, ?)", (round_index, device, reason, time.time()))

    def rejections(self, round_index: int | None = None) -> list[tuple[int, str, str]]:
        if round_index is None:
            return self._run("SELECT round, device, reason FROM rejections ORDER BY at")
        return self._run("SELECT round, device, reason FROM rejections WHERE round = ? ORDER BY at", (round_index,))

    def rejections_by_reason(self, round_index: int | None = None) -> collections.Counter:
        """Stored rejections counted by the kind of reason (the text before its first colon)."""
        return collections.Counter(reason.split(":")[0] for _, _, reason in self.rejections(round_index))

    # -- secure aggregation (secure_rounds.py) ------------------------------------------
    def secure_phase(self, round_index: int) -> tuple[str, float, int | None, int | None] | None:
        """(phase, deadline, threshold, bits) of a secure round, None before its first step."""
        rows = self._run("SELECT phase, deadline, threshold, bits FROM secure_phases WHERE round = ?", (round_index,))
        return rows[0] if rows else None

    def set_secure_phase(self, round_index: int, phase: str, deadline: float, *, threshold: int | None = None, bits: int | None = None, points: list[tuple[int, str]] = ()) -> None:
        """Move a secure round to ``phase`` (and, when the cohort is fixed, give its members their points), durably."""
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO secure_phases VALUES (?, ?, ?, ?, ?)", (round_index, phase, deadline, threshold, bits))
            self._db.executemany("UPDATE secure_keys SET point = ? WHERE round = ? AND device = ?", [(point, round_index, device) for point, device in points])

    def add_secure_keys(self, round_index: int, device: str, cipher_public: bytes, mask_public: bytes) -> tuple[bytes, bytes]:
        """Record a device's advertised keys (the first ones stay); returns the keys on record."""
        with self._transaction(durable=False):
            self._db.execute("INSERT OR IGNORE INTO secure_keys VALUES (?, ?, NULL, ?, ?)", (round_index, device, cipher_public, mask_public))
            return self._db.execute("SELECT cipher_public, mask_public FROM secure_keys WHERE round = ? AND device = ?", (round_index, device)).fetchone()

    def secure_keys(self, round_index: int) -> dict[str, tuple[int | None, bytes, bytes]]:
        """device -> (point, cipher public key, mask public key) of every advertiser."""
        return {row[0]: tuple(row[1:]) for row in self._run("SELECT device, point, cipher_public, mask_public FROM secure_keys WHERE round = ?", (round_index,))}

    def add_secure_shares(self, round_index: int, owner: str, shares: list[tuple[str, bytes, bytes, bytes]]) -> None:
        """An owner's sealed shares, (holder, sealed, seed commitment, key commitment) each, in one transaction."""
        with self._transaction(durable=False):
            self._db.executemany("INSERT INTO secure_shares VALUES (?, ?, ?, ?, ?, ?)", [(round_index, owner, *share) for share in shares])

    def secure_shares(self, round_index: int, *, holder: str | None = None) -> list[tuple[str, str, bytes, bytes, bytes]]:
        """(owner, holder, sealed, seed commitment, key commitment) rows, all or those sealed to ``holder``."""
        if holder is None:
            return self._run("SELECT owner, holder, sealed, seed_commitment, key_commitment FROM secure_shares WHERE round = ?", (round_index,))
        return self._run("SELECT owner, holder, sealed, seed_commitment, key_commitment FROM secure_shares WHERE round = ? AND holder = ?", (round_index, holder))

    def add_secure_reveals(self, round_index: int, holder: str, reveals: list[tuple[str, str, bytes]]) -> bool:
        """A holder's revealed shares, (owner, secret, share) each; False (nothing written) if it has revealed before."""
        try:
            with self._transaction(durable=False):
                self._db.executemany("INSERT INTO secure_reveals VALUES (?, ?, ?, ?, ?)", [(round_index, holder, *reveal) for reveal in reveals])
        except sqlite3.IntegrityError:
            return False
        return True

    def secure_reveals(self, round_index: int) -> list[tuple[str, str, str, bytes]]:
        """(holder, owner, secret, share) rows."""
        return self._run("SELECT holder, owner, secret, share FROM secure_reveals WHERE round = ?", (round_index,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
