"""A blocking facade over `AsyncCanfarClient`, for scripts and synchronous plugins.

The async client lives on a private event loop in a daemon thread; each method submits
a coroutine there and waits. One connection pool serves every call, which a facade
built on `asyncio.run` per call could not do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from canfar_core.client import AsyncCanfarClient
from canfar_core.config import CanfarConfig
from canfar_core.context import Context
from canfar_core.models import Event, Image, Session, SessionSpec
from canfar_core.retry import RetryPolicy

T = TypeVar("T")


class CanfarClient:
    """Synchronous Skaha client; same methods as `AsyncCanfarClient`, blocking."""

    def __init__(
        self,
        config: CanfarConfig | None = None,
        *,
        url: str | None = None,
        token: str | SecretStr | None = None,
        certificate: str | Path | None = None,
        verify: str | Path | bool = True,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # The configuration first: a ConfigurationError must not leave a loop thread behind.
        self.aio = AsyncCanfarClient(
            config,
            url=url,
            token=token,
            certificate=certificate,
            verify=verify,
            retry=retry,
            transport=transport,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="canfar-client", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> CanfarClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the pool and stop the loop thread."""
        if self._loop.is_closed():
            return
        self.run(self.aio.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def create(self, spec: SessionSpec, *, validate: bool = True) -> str:
        """Create one session and return its id."""
        return self.run(self.aio.create(spec, validate=validate))

    def create_replicas(self, spec: SessionSpec, replicas: int) -> list[str]:
        """Create `replicas` sessions named `<name>-<i>` (see AsyncCanfarClient.create)."""
        return self.run(self.aio.create(spec, replicas=replicas))

    def list_sessions(self, *, type: str | None = None, status: str | None = None) -> list[Session]:
        """The caller's sessions, optionally filtered."""
        return self.run(self.aio.list_sessions(type=type, status=status))

    def get(self, session_id: str) -> Session:
        """One session."""
        return self.run(self.aio.get(session_id))

    def logs(self, session_id: str) -> str:
        """The session's output."""
        return self.run(self.aio.logs(session_id))

    def events(self, session_id: str) -> list[Event]:
        """The session's events."""
        return self.run(self.aio.events(session_id))

    def delete(self, session_id: str) -> None:
        """Delete a session."""
        self.run(self.aio.delete(session_id))

    def renew(self, session_id: str) -> None:
        """Extend a running session's deadline."""
        self.run(self.aio.renew(session_id))

    def context(self) -> Context:
        """The server's resource options."""
        return self.run(self.aio.context())

    def repositories(self) -> list[str]:
        """Allowed registry hosts."""
        return self.run(self.aio.repositories())

    def images(self, type: str | None = None) -> list[Image]:
        """Images in the server's cache."""
        return self.run(self.aio.images(type))

    def stats(self) -> dict[str, Any]:
        """Platform-wide resource figures."""
        return self.run(self.aio.stats())
