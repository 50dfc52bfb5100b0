"""Durable session state in SQLite, mirrored in memory.

All reads are served from the in-memory records (a listing of a thousand sessions must not
touch the disk); every state transition is written through to SQLite before the request that
caused it answers, so a server killed at any moment restarts with a consistent picture.  Only
the event-loop thread mutates records, so no locking is needed here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

# Lifecycle phases (the Job/pod state the status is derived from):
QUEUED = "queued"  # suspended by the admission queue: Pending, no startTime, no pod
LAUNCHED = "launched"  # supervisor started, command not yet running: Pending with startTime
RUNNING = "running"  # command running: Running
FINISHED = "finished"  # command ended: Completed / Failed, kept until retention expires
DELETED = "deleted"  # deleted by the user; invisible, waiting for its processes to go
PULL_BACKOFF = "pull-backoff"  # admitted, but its image cannot be pulled: Pending, with events


@dataclass
class SessionRecord:
    """One session: what was asked for and where its Job-like lifecycle stands."""

    id: str
    userid: str
    type: str
    name: str
    image: str
    cores_request: float
    cores_limit: float
    ram_request_gib: float
    ram_limit_gib: float
    fixed: bool
    gpus: int
    argv: list[str]
    env: dict[str, str]
    created: float
    deadline_seconds: int
    seq: int = 0
    phase: str = QUEUED
    start_time: int | None = None
    run_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    supervisor_pid: int | None = None
    supervisor_ticks: int | None = None
    child_pid: int | None = None
    child_ticks: int | None = None
    # A status the platform was told to show whatever happens (a pod stuck Terminating,
    # a lost node's Unknown); None shows the status derived from the lifecycle.
    held_status: str | None = None
    ram_in_use: int | None = field(default=None, metadata={"transient": True})
    cpu_in_use: float | None = field(default=None, metadata={"transient": True})

    @property
    def status(self) -> str:
        """The Skaha status string (SessionBuilder.withStatus on the Job counters)."""
        if self.held_status:
            return self.held_status
        if self.phase == RUNNING:
            return "Running"
        if self.phase == FINISHED:
            return "Completed" if self.exit_code == 0 else "Failed"
        return "Pending"

    @property
    def headless(self) -> bool:
        """True for headless sessions (the ones that run cmd/args/env)."""
        return self.type == "headless"


_PERSISTED = [f for f in fields(SessionRecord) if not f.metadata.get("transient")]
_JSON_COLUMNS = {"argv", "env"}
_BOOL_COLUMNS = {"fixed"}


class SessionStore:
    """SQLite-backed collection of :class:`SessionRecord`, keyed by id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(
            f"{f.name} {'INTEGER PRIMARY KEY' if f.name == 'seq' else ''}".strip()
            for f in _PERSISTED
        )
        self.db.execute(f"CREATE TABLE IF NOT EXISTS sessions ({columns})")
        # A root written by an older version may lack newer columns: add them (NULL).
        existing = {row[1] for row in self.db.execute("PRAGMA table_info(sessions)")}
        for f in _PERSISTED:
            if f.name not in existing:
                self.db.execute(f"ALTER TABLE sessions ADD COLUMN {f.name}")
        self.db.execute("CREATE UNIQUE INDEX IF NOT EXISTS sessions_id ON sessions (id)")
        self.records: dict[str, SessionRecord] = {}
        for row in self.db.execute(
            f"SELECT {', '.join(f.name for f in _PERSISTED)} FROM sessions ORDER BY seq"
        ):
            record = self._from_row(row)
            self.records[record.id] = record

    @staticmethod
    def _from_row(row: tuple[object, ...]) -> SessionRecord:
        values: dict[str, object] = {}
        for f, value in zip(_PERSISTED, row, strict=True):
            if f.name in _JSON_COLUMNS:
                value = json.loads(str(value))
            elif f.name in _BOOL_COLUMNS:
                value = bool(value)
            values[f.name] = value
        return SessionRecord(**values)  # type: ignore[arg-type]

    @staticmethod
    def _to_row(record: SessionRecord) -> list[object]:
        row: list[object] = []
        for f in _PERSISTED:
            value = getattr(record, f.name)
            if f.name in _JSON_COLUMNS:
                value = json.dumps(value)
            elif f.name in _BOOL_COLUMNS:
                value = int(value)
            row.append(value)
        return row

    def add(self, record: SessionRecord) -> None:
        """Insert a new record; assigns ``seq``, the first-come order of admission."""
        names = [f.name for f in _PERSISTED if f.name != "seq"]
        row = [v for f, v in zip(_PERSISTED, self._to_row(record), strict=True) if f.name != "seq"]
        cursor = self.db.execute(
            f"INSERT INTO sessions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            row,
        )
        record.seq = int(cursor.lastrowid or 0)
        self.records[record.id] = record

    def save(self, record: SessionRecord) -> None:
        """Write a changed record through to disk."""
        names = [f.name for f in _PERSISTED if f.name != "id"]
        row = [v for f, v in zip(_PERSISTED, self._to_row(record), strict=True) if f.name != "id"]
        self.db.execute(
            f"UPDATE sessions SET {', '.join(n + ' = ?' for n in names)} WHERE id = ?",
            [*row, record.id],
        )

    def remove(self, session_id: str) -> None:
        """Forget a session entirely."""
        self.records.pop(session_id, None)
        self.db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def get(self, session_id: str) -> SessionRecord | None:
        """One session's record, or None."""
        return self.records.get(session_id)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self.records

    def __iter__(self) -> Iterator[SessionRecord]:
        return iter(list(self.records.values()))

    def close(self) -> None:
        """Close the database."""
        self.db.close()
