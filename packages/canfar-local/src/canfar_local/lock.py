"""One live server per state root.

Two servers sharing a root would both adopt, admit and expire the same sessions.  An
exclusive ``flock`` on ``<root>/platform.lock`` prevents it; the kernel releases the lock
when the holder dies, even by SIGKILL, so a crashed server never blocks its successor.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import RootInUseError


class RootLock:
    """An exclusive, non-blocking lock on a platform root, recording the holder's pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "platform.lock"
        self._fd: int | None = None

    def acquire(self) -> RootLock:
        """Take the root's lock, or fail naming the root and the pid that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RootInUseError(self.root, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
