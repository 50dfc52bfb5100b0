"""The async Skaha client (and, in `sync.py`, its blocking facade).

Differences from the official client that matter to a workflow engine:
- parameters travel in a form-encoded POST body, never a URL that proxies may cut;
- errors are typed and keep the server's sentence;
- transient failures are retried with bounded, jittered backoff;
- a create is never blindly re-sent: after an ambiguous failure the client lists the
  sessions and adopts the one carrying the request's (unique) name.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import logging
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload
from urllib.parse import urlencode

import httpx
from pydantic import SecretStr

from canfar_core.allowed import check_registry
from canfar_core.config import CanfarConfig, check_url, parse_capabilities, resolve_config
from canfar_core.context import Context
from canfar_core.errors import (
    CanfarApiError,
    CanfarError,
    CanfarTransportError,
    ClientClosedError,
    ReplicaCreateError,
    SpecError,
    error_for_status,
)
from canfar_core.models import Event, Image, Session, SessionSpec, parse_events
from canfar_core.retry import (
    RETRYABLE_STATUS,
    RetryBudget,
    RetryPolicy,
    is_transient,
    is_unsent,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

USER_AGENT = "canfar-core/0.1"
MAX_REASON_CHARS = 2000
Params = Sequence[tuple[str, str]]
# The server reads POST parameters only from a form-encoded body (reference §1.4).
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


class ClientState(enum.Enum):
    """Where a client is in its life: it opens once and, once closed, stays closed."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class _Ambiguous(Exception):
    """A create whose outcome is unknown: the server may or may not have made it."""


class AsyncCanfarClient:
    """Async client for the Skaha v1 session API.

    Use as `async with AsyncCanfarClient() as client:`; configuration is resolved by
    `canfar_core.config.resolve_config` unless a `CanfarConfig` is given.

    `transport` is httpx's seam (`httpx.AsyncClient(transport=...)`): unit tests of
    retries and parsing pass an `httpx.MockTransport` and need no server. A closed
    client refuses further use with ClientClosedError instead of quietly opening a new
    connection pool that nobody would close.
    """

    def __init__(
        self,
        config: CanfarConfig | None = None,
        *,
        url: str | None = None,
        token: str | SecretStr | None = None,
        certificate: str | Path | None = None,
        verify: str | Path | bool = True,
        retry: RetryPolicy | None = None,
        max_connections: int = 32,
        registry_auth: tuple[str, str | SecretStr] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or resolve_config(url, token, certificate)
        check_url(self.config.url)  # an explicit CanfarConfig skipped resolve_config's check
        self.retry = retry or RetryPolicy()
        self._verify = verify
        self._max_connections = max_connections
        self._registry_auth = registry_auth
        self._transport = transport
        self.state = ClientState.UNOPENED
        self._http: httpx.AsyncClient | None = None
        self._base_url: str | None = None
        self._context: Context | None = None
        self._repositories: list[str] | None = None
        self._known_ids: set[str] = set()
        # Whether the server has ever answered: until then an unreachable server is a
        # configuration problem and fails fast (RetryPolicy.first_contact_attempts).
        self._answered = False
        self._open_lock = asyncio.Lock()
        self._facts_lock = asyncio.Lock()
        # At most as many requests in flight as the pool has connections: hundreds of
        # requests queued inside httpcore's pool cost O(queued x connections) work per
        # request (encode/httpx#3215); queueing here instead keeps a fan-out cheap.
        self._gate = asyncio.Semaphore(max_connections)

    async def __aenter__(self) -> AsyncCanfarClient:
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self.state = ClientState.CLOSED
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    @property
    def base_url(self) -> str | None:
        """The versioned API base URL once resolved (e.g. `https://host/skaha/v1`)."""
        return self._base_url

    # -- sessions ---------------------------------------------------------------------

    @overload
    async def create(self, spec: SessionSpec, *, validate: bool = True) -> str: ...

    @overload
    async def create(
        self, spec: SessionSpec, *, replicas: int, validate: bool = True
    ) -> list[str]: ...

    async def create(
        self, spec: SessionSpec, *, replicas: int | None = None, validate: bool = True
    ) -> str | list[str]:
        """Create a session and return its id; with `replicas=N`, N sessions.

        Replicas are named `<name>-<i>` and get `REPLICA_ID` (1-based) and
        `REPLICA_COUNT` in their environment, as the official client does. If any
        replica fails, ReplicaCreateError reports each failure and the ones created.
        """
        if validate:
            await self.validate(spec)
        if replicas is None:
            return await self._create_once(spec)
        if replicas < 1:
            raise SpecError("replicas", replicas, "at least 1")
        results = await asyncio.gather(
            *(self.create_replica(spec, i, replicas) for i in range(1, replicas + 1)),
            return_exceptions=True,
        )
        created: dict[int, str] = {}
        failures: dict[int, CanfarError] = {}
        for index, result in enumerate(results, start=1):
            if isinstance(result, CanfarError):
                failures[index] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                created[index] = result
        if failures:
            raise ReplicaCreateError(created, failures)
        return [created[i] for i in range(1, replicas + 1)]

    async def create_replica(self, spec: SessionSpec, replica_id: int, count: int) -> str:
        """Create (or re-create) replica `replica_id` of `count`, with its original id."""
        if not 1 <= replica_id <= count:
            raise SpecError("replica_id", replica_id, f"between 1 and {count}")
        replica = spec.with_name(f"{spec.name}-{replica_id}").with_env(
            {"REPLICA_ID": str(replica_id), "REPLICA_COUNT": str(count)}
        )
        return await self._create_once(replica)

    async def list_sessions(
        self, *, type: str | None = None, status: str | None = None
    ) -> list[Session]:
        """The caller's sessions, optionally filtered by type and status (server-side)."""
        params = [(k, v) for k, v in (("type", type), ("status", status)) if v]
        response = await self._request("GET", "session", params=params)
        return [Session.model_validate(item) for item in response.json()]

    async def get(self, session_id: str) -> Session:
        """One session; SessionNotFoundError when it does not exist (or expired)."""
        response = await self._request("GET", f"session/{session_id}")
        return Session.model_validate(response.json())

    async def logs(self, session_id: str) -> str:
        """The session's output (empty for unknown ids or before it starts)."""
        response = await self._request("GET", f"session/{session_id}", params=[("view", "logs")])
        return response.text

    async def events_table(self, session_id: str) -> str:
        """The raw kubectl events table (SessionNotFoundError while nothing is scheduled)."""
        response = await self._request("GET", f"session/{session_id}", params=[("view", "events")])
        return response.text

    async def events(self, session_id: str) -> list[Event]:
        """The session's events, parsed from the kubectl table."""
        return parse_events(await self.events_table(session_id))

    async def delete(self, session_id: str) -> None:
        """Delete a session. The server answers 200 even for unknown ids."""
        await self._request("DELETE", f"session/{session_id}")

    async def renew(self, session_id: str) -> None:
        """Extend a running session's deadline (InvalidRequestError when not active)."""
        await self._request(
            "POST", f"session/{session_id}", data=[("action", "renew")], idempotent=True
        )

    async def stats(self) -> dict[str, Any]:
        """Platform-wide resource figures (`view=stats`)."""
        response = await self._request("GET", "session", params=[("view", "stats")])
        return response.json()

    # -- platform facts -------------------------------------------------------------------

    async def context(self, *, refresh: bool = False) -> Context:
        """The server's resource options (cached for the client's lifetime)."""
        async with self._facts_lock:  # concurrent first creates fetch it once
            if self._context is None or refresh:
                response = await self._request("GET", "context")
                self._context = Context.model_validate(response.json())
            return self._context

    async def repositories(self, *, refresh: bool = False) -> list[str]:
        """The registry hosts images must come from (cached)."""
        async with self._facts_lock:
            if self._repositories is None or refresh:
                response = await self._request("GET", "repository")
                self._repositories = [str(r) for r in response.json()]
            return self._repositories

    async def images(self, type: str | None = None) -> list[Image]:
        """Images in the server's cache, optionally of one session type."""
        params = [("type", type)] if type else []
        response = await self._request("GET", "image", params=params)
        return [Image.model_validate(item) for item in response.json()]

    async def validate(self, spec: SessionSpec) -> None:
        """Check a spec against the server's registries and resource options.

        Raises SpecError naming the field, the value and what is allowed; this runs
        before anything is submitted, so a typo never becomes a queued session.
        """
        check_registry(spec.image, await self.repositories())
        context = await self.context()
        for resource in ("cores", "ram", "gpus"):
            value = getattr(spec, resource)
            if value is not None:
                context.check(resource, value)

    # -- transport --------------------------------------------------------------------------

    async def _create_once(self, spec: SessionSpec) -> str:
        """POST one session, adopting it by name after an ambiguous failure."""
        budget = self.retry.budget()
        must_check = False
        while True:
            try:
                if must_check:
                    adopted = await self._adopt(spec.name)
                    if adopted is not None:
                        return adopted
                    must_check = False
                return await self._post_session(spec)
            except _Ambiguous as exc:
                must_check = True
                await self._backoff(budget, exc.args[1], "create", exc.args[0])
            except CanfarApiError as exc:
                if exc.status not in RETRYABLE_STATUS or not must_check:
                    raise
                await self._backoff(budget, None, "create (checking for adoption)", exc)
            except CanfarTransportError as exc:
                # Listing for adoption failed even after retries: never create blindly.
                raise CanfarTransportError(
                    f"Could not tell whether session {spec.name!r} was created: {exc}"
                ) from None

    async def _post_session(self, spec: SessionSpec) -> str:
        http = await self._ensure_open()
        budget = self.retry.budget()
        while True:
            self.config.check_expiry()
            try:
                async with self._gate:
                    response = await http.post(
                        "session",
                        content=urlencode(spec.to_params()),
                        headers={**FORM_HEADERS, **self._registry_headers()},
                    )
            except httpx.TransportError as exc:
                if is_unsent(exc):
                    await self._backoff(budget, None, "POST session", exc)
                    continue
                raise _Ambiguous(exc, None) from None
            self._answered = True
            if response.status_code == 200:
                session_id = response.text.strip()
                self._known_ids.add(session_id)
                return session_id
            if response.status_code in RETRYABLE_STATUS:
                raise _Ambiguous(self._api_error(response), retry_after_seconds(response))
            raise self._api_error(response)

    async def _adopt(self, name: str) -> str | None:
        """The id of a session named `name` that this client has not seen, if any."""
        wanted = name.lower()
        for session in await self.list_sessions():
            if session.name == wanted and session.id not in self._known_ids:
                self._known_ids.add(session.id)
                log.info("Adopted session %s (%s) after an ambiguous create.", session.id, name)
                return session.id
        return None

    async def _backoff(
        self, budget: RetryBudget, retry_after: float | None, what: str, cause: object
    ) -> None:
        wait = budget.next_delay(retry_after, first_contact=not self._answered)
        if wait is None:
            if isinstance(cause, CanfarApiError):
                raise cause
            raise CanfarTransportError(
                f"{what} failed after {budget.attempt + 1} attempts: {_describe(cause)}"
            )
        log.warning("%s failed (%s); retrying in %.1f s.", what, _describe(cause), wait)
        await asyncio.sleep(wait)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: Params | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send a request, retrying transient failures when it is safe to."""
        http = await self._ensure_open()
        safe = method in ("GET", "DELETE") if idempotent is None else idempotent
        budget = self.retry.budget()
        while True:
            self.config.check_expiry()
            try:
                async with self._gate:
                    response = await http.request(
                        method,
                        path,
                        params=list(params or []),
                        content=urlencode(list(data)) if data else None,
                        headers=FORM_HEADERS if data else None,
                    )
            except httpx.TransportError as exc:
                if is_unsent(exc) or (safe and is_transient(exc)):
                    await self._backoff(budget, None, f"{method} {path}", exc)
                    continue
                raise CanfarTransportError(f"{method} {path} failed: {_describe(exc)}") from None
            self._answered = True
            if response.status_code < 400:
                return response
            error = self._api_error(response)
            if response.status_code in RETRYABLE_STATUS and safe:
                await self._backoff(
                    budget, retry_after_seconds(response), f"{method} {path}", error
                )
                continue
            raise error

    def _api_error(self, response: httpx.Response) -> CanfarApiError:
        reason = response.text.rstrip("\r\n")[:MAX_REASON_CHARS]
        return error_for_status(
            response.status_code,
            reason,
            method=response.request.method,
            path=response.request.url.path,
            retry_after=retry_after_seconds(response),
        )

    def _registry_headers(self) -> dict[str, str]:
        auth = self._registry_auth
        if auth is None and self.config.registry_username and self.config.registry_secret:
            auth = (self.config.registry_username, self.config.registry_secret)
        if auth is None:
            return {}
        user, secret = auth
        raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        return {"x-skaha-registry-auth": base64.b64encode(f"{user}:{raw}".encode()).decode()}

    async def _ensure_open(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self.state is ClientState.CLOSED:
            raise ClientClosedError(
                "This CANFAR client has been closed; create a new one to send requests."
            )
        async with self._open_lock:
            if self._http is None:
                self._http = await self._open()
                self.state = ClientState.OPENED
        return self._http

    async def _open(self) -> httpx.AsyncClient:
        config = self.config
        verify: ssl.SSLContext | bool | str = True
        if config.is_local:
            from canfar_core.local import shared_platform

            platform = await asyncio.to_thread(shared_platform)
            config = self.config = CanfarConfig(
                url=platform.url, token=SecretStr(platform.token), source="local platform"
            )
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if config.token is not None:
            headers["Authorization"] = f"Bearer {config.token.get_secret_value()}"
        if config.certificate is not None or not isinstance(self._verify, bool):
            context = ssl.create_default_context(
                cafile=None if isinstance(self._verify, bool) else str(self._verify)
            )
            if config.certificate is not None:
                context.load_cert_chain(str(config.certificate))
            verify = context
        elif self._verify is False:
            verify = False
        base = config.url
        if not config.has_version:
            base = await self._discover_versioned_url(base, headers, verify)
        self._base_url = base
        limits = httpx.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
        )
        return httpx.AsyncClient(
            base_url=base.rstrip("/") + "/",
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(config.timeout, connect=min(10.0, config.timeout)),
            limits=limits,
            transport=self._transport,
        )

    async def _discover_versioned_url(
        self, url: str, headers: dict[str, str], verify: ssl.SSLContext | bool | str
    ) -> str:
        """Complete a base URL without a version from the VOSI capabilities document."""
        root = url.rstrip("/")
        if not root.endswith("/skaha"):
            root += "/skaha"
        http = httpx.AsyncClient(
            headers=headers, verify=verify, timeout=30.0, transport=self._transport
        )
        try:
            response = await http.get(f"{root}/capabilities")
        except httpx.TransportError as exc:
            raise CanfarTransportError(f"Could not read {root}/capabilities: {exc}") from None
        finally:
            if self._transport is None:  # an injected transport belongs to the caller
                await http.aclose()
        if response.status_code != 200:
            raise self._api_error(response)
        return parse_capabilities(response.text)


def _describe(cause: object) -> str:
    if isinstance(cause, CanfarApiError):
        return str(cause)
    if isinstance(cause, BaseException):
        text = str(cause)
        return f"{cause.__class__.__name__}: {text}" if text else cause.__class__.__name__
    return str(cause)
