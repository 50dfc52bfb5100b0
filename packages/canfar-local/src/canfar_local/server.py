"""``LocalPlatform``: the embedded server, running in a daemon thread of the caller.

``LocalPlatform.start(config)`` locks the root, loads the persisted state, binds the port and
returns once the server is listening; the event loop lives in its own thread so that sync
code, async code on another loop, and tests can all use it.  Stopping leaves the sessions
running under their supervisors (a later start re-adopts them) unless asked to kill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .app import PlatformApp, session_state
from .auth import TokenRegistry
from .config import PlatformConfig, os_user
from .errors import PlatformError
from .faults import FaultInjector, RequestCounters
from .lock import RootLock
from .oidc import OIDC_PREFIX, OidcLogin, OidcProvider
from .proxies import SESSION_CA_BUNDLE, write_session_bundle
from .requestlog import RequestLog
from .sessions import SessionManager, read_creation_journal
from .store import SessionStore

T = TypeVar("T")
USAGE_SAMPLE_SECONDS = 1.0
REQUEST_LOG_NAME = "requests.log"
log = logging.getLogger(__name__)


def ssl_context(config: PlatformConfig) -> ssl.SSLContext | None:
    """Server TLS; with a client CA, certificates are requested (optional) and verified."""
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    if config.client_ca is not None:
        context.load_verify_locations(str(config.client_ca))
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


class LocalPlatform:
    """A running embedded CANFAR platform."""

    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.root = config.resolved_root()
        self.counters_registry = RequestCounters()
        self.faults = FaultInjector(config.prefix)
        self._lock: RootLock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._metrics: asyncio.Task[None] | None = None
        self._manager: SessionManager | None = None
        self._store: SessionStore | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopped = False
        self.port = 0
        self.user = ""
        self.token = ""
        self.tokens: TokenRegistry | None = None
        self.oidc: OidcProvider | None = None
        self.request_log: RequestLog | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, config: PlatformConfig | None = None) -> LocalPlatform:
        """Start a platform and return once it accepts connections."""
        platform = cls(config or PlatformConfig())
        platform._start()
        return platform

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = RootLock(self.root).acquire()
        try:
            self.tokens = TokenRegistry(self.root / "tokens.json")
            users = dict(self.config.users or {})
            if users:
                self.tokens.merge(users)
            if self.config.default_user:
                self.user = self.config.default_user
            elif users:
                self.user = next(iter(users.values()))
            else:
                self.user = os_user()
            self.token = self.tokens.token_for(self.user)
            self.oidc = OidcProvider(self.root / "oidc.json", self.config.access_token_seconds)
            self._store = SessionStore(self.root / "state.sqlite3")
            self.request_log = RequestLog(self.root / REQUEST_LOG_NAME)
            self._thread = threading.Thread(
                target=self._serve, name=f"canfar-platform:{self.root}", daemon=True
            )
            self._thread.start()
            self._ready.wait()
            if self._error is not None:
                raise PlatformError(f"the platform could not start: {self._error}") from None
        except BaseException:
            if self._store is not None:
                self._store.close()
            self._lock.release()
            raise

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _bind(self) -> None:
        config = self.config
        assert self._store is not None and self.tokens is not None and self.oidc is not None
        host = "127.0.0.1" if config.host in ("", "0.0.0.0") else config.host
        manager = SessionManager(config, self.root, self._store)
        if config.session_ca_file is not None:
            manager.session_bundle = write_session_bundle(self.root, config.session_ca_file)
        app = PlatformApp(
            config,
            manager,
            self.tokens,
            self.counters_registry,
            self.faults,
            lambda: self.user,
            self.request_log,
            self.oidc,
        )
        self._runner = web.AppRunner(app.build(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            config.host,
            config.port,
            ssl_context=ssl_context(config),
            reuse_address=True,
        )
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        manager.skaha_hostname = config.skaha_hostname or f"{host}:{self.port}"
        app.sessions_host = config.sessions_hostname or manager.skaha_hostname
        self._url_host = host if ":" not in host else f"[{host}]"
        self._manager = manager
        manager.reconcile()
        manager.schedule()
        loop = asyncio.get_running_loop()
        self._reconciler = loop.create_task(self._reconcile_forever())
        self._metrics = loop.create_task(self._sample_usage_forever())

    async def _reconcile_forever(self) -> None:
        assert self._manager is not None
        while True:
            await asyncio.sleep(self.config.reconcile_seconds)
            try:
                self._manager.reconcile()
            except Exception:  # a bad pass must not stop the controllers
                log.exception("reconcile pass failed")

    async def _sample_usage_forever(self) -> None:
        """The metrics-server stand-in: read the supervisors' usage samples periodically."""
        assert self._manager is not None
        manager = self._manager
        while True:
            await asyncio.sleep(USAGE_SAMPLE_SECONDS)
            try:
                samples = await asyncio.to_thread(manager.read_usage, manager.usage_files())
                manager.apply_usage(samples)
            except RuntimeError:
                # The interpreter is exiting (an in-process platform in a daemon thread):
                # its thread pools are closed, and the sessions outlive us by design.
                return
            except Exception:
                log.exception("usage sampling failed")

    def stop(self, kill_sessions: bool = False) -> None:
        """Stop serving; kill every session's processes too when ``kill_sessions``."""
        if self._stopped:
            return
        self._stopped = True
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(kill_sessions), loop)
            future.result(timeout=60)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._store is not None:
            self._store.close()
        if self.request_log is not None:
            self.request_log.close()
        if self._lock is not None:
            self._lock.release()

    async def _shutdown(self, kill_sessions: bool) -> None:
        for task in (self._reconciler, self._metrics):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._manager is not None:
            if kill_sessions:
                self._manager.kill_all()
            else:
                self._manager.release_children()

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(kill_sessions=True)

    # -- information -----------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        """`https` when TLS is configured, else `http`."""
        return "https" if self.config.tls_enabled else "http"

    @property
    def base_url(self) -> str:
        """``<scheme>://<host>:<port>`` of the server."""
        return f"{self.scheme}://{self._url_host}:{self.port}"

    @property
    def url(self) -> str:
        """The Skaha API base, ``.../skaha/v1``, as clients expect it."""
        prefix = "/" + self.config.prefix.strip("/") if self.config.prefix.strip("/") else ""
        return f"{self.base_url}{prefix}/v1"

    @property
    def issuer(self) -> str:
        """The OIDC issuer, ``<scheme>://<host>:<port>/oidc`` (its token endpoint: ``/token``)."""
        return f"{self.base_url}{OIDC_PREFIX}"

    @property
    def session_ca_bundle(self) -> Path | None:
        """``<root>/session-ca.pem``, the trust store of sessions, when configured."""
        if self.config.session_ca_file is None:
            return None
        return self.root / SESSION_CA_BUNDLE

    def oidc_login(self, user: str | None = None) -> OidcLogin:
        """What an OIDC device-flow login for ``user`` would leave a client holding.

        A registered client (id and secret), an access token that the Skaha routes accept
        until it expires (``access_token_seconds``) and a refresh token for the token
        endpoint. Secrets included: save them as the official client would, never log them.
        """
        assert self.oidc is not None
        return self.oidc.login(user or self.user, self.issuer)

    def home(self, user: str | None = None) -> Path:
        """The user's ``$HOME`` on this machine (``<root>/arc/home/<user>``)."""
        name = user or self.user
        return self.root / self.config.top_level_directory / self.config.home_directory / name

    def add_user(self, name: str) -> str:
        """Register ``name`` (if new) and return its bearer token."""
        assert self.tokens is not None
        return self.tokens.token_for(name)

    def counters(self) -> dict[str, int]:
        """Requests per ``"METHOD /route"`` and ``"total"`` since start or the last reset."""
        return self.counters_registry.snapshot()

    def reset_counters(self) -> None:
        """Start the request counters from zero."""
        self.counters_registry.reset()

    def inject_fault(
        self,
        method: str = "*",
        route: str = "*",
        status: int | None = None,
        count: int = 1,
        retry_after: int | None = None,
        delay: float | None = None,
        drop_after_handling: bool = False,
    ) -> None:
        """Make the next ``count`` requests matching ``method`` and ``route`` misbehave."""
        self.faults.arm(
            method=method,
            route=route,
            status=status,
            count=count,
            retry_after=retry_after,
            delay=delay,
            drop_after_handling=drop_after_handling,
        )

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        self.faults.clear()

    def created(self) -> list[dict[str, Any]]:
        """Every session ever created on this root (id, name, user, type, image, time).

        Deleted and expired sessions vanish from the API; this journal keeps them, so
        duplicates can be counted by name after a run, even across server restarts.
        """
        return read_creation_journal(self.root)

    def peak_alive(self) -> int:
        """The most sessions alive at once (queued, starting, running or terminating)
        since start or `reset_peak`: what a concurrency limit must bound, sampled where
        the sessions live rather than where a client believes they are."""
        assert self._manager is not None
        manager = self._manager
        return self._call(lambda: manager.peak_alive)

    def reset_peak(self) -> None:
        """Start the high-water mark of `peak_alive` from the sessions alive now."""
        assert self._manager is not None
        manager = self._manager

        def reset() -> None:
            manager.peak_alive = manager.alive()

        self._call(reset)

    def hold_phase(self, session_id: str, status: str, *, kill: bool = False) -> None:
        """Make a session show `status` (e.g. `Terminating`, `Unknown`) from now on.

        See `SessionManager.hold`: with `kill` its processes die first, as on a lost node.
        """
        assert self._manager is not None
        manager = self._manager
        self._call(lambda: manager.hold(session_id, status, kill=kill))

    def revoke_token(self, token: str) -> bool:
        """Revoke a bearer token: requests carrying it get 401 from now on."""
        assert self.tokens is not None
        return self.tokens.revoke(token)

    def session_state(self, session_id: str) -> dict[str, Any] | None:
        """Internal state of a session (phase, exit code, reason), for tests."""
        return self._call(lambda: self._state(session_id))

    def _state(self, session_id: str) -> dict[str, Any] | None:
        assert self._manager is not None
        record = self._manager.store.get(session_id)
        return session_state(record) if record is not None else None

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's loop thread and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running():
            raise PlatformError("the platform is not running")

        async def call() -> T:
            return function()

        coroutine: Awaitable[T] = call()
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=30)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"LocalPlatform(url={self.url if self.port else '-'}, root={self.root})"
