"""The run ledger: which sessions this workflow directory started and has not seen end.

When Snakemake dies (SIGKILL, a lost notebook, a closed laptop) its sessions keep
running on CANFAR. On restart, Snakemake wants to run the same jobs again; submitting
them would run every job twice, writing the same files concurrently. Snakemake records
an external job id with each incomplete output, but not when it is told
`--rerun-incomplete`, and not before the job registers. The ledger fills the gap: one
JSON line per submitted and per finished session, keyed by the job's output files, so
a restarted process can find a still-running session for the job it is about to submit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"


def job_key(outputs: Iterable[object]) -> str:
    """A stable key for a job across Snakemake processes: its sorted output paths."""
    text = "\n".join(sorted(str(o) for o in outputs))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class RunLedger:
    """Append-only JSON lines at `<state dir>/ledger.jsonl`.

    Records: `{"op": "submit", "key", "session", "name", "run", "fingerprint", "t"}` and
    `{"op": "done", "session", "t"}`. Torn last lines (a kill mid-write) are ignored.
    The fingerprint (`fingerprint.job_fingerprint`) says which code and request the
    session runs; a record without one (written before it existed) matches nothing.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LEDGER_NAME
        self._lock = threading.Lock()
        self._open: dict[str, dict[str, object]] = {}
        self._load()

    def _load(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("Cannot read the run ledger %s (%s); starting empty.", self.path, exc)
            return
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            session = record.get("session")
            if not isinstance(session, str):
                continue
            if record.get("op") == "submit":
                self._open[session] = record
            elif record.get("op") == "done":
                self._open.pop(session, None)

    def open_sessions(self, key: str, *, exclude_run: str | None = None) -> list[str]:
        """Sessions started for `key` that were never recorded as finished, newest first.

        `exclude_run` leaves out the sessions a given run started (the current one).
        """
        with self._lock:
            found = [
                r
                for r in self._open.values()
                if r.get("key") == key and (exclude_run is None or r.get("run") != exclude_run)
            ]
        found.sort(key=lambda r: float(r.get("t", 0)), reverse=True)  # type: ignore[arg-type]
        return [str(r["session"]) for r in found]

    @property
    def open_count(self) -> int:
        """How many sessions are open."""
        with self._lock:
            return len(self._open)

    def fingerprint(self, session_id: str) -> str | None:
        """The fingerprint recorded for an open session, if any."""
        with self._lock:
            value = (self._open.get(session_id) or {}).get("fingerprint")
        return value if isinstance(value, str) else None

    def record_submit(
        self, key: str, session_id: str, name: str, run_id: str, fingerprint: str | None = None
    ) -> None:
        """Note a created (or adopted) session before anything else can happen to it."""
        record = {
            "op": "submit",
            "key": key,
            "session": session_id,
            "name": name,
            "run": run_id,
            "fingerprint": fingerprint,
            "t": time.time(),
        }
        with self._lock:
            self._open[session_id] = record
            self._append(record)

    def record_done(self, session_id: str) -> None:
        """Note that a session's outcome has been reported."""
        with self._lock:
            if self._open.pop(session_id, None) is None:
                return
            self._append({"op": "done", "session": session_id, "t": time.time()})

    def compact(self, alive: set[str] | None = None) -> None:
        """Rewrite the file with only the open sessions (keeps it small across runs).

        With `alive`, open sessions not in it (they ended or vanished while no
        Snakemake watched) are dropped too.
        """
        with self._lock:
            if alive is not None:
                self._open = {k: v for k, v in self._open.items() if k in alive}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "w", encoding="utf-8") as handle:
                    for record in self._open.values():
                        handle.write(json.dumps(record) + "\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("Cannot compact the run ledger %s (%s).", self.path, exc)
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def _append(self, record: dict[str, object]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            log.warning("Cannot write the run ledger %s (%s).", self.path, exc)
