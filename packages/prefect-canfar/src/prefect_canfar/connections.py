"""One CANFAR client and one session tracker per server and identity, for a worker's life.

The tracker is what keeps a worker's load on the Skaha API flat: all the runs a worker
watches on one server, as one user, are resolved from a single `GET /session` per tick,
however many there are. Runs with different credentials or servers get their own
tracker (they see different session lists). Private-image credentials only matter when
a session is created, so they select a creating client but share the tracker.

Everything here lives on the worker's event loop (the tracker is bound to the loop it
first runs on); `kill_infrastructure` called from another loop uses a short-lived
client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass

from canfar_core import (
    AsyncCanfarClient,
    CanfarConfig,
    SessionTracker,
    events_timing,
    resolve_config,
    runs_on_this_machine,
)
from pydantic import SecretStr

from prefect_canfar.configuration import CanfarWorkerJobConfiguration
from prefect_canfar.settings import CanfarWorkerSettings

log = logging.getLogger(__name__)


def _digest(secret: SecretStr | None) -> str:
    """A stable, non-reversible stand-in for a secret in a lookup key."""
    if secret is None:
        return ""
    return hashlib.sha256(secret.get_secret_value().encode()).hexdigest()


def identity_key(config: CanfarConfig) -> tuple[str, str]:
    """Server and identity: runs sharing this see the same session list.

    `CanfarConfig.identity` stays the same when an OIDC login is refreshed or a proxy
    reloaded, so a worker keeps one tracker per user rather than one per token.
    """
    return config.url, config.identity


def resolve_connection(configuration: CanfarWorkerJobConfiguration) -> CanfarConfig:
    """The server and credentials of a run: job variables, then the worker's own login.

    Precedence for the URL: the `url` variable, the credentials block's URL, then
    `CANFAR_URL` / `~/.canfar/config.yaml` of the worker. Raises ConfigurationError
    (a sentence saying what to set) when no credentials can be found.
    """
    if configuration.credentials is not None:
        return configuration.credentials.resolve(configuration.url)
    return resolve_config(configuration.url)


@dataclass
class Backend:
    """The tracker (and its client) of one server and identity."""

    client: AsyncCanfarClient
    tracker: SessionTracker
    loop: asyncio.AbstractEventLoop


class Backends:
    """The worker's clients and trackers, created on first use and closed together."""

    def __init__(self, settings: CanfarWorkerSettings | None = None) -> None:
        self.settings = settings or CanfarWorkerSettings()
        self._backends: dict[tuple[str, str], Backend] = {}
        self._creators: dict[tuple[str, ...], AsyncCanfarClient] = {}
        self._lock = asyncio.Lock()

    async def backend(self, config: CanfarConfig) -> Backend:
        """The tracker and client for this server and identity."""
        key = identity_key(config)
        async with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                client = AsyncCanfarClient(config)
                # A Pending session's events are read early (its reason, a failing image
                # pull) and at a bounded rate; sooner on this machine.
                events_delay, events_interval = events_timing(
                    same_machine=runs_on_this_machine(config)
                )
                tracker = SessionTracker(
                    client,
                    min_interval=min(
                        self.settings.poll_min_seconds, self.settings.poll_max_seconds
                    ),
                    max_interval=self.settings.poll_max_seconds,
                    outage_seconds=self.settings.outage_seconds,
                    events_delay=events_delay,
                    events_interval=events_interval,
                    image_pull_window=self.settings.image_pull_timeout_seconds,
                )
                backend = Backend(client, tracker, asyncio.get_running_loop())
                self._backends[key] = backend
            return backend

    async def creator(
        self, config: CanfarConfig, registry: tuple[str, SecretStr] | None
    ) -> AsyncCanfarClient:
        """The client that creates sessions (it carries the registry credentials)."""
        backend = await self.backend(config)
        if registry is None:
            return backend.client
        key = (*identity_key(config), registry[0], _digest(registry[1]))
        async with self._lock:
            client = self._creators.get(key)
            if client is None:
                client = AsyncCanfarClient(config, registry_auth=registry)
                self._creators[key] = client
            return client

    def find(self, config: CanfarConfig) -> Backend | None:
        """The backend already serving this identity, if any (never creates one)."""
        return self._backends.get(identity_key(config))

    async def aclose(self) -> None:
        """Stop every tracker and close every client (sessions keep running)."""
        backends, creators = list(self._backends.values()), list(self._creators.values())
        self._backends.clear()
        self._creators.clear()
        for backend in backends:
            with contextlib.suppress(Exception):
                await backend.tracker.aclose()
            with contextlib.suppress(Exception):
                await backend.client.aclose()
        for client in creators:
            with contextlib.suppress(Exception):
                await client.aclose()
