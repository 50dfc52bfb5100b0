"""The command's output, shown while it runs.

Two sources. With a shared `--state-dir` the envelope tees the output to
`<state_dir>/<session id>.log`, and that file is read as it grows: no request at all.
Without one, the only source is the logs view (`GET /session/{id}?view=logs`), which
returns the whole log each time and costs the server a `kubectl logs`; it is read for
running sessions only, each at most every `interval` seconds and all together at most
`per_second` times a second, and only the new part is printed.

Only whole lines are printed while a session runs (a partial line waits for its end),
so replicas' lines never mix mid-line; with replicas each line is prefixed with its
replica id, as `srun --label` does. The envelope's exit-code marker line is not shown.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from canfar_core.client import AsyncCanfarClient
from canfar_core.errors import CanfarError
from canfar_core.launch import MARKER, parse_exit_marker
from canfar_core.outcome import Outcome
from canfar_core.phase import Phase

FILE_POLL_SECONDS = 0.25
FILE_CHUNK_BYTES = 1 << 20


def without_marker(line: str) -> str | None:
    """`line` without the envelope's exit-code marker; None when nothing else is left.

    The marker is bookkeeping, not output. It follows the command's output directly,
    so after output that did not end in a newline it shares that last line.
    """
    at = line.rfind(MARKER)
    if at < 0 or parse_exit_marker(line[at:]) is None:
        return line
    return line[:at] or None


def command_output(text: str) -> str:
    """`text` without the envelope's marker."""
    kept = (without_marker(line) for line in text.split("\n"))
    return "\n".join(line for line in kept if line is not None)


class Output:
    """Where output lines go, with the replica prefix when there are replicas.

    When the reader goes away (`canfar-run ... | head -1`), the rest of the output is
    dropped and the run goes on: its exit code and report still matter, and the
    sessions must still be waited for (or deleted), not abandoned with a traceback.
    """

    def __init__(self, stream: TextIO, *, width: int | None) -> None:
        self.stream = stream
        self.width = width
        self.closed = False

    def line(self, label: int, text: str) -> None:
        """Write one line of replica `label`'s output."""
        shown = without_marker(text)
        if shown is None:
            return
        prefix = f"{label:>{self.width}}: " if self.width else ""
        if not self.closed:
            try:
                self.stream.write(f"{prefix}{shown}\n")
            except (BrokenPipeError, ValueError):
                self._reader_gone()

    def flush(self) -> None:
        """Flush after a batch of lines."""
        if not self.closed:
            try:
                self.stream.flush()
            except (BrokenPipeError, ValueError):
                self._reader_gone()

    def _reader_gone(self) -> None:
        self.closed = True
        # Point the descriptor at /dev/null, so the interpreter's own flush at exit
        # does not fail again on what is still buffered.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)


@dataclass
class Follow:
    """One session's output as far as it has been shown."""

    label: int
    session_id: str
    offset: int = 0
    partial: str = ""
    next_read: float = 0.0
    done: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )


class LogStreamer:
    """Show the output of followed sessions as they run (see the module docstring)."""

    def __init__(
        self,
        client: AsyncCanfarClient,
        output: Output,
        *,
        state_dir: str | None,
        phase_of: Callable[[str], Phase | None],
        interval: float,
        per_second: float,
        say: Callable[[str], None],
    ) -> None:
        self.client = client
        self.output = output
        self.state_dir = Path(state_dir) if state_dir else None
        self.phase_of = phase_of
        self.interval = interval
        self.per_second = per_second
        self.say = say
        self._follows: dict[str, Follow] = {}
        self.requests = 0
        # One tick per 1/per_second (at least 0.1 s), with as many reads per tick as
        # keep the rate.
        self._tick = FILE_POLL_SECONDS if self.state_dir else max(0.1, 1.0 / per_second)
        self._budget = max(1, int(per_second * self._tick))

    def follow(self, label: int, session_id: str) -> Follow:
        """Start showing a session's output."""
        entry = Follow(label, session_id)
        self._follows[session_id] = entry
        return entry

    async def run(self) -> None:
        """Read the followed sessions until cancelled."""
        while True:
            started = time.monotonic()
            due = self._due(started)
            if due:
                await asyncio.gather(*(self._read(f) for f in due))
                self.output.flush()
            await asyncio.sleep(max(0.0, self._tick - (time.monotonic() - started)))

    def _due(self, now: float) -> list[Follow]:
        live = [f for f in self._follows.values() if not f.done]
        if self.state_dir is not None:
            return live
        running = [
            f for f in live if f.next_read <= now and self.phase_of(f.session_id) is Phase.RUNNING
        ]
        running.sort(key=lambda f: f.next_read)
        return running[: self._budget]

    async def _read(self, entry: Follow) -> None:
        async with entry.lock:
            if entry.done:
                return
            if self.state_dir is not None:
                self._emit(entry, self._read_file(entry))
                return
            entry.next_read = time.monotonic() + self.interval
            try:
                self.requests += 1
                text = await self.client.logs(entry.session_id)
            except CanfarError:
                return  # shown on a later read, or from the final log
            if entry.done:
                return
            self._emit_view(entry, text)

    def _emit_view(self, entry: Follow, text: str) -> None:
        if len(text) < entry.offset:
            # The pod was replaced (Kueue preemption restarts a Job from scratch).
            self.say(
                f"canfar-run: the output of session {entry.session_id} started over "
                "(the session was restarted)."
            )
            entry.offset, entry.partial = 0, ""
        self._emit(entry, text[entry.offset :])
        entry.offset = len(text)

    def _read_file(self, entry: Follow) -> str:
        assert self.state_dir is not None
        path = self.state_dir / f"{entry.session_id}.log"
        try:
            with open(path, "rb") as handle:
                handle.seek(entry.offset)
                data = handle.read(FILE_CHUNK_BYTES)
        except OSError:
            return ""
        entry.offset += len(data)
        return entry.decoder.decode(data)

    def _emit(self, entry: Follow, new: str) -> None:
        if not new:
            return
        lines = (entry.partial + new).split("\n")
        entry.partial = lines.pop()
        for line in lines:
            self.output.line(entry.label, line.rstrip("\r"))

    async def finish(self, entry: Follow, outcome: Outcome | None) -> None:
        """Show the rest of a finished session's output, then stop following it."""
        async with entry.lock:
            entry.done = True
            if self.state_dir is not None:
                while text := self._read_file(entry):
                    self._emit(entry, text)
                self._emit(entry, entry.decoder.decode(b"", final=True))
            else:
                await self._final_view(entry, outcome)
            if entry.partial:
                self.output.line(entry.label, entry.partial)
                entry.partial = ""
            self.output.flush()
        self._follows.pop(entry.session_id, None)

    async def _final_view(self, entry: Follow, outcome: Outcome | None) -> None:
        """The whole log once more (listed sessions keep it for an hour), else what the
        tracker saved: `outcome.logs` may be only a tail, so it is used only when it
        is at least as long as what was shown."""
        text = ""
        with contextlib.suppress(CanfarError):
            self.requests += 1
            text = await self.client.logs(entry.session_id)
        saved = outcome.logs if outcome is not None else ""
        if len(text) < entry.offset and len(saved) >= entry.offset:
            text = saved
        if len(text) >= entry.offset:
            self._emit(entry, text[entry.offset :])
            entry.offset = len(text)
