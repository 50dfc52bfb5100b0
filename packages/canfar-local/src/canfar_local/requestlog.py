"""The platform's request log: one JSON line per request, as an operator would keep.

It records what Tomcat's access log and cadc-rest's ``LogInfo`` record on the real
service: the time, caller, method, path *with its query string*, status and duration.
Request bodies and headers are not logged (neither service logs them), so a client that
sends parameters in the query string, as the official client does with ``env``, leaves
them here, and one that posts a form body does not.  Tests read it to prove that no
secret reaches an operator's log.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO


class RequestLog:
    """Append-only JSON-lines file ``<root>/requests.log``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: TextIO | None = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def write(
        self,
        *,
        method: str,
        target: str,
        user: str | None,
        peer: str | None,
        status: int | None,
        started: float,
        agent: str | None,
    ) -> None:
        """Append one request; ``status`` None means the connection was dropped."""
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "method": method,
            "path": target,
            "user": user,
            "from": peer,
            "status": status,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "agent": agent,
        }
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self._lock:
            if self._handle is not None:
                self._handle.write(line)

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
