"""A session's output, held as a bounded head and tail: what messages need, never more.

A job may print gigabytes; a driver watching fifty of them must not hold any of it
whole. `TailBuffer` keeps the first few KiB and the last `limit` bytes of a stream (and
copies the whole stream to a file when asked); `read_file` gets the same from a log
file by seeking, reading only its ends.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

DEFAULT_TAIL_BYTES = 256 * 1024
HEAD_BYTES = 4 * 1024


@dataclass(frozen=True)
class LogCapture:
    """The ends of a log: `tail` (text), `head` (text), whether anything was cut, where."""

    tail: str = ""
    head: str = ""
    truncated: bool = False
    size: int = 0
    path: Path | None = None


def _decode(data: bytes, *, cut_first_line: bool) -> str:
    text = data.decode("utf-8", errors="replace")
    if cut_first_line:
        newline = text.find("\n")
        text = text[newline + 1 :] if newline >= 0 else text
    return text


class TailBuffer:
    """A sink for a streamed log: keeps its head and a bounded tail, may copy it to a file."""

    def __init__(self, limit: int = DEFAULT_TAIL_BYTES, *, path: str | Path | None = None):
        self.limit = limit
        self.path = Path(path) if path is not None else None
        self.size = 0
        self._head = bytearray()
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._file: BinaryIO | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, chunk: bytes) -> None:
        """Take the next piece of the stream."""
        if not chunk:
            return
        self.size += len(chunk)
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        if self._file is not None:
            self._file.write(chunk)
        if len(chunk) > self.limit:
            chunk = chunk[-self.limit :]
            self._chunks.clear()
            self._held = 0
        self._chunks.append(chunk)
        self._held += len(chunk)
        while self._held - len(self._chunks[0]) >= self.limit:
            self._held -= len(self._chunks.popleft())

    def close(self) -> None:
        """Close the copy (if any)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def capture(self) -> LogCapture:
        """What was kept, as text."""
        self.close()
        data = b"".join(self._chunks)
        truncated = self.size > len(data) or len(data) > self.limit
        data = data[-self.limit :]
        return LogCapture(
            tail=_decode(data, cut_first_line=truncated),
            head=_decode(bytes(self._head), cut_first_line=False),
            truncated=truncated,
            size=self.size,
            path=self.path,
        )


def read_file(path: str | Path, limit: int = DEFAULT_TAIL_BYTES) -> LogCapture | None:
    """The head and tail of a log file (None when it cannot be opened)."""
    target = Path(path)
    try:
        handle = open(target, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with contextlib.closing(handle):
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(HEAD_BYTES)
        start = max(0, size - limit)
        handle.seek(start)
        data = handle.read(limit)
    truncated = start > 0
    return LogCapture(
        tail=_decode(data, cut_first_line=truncated),
        head=_decode(head, cut_first_line=False),
        truncated=truncated,
        size=size,
        path=target,
    )
