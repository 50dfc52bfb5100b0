"""Split work across replicas, on the session side.

Same 1-based semantics as the official client's helpers (`REPLICA_ID`, `REPLICA_COUNT`,
both defaulting to 1), but the inputs are validated: the official `stripe` silently
yields nothing for a replica out of range, which hides a mis-numbered replica's work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def replica_position(replica: int | None = None, total: int | None = None) -> tuple[int, int]:
    """(replica, total), from the arguments or `REPLICA_ID`/`REPLICA_COUNT`, validated."""
    replica = replica if replica is not None else int(os.environ.get("REPLICA_ID", "1"))
    total = total if total is not None else int(os.environ.get("REPLICA_COUNT", "1"))
    if total < 1:
        raise ValueError(f"REPLICA_COUNT={total} is not allowed: it must be at least 1.")
    if not 1 <= replica <= total:
        raise ValueError(f"REPLICA_ID={replica} is not allowed: it must be in 1..{total}.")
    return replica, total


def stripe(items: Iterable[T], replica: int | None = None, total: int | None = None) -> Iterator[T]:
    """Every `total`-th item, starting at item `replica - 1`."""
    replica, total = replica_position(replica, total)
    return islice(items, replica - 1, None, total)


def chunk(items: Iterable[T], replica: int | None = None, total: int | None = None) -> list[T]:
    """A contiguous chunk: `n // total` items each, the remainder to the last replica.

    With fewer items than replicas, replica i gets item i-1 or nothing.
    """
    replica, total = replica_position(replica, total)
    data = list(items)
    size = len(data) // total
    if size == 0:
        return data[replica - 1 : replica]
    start = (replica - 1) * size
    end = len(data) if replica == total else start + size
    return data[start:end]
