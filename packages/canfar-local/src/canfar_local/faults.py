"""Fault injection: real transport failures for the client's retry logic to face.

A fault matches a method and a route template (``/v1/session``, ``/v1/session/{id}``) and
applies to the next ``count`` matching requests.  It can answer a status instead of handling
the request (503 carries ``Retry-After: 30`` and cadc-rest's ``temporarily unavailable``
body by default), delay the request, or handle it and then drop the connection without an
answer: the "ambiguous create" where the session exists but the client saw an error.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class Fault:
    """One armed fault."""

    method: str
    route: str
    status: int | None = None
    count: int = 1
    retry_after: int | None = None
    delay: float | None = None
    drop_after_handling: bool = False
    body: str | None = None

    def matches(self, method: str, route: str, path: str) -> bool:
        """Whether a request (its route template and concrete path) is targeted."""
        return self.method in ("*", method.upper()) and self.route in ("*", route, path)


class FaultInjector:
    """Thread-safe list of armed faults, consumed first-armed first."""

    def __init__(self, prefix: str = "/skaha") -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._prefix = prefix.rstrip("/")

    def arm(
        self,
        method: str = "*",
        route: str = "*",
        status: int | None = None,
        count: int = 1,
        retry_after: int | None = None,
        delay: float | None = None,
        drop_after_handling: bool = False,
        body: str | None = None,
    ) -> Fault:
        """Arm a fault for the next ``count`` requests matching ``method`` and ``route``."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if status is None and delay is None and not drop_after_handling:
            raise ValueError("a fault needs a status, a delay or drop_after_handling")
        if status is not None and not 100 <= int(status) <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        route = route if route == "*" or route.startswith("/") else "/" + route
        if self._prefix and route.startswith(self._prefix + "/"):
            route = route[len(self._prefix) :]  # accept "/skaha/v1/session" too
        fault = Fault(
            method=method.upper(),
            route=route,
            status=int(status) if status is not None else None,
            count=count,
            retry_after=retry_after,
            delay=delay,
            drop_after_handling=drop_after_handling,
            body=body,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, route: str, path: str = "") -> Fault | None:
        """The fault that applies to this request, if any, using up one of its counts."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, route, path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return Fault(**{**asdict(fault), "count": 1})
        return None

    def clear(self) -> None:
        """Forget every armed fault."""
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, object]]:
        """The armed faults, for the admin route."""
        with self._lock:
            return [asdict(f) for f in self._faults]


class RequestCounters:
    """Requests seen per ``"METHOD /route-template"`` and in total."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {"total": 0}

    def hit(self, method: str, route: str) -> None:
        """Count one request to `route` (and the total)."""
        key = f"{method.upper()} {route}"
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            self._counts["total"] += 1

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self._counts = {"total": 0}
