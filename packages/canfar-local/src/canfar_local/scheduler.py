"""Admission: the local stand-in for Kueue holding Jobs suspended until quota frees.

Sessions are considered first-come (creation order).  Each is admitted when its *requested*
cores and RAM fit in what the admitted sessions leave of the machine capacity; one that does
not fit stays queued without blocking smaller ones behind it (Kueue's default
``BestEffortFIFO``).  A queued session is ``Pending`` with no ``startTime`` and no pod.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .store import LAUNCHED, PULL_BACKOFF, QUEUED, RUNNING, SessionRecord

EPSILON = 1e-9


@dataclass
class Usage:
    """Requested resources of the admitted (launched or running) sessions."""

    cores: float = 0.0
    ram_gib: float = 0.0


def usage_of(records: Iterable[SessionRecord]) -> Usage:
    """Sum the requests of every session that holds quota."""
    usage = Usage()
    for record in records:
        if record.phase in (LAUNCHED, RUNNING, PULL_BACKOFF):
            usage.cores += record.cores_request
            usage.ram_gib += record.ram_request_gib
    return usage


def admissible(
    records: Iterable[SessionRecord], capacity_cores: float, capacity_ram_gib: float
) -> list[SessionRecord]:
    """The queued sessions to admit now, in order, given the capacity."""
    ordered = sorted(records, key=lambda r: r.seq)
    usage = usage_of(ordered)
    admitted: list[SessionRecord] = []
    for record in ordered:
        if record.phase != QUEUED:
            continue
        cores = usage.cores + record.cores_request
        ram = usage.ram_gib + record.ram_request_gib
        if cores <= capacity_cores + EPSILON and ram <= capacity_ram_gib + EPSILON:
            usage.cores, usage.ram_gib = cores, ram
            admitted.append(record)
    return admitted
