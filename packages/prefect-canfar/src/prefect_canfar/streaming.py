"""`stream_output`: copy a session's output to the worker's stdout while it runs.

With a `state_dir` the output is read from the log file the envelope tees there (no
API requests at all); otherwise from the session's log view every
`stream_interval_seconds`. This is opt-in because, unlike the tracker, it costs one
request per streamed session per interval. Flow-run logs reach Prefect on their own:
the engine in the session sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TextIO

from canfar_core import AsyncCanfarClient, CanfarError


class OutputStreamer:
    """Print new output of one session until stopped, then the rest of it."""

    def __init__(
        self,
        client: AsyncCanfarClient,
        session_id: str,
        *,
        state_dir: str | None,
        interval: float,
        out: TextIO | None = None,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.log_file = Path(state_dir) / f"{session_id}.log" if state_dir else None
        self.interval = interval
        self.out = out or sys.stdout
        self.printed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin streaming in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="canfar-stream")

    async def stop(self, final_output: str | None = None) -> None:
        """Stop streaming and print whatever of `final_output` was not printed yet."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if final_output is not None:
            self._emit(final_output)

    async def _run(self) -> None:
        while True:
            text = await self._read()
            if text is not None:
                self._emit(text)
            await asyncio.sleep(self.interval)

    async def _read(self) -> str | None:
        if self.log_file is not None:
            try:
                return await asyncio.to_thread(
                    self.log_file.read_text, encoding="utf-8", errors="replace"
                )
            except OSError:
                return None
        try:
            return await self.client.logs(self.session_id)
        except CanfarError:
            return None

    def _emit(self, text: str) -> None:
        """Print the complete lines of `text` beyond what was printed already."""
        end = text.rfind("\n") + 1
        if end <= self.printed:
            return
        self.out.write(text[self.printed : end])
        self.out.flush()
        self.printed = end
