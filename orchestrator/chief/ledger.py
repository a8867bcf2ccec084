"""The ledger: an append-only SQLite log of trial events, the search's source of truth.

Schema (see docs/architecture.md):

- ``meta(key, value)``: search id, the frozen specs as JSON, the schema version.
- ``events(seq, ts, kind, trial_id, attempt, worker_id, payload)``: one row per
  transition. Rows are only ever inserted, so the cost per event is O(1) no
  matter how many trials came before (Keras Tuner rewrites oracle.json, O(n),
  on every trial).
- ``oracle_snapshot(id=1, seq, state)``: the oracle's own decision state
  (Hyperband brackets, seed state, grid cursor) as of event ``seq``. It is
  upserted in the same transaction as the event that changed it, so a snapshot
  is never ahead of or behind the events it belongs to.

Durability: WAL mode. ``synchronous=NORMAL`` (the default) makes every commit
durable against a crash of the chief process, the failure we promise to
survive; only an OS crash or power loss can drop the last commits, and those
are in-flight trials that resume re-runs anyway. ``FULL`` fsyncs each commit;
BENCHMARKS.md gives the measured cost of both.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.chief.events import (
    SCHEMA_VERSION,
    RecordedEvent,
    Row,
    TrialEvent,
    decoder_for,
)
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import LedgerError

LEDGER_FILE_NAME = "ledger.db"
# The ledger holds every lease token in clear: only its owner may read it. The
# -wal and -shm files SQLite creates beside it get the database file's mode
# (its unix VFS copies it), and are chmod'ed as well in case they already existed.
LEDGER_FILE_MODE = 0o600
_SIDE_FILES = ("-wal", "-shm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    trial_id TEXT,
    attempt INTEGER,
    worker_id TEXT,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS oracle_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    state TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Appended:
    """Where an append landed: the last seq and the commit time of its events."""

    last_seq: int
    ts: float


class Ledger:
    """Append-only event log in ``<search_dir>/ledger.db``.

    Thread safety: one connection, guarded by a lock; every public method is
    safe to call from any thread. Each ``append`` is one committed transaction,
    so when it returns the event is durable (see module docstring).
    """

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        synchronous: str = "NORMAL",
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        if synchronous not in ("NORMAL", "FULL"):
            raise LedgerError(
                f"ledger synchronous mode must be NORMAL or FULL, got {synchronous!r}"
            )
        if read_only:
            if not self.path.exists():
                raise LedgerError(
                    f"{self.path}: no ledger here; expected a search directory made by `ktc submit`."
                )
            uri = f"file:{self.path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                _create(self.path)
            os.chmod(self.path, LEDGER_FILE_MODE)  # an older, looser ledger is tightened (resume)
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.executescript(_SCHEMA)  # IF NOT EXISTS: a ledger of before a table
            for suffix in _SIDE_FILES:
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    os.chmod(side, LEDGER_FILE_MODE)
        self._read_only = read_only

    # ------------------------------------------------------------------ meta

    def set_meta(self, values: Mapping[str, Any]) -> None:
        """Store search-level facts (JSON-encoded), in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in values.items()],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def meta(self) -> dict[str, Any]:
        """All search-level facts."""
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM meta").fetchall()
        return {key: json.loads(value) for key, value in rows}

    # ---------------------------------------------------------------- events

    def append(
        self, events: Sequence[TrialEvent], *, snapshot: Mapping[str, Any] | None = None
    ) -> Appended:
        """Commit ``events`` in one transaction (and, atomically with them, the
        oracle snapshot); return the last seq and the commit time they carry."""
        if self._read_only:
            raise LedgerError(f"{self.path}: opened read-only")
        if not events:
            raise LedgerError("append needs at least one event")
        ts = self._clock.wall()
        rows = [(ts, event.kind.value, *event.encode()) for event in events]
        snapshot_text = json.dumps(snapshot, allow_nan=False) if snapshot is not None else None
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                last_seq = 0
                for row in rows:
                    cursor = self._conn.execute(
                        "INSERT INTO events(ts, kind, trial_id, attempt, worker_id, payload) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        row,
                    )
                    last_seq = int(cursor.lastrowid or 0)
                if snapshot_text is not None:
                    self._conn.execute(
                        "INSERT OR REPLACE INTO oracle_snapshot(id, seq, state) VALUES (1, ?, ?)",
                        (last_seq, snapshot_text),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return Appended(last_seq=last_seq, ts=ts)

    def rows(self, *, after_seq: int = 0) -> Iterator[Row]:
        """Every raw row after ``after_seq``, in commit order (undecoded)."""
        with self._lock:
            fetched = self._conn.execute(
                "SELECT seq, ts, kind, trial_id, attempt, worker_id, payload FROM events "
                "WHERE seq > ? ORDER BY seq",
                (after_seq,),
            ).fetchall()
        for seq, ts, kind, trial_id, attempt, worker_id, payload in fetched:
            yield Row(seq, ts, kind, trial_id, attempt, worker_id, payload)

    def schema_version(self) -> int:
        """The schema the events were written in (1: ledgers from before typed
        events); a version this code cannot read raises :class:`LedgerError`."""
        value = self.meta().get("schema_version", SCHEMA_VERSION)
        decoder_for(value, source=str(self.path))
        return int(value)

    def migrate(self) -> int:
        """Rewrite a schema-1 ledger's rows as typed events, in one transaction;
        returns the version it was at. A row that does not decode raises
        :class:`LedgerError` naming its seq, and nothing is changed."""
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return SCHEMA_VERSION
        decode = decoder_for(version, source=str(self.path))
        updates = []
        for row in self.rows():
            event = decode(row)
            trial_id, attempt, worker_id, payload = event.encode()
            updates.append((trial_id, attempt, worker_id, payload, row.seq))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "UPDATE events SET trial_id = ?, attempt = ?, worker_id = ?, payload = ? "
                    "WHERE seq = ?",
                    updates,
                )
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (json.dumps(SCHEMA_VERSION),),
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return int(version)

    def events(self, *, after_seq: int = 0) -> Iterator[RecordedEvent]:
        """Every event after ``after_seq``, typed, in commit order.

        Raises :class:`LedgerError` naming the seq of the first row that does
        not decode.
        """
        decode = decoder_for(self.schema_version(), source=str(self.path))
        for row in self.rows(after_seq=after_seq):
            yield RecordedEvent(seq=row.seq, ts=row.ts, event=decode(row))

    def count(self) -> int:
        """How many events the ledger holds."""
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM events").fetchone()
        return int(n)

    def latest_snapshot(self) -> tuple[int, dict[str, Any]] | None:
        """The oracle snapshot and the seq of the event it belongs to."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, state FROM oracle_snapshot WHERE id = 1"
            ).fetchone()
        if row is None:
            return None
        return int(row[0]), json.loads(row[1])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create(path: Path) -> None:
    """A new ledger, whole: its schema written in a 0600 file beside ``path`` and
    renamed into place, so a reader (``ktc status``, ``ktc report``) that opens
    the search directory as the chief starts finds no ledger yet or a complete
    one, never an empty file without tables."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp_name, isolation_level=None)
        try:
            conn.executescript(_SCHEMA)
            # A new ledger is written in this schema (old ones carry their own).
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                (json.dumps(SCHEMA_VERSION),),
            )
        finally:
            conn.close()
        os.rename(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
